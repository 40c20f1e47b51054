"""Every rule a pass config can be checked against alone is checked when the config is built, so `plan()`
refuses a bad recipe (naming the pass and the key) before any pass runs: no training is lost to a typo."""

from __future__ import annotations

import time

import pytest

from slimkit.cli import main
from slimkit.config import ConfigError
from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind
from slimkit.passes.base import available_passes, get_pass
from slimkit.pipeline import parse_recipe, plan

# (pass, config, the key the error names, words the message holds)
BAD_CONFIGS = [
    ("cluster", {"k": 300}, "k", "k=300 needs more than the 8-bit indices allow (256)"),
    ("cluster", {"k": 1}, "k", "k=1"),
    ("cluster", {"alpha": 1.5}, "alpha", "less than or equal to 1"),
    ("cluster", {"temperature": 0}, "temperature", "greater than 0"),
    ("cluster", {"train": {"epochs": 0}}, "train.epochs", "epochs is 0"),
    ("prune", {"sparsity": 1.0}, "sparsity", "sparsity=1.0 is outside [0, 1)"),
    ("prune", {"sparsity": float("nan")}, "sparsity", "finite number"),
    ("prune", {"begin": 0.8, "end": 0.7}, "begin", "begin=0.8, end=0.7"),
    ("prune", {"schedule": "gradual"}, "schedule", "needs train"),
    ("prune", {"frequency": 0}, "frequency", "greater than or equal to 1"),
    ("prune-structured", {"ratio": 1.2}, "ratio", "ratio=1.2 is outside [0, 1)"),
    ("prune-structured", {"target_flop_reduction": 1.0}, "target_flop_reduction", "outside (0, 1)"),
    ("prune-structured", {"round_to": 0}, "round_to", "greater than or equal to 1"),
    ("factorize", {"rank": 8, "ratio": 0.5}, "rank", "ratio, rank are given"),
    ("factorize", {"energy": 1.5}, "energy", "energy=1.5 is not in (0, 1]"),
    ("factorize", {"ratio": 1.0}, "ratio", "ratio=1.0 is not in (0, 1)"),
    ("factorize", {"rank": 0}, "rank", "greater than or equal to 1"),
    ("weight-only", {"block_size": 24}, "block_size", "block_size=24 is not a power of two >= 16"),
    ("int8-static", {"samples": 8}, "samples", "greater than or equal to 16"),
    ("int8-static", {"percentile": 101}, "percentile", "less than or equal to 100"),
    ("int8-auto", {"min_cosine": None}, "min_cosine", "needs a target"),
    ("int8-auto", {"min_cosine": 1.5}, "min_cosine", "less than or equal to 1"),
    ("ov-weights", {"group_size": 100}, "group_size", "group_size=100"),
    ("ov-weights", {"bits": 8, "ratio": 0.5}, "ratio", "int4 only"),
    ("ov-int8-auto", {"min_cosine": None}, "min_cosine", "needs a target"),
    ("tflite-int8-auto", {"min_cosine": None}, "min_cosine", "needs a target"),
    ("tflite-dynamic", {"bits": 8, "block_size": 32}, "block_size", "int4 weights only"),
    ("distill", {"alpha": -0.1}, "alpha", "greater than or equal to 0"),
    ("fake-quant", {"bits": 9}, "bits", "less than or equal to 8"),
    ("sparse-storage", {"min_sparsity": 2}, "min_sparsity", "less than or equal to 1"),
    ("to-onnx", {"tolerance": 0}, "tolerance", "greater than 0"),
    ("transformer-fusion", {"min_cosine": 0}, "min_cosine", "greater than 0"),
]


@pytest.mark.parametrize("name, config, key, words", BAD_CONFIGS, ids=[f"{n}-{k}" for n, _, k, _ in BAD_CONFIGS])
def test_a_bad_value_is_refused_by_the_config_naming_pass_and_key(name, config, key, words):
    with pytest.raises(ConfigError) as info:
        get_pass(name)(config)
    assert info.value.key == key
    assert str(info.value).startswith(f"pass '{name}': ") and words in str(info.value)
    assert "\n" not in str(info.value)


def test_every_pass_builds_its_default_config_and_rebuilds_its_relaxed_one():
    for name, cls in available_passes().items():
        instance = cls()
        change = instance.relaxed()  # the back-off ladder's next rung is a valid config too
        if change is not None:
            cls({**instance.config.model_dump(), **change})
        assert name == cls.name


def test_plan_refuses_a_bad_recipe_before_any_work_in_well_under_a_second():
    recipe = parse_recipe({"name": "prune-then-share", "passes": [
        {"pass": "prune", "sparsity": 0.9, "train": {"epochs": 5}}, {"pass": "cluster", "k": 300}]})
    get_pass("cluster")  # the passes are imported once per process; time the check, not the imports
    start = time.perf_counter()
    with pytest.raises(SlimkitError, match=r"pass 'cluster': k=300") as info:
        plan(recipe, ModelKind.TORCH)
    assert time.perf_counter() - start < 1.0
    assert info.value.key == "k"


def test_plan_checks_what_each_pass_can_do_on_the_kind_it_will_get():
    fine_tune_onnx = parse_recipe({"passes": ["to-onnx", {"pass": "prune", "train": {"epochs": 1}}]})
    with pytest.raises(SlimkitError, match="prune: an ONNX model cannot be fine-tuned"):
        plan(fine_tune_onnx, ModelKind.TORCH)
    plan(parse_recipe({"passes": [{"pass": "prune", "train": {"epochs": 1}}, "to-onnx"]}), ModelKind.TORCH)
    with pytest.raises(SlimkitError, match="distill: the model is onnx"):
        plan(parse_recipe({"passes": ["distill"]}), ModelKind.ONNX)
    twice = parse_recipe({"name": "twice", "passes": ["int8-dynamic", "weight-only"]})
    with pytest.raises(SlimkitError, match="recipe twice: pass 'weight-only' needs a float model but "
                                           "'int8-dynamic' quantizes it first"):
        plan(twice, ModelKind.ONNX)


def test_cli_refuses_a_bad_recipe_before_training(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(
        "name: prune-then-share\npasses:\n  - pass: prune\n    sparsity: 0.9\n    train: {epochs: 5}\n"
        "  - pass: cluster\n    k: 300\n")
    out = tmp_path / "out"
    get_pass("prune")  # imports done, as the CLI's own would be before it reads the recipe
    start = time.perf_counter()
    code = main(["optimize", "slimkit.demo_models:DigitsMLP", "--recipe", str(tmp_path / "bad.yaml"),
                 "--data", "sklearn:digits", "-o", str(out)])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2 and seconds < 2.0, seconds
    assert "pass 'cluster': k=300" in err.strip().splitlines()[-1] and "running pass" not in err
    assert not out.exists() and not (tmp_path / "out.checkpoints").exists()  # nothing trained, nothing written


def test_optimize_plans_once_before_any_pass_runs(foreign_onnx, monkeypatch):
    import slimkit.api
    import slimkit.pipeline

    calls = []

    def counted(where, real):
        def plan_and_count(*args, **kwargs):
            calls.append(where)
            return real(*args, **kwargs)
        return plan_and_count

    monkeypatch.setattr(slimkit.api, "plan", counted("api", slimkit.api.plan))
    monkeypatch.setattr(slimkit.pipeline, "plan", counted("pipeline", slimkit.pipeline.plan))
    result = slimkit.api.optimize(str(foreign_onnx[0]), "onnx", measure=False)
    assert calls == ["api"] and [s["pass"] for s in result.steps] == ["to-onnx", "onnx-cleanup"]
