"""The Ray executor against the local one: the same search (digits CNN, same seed, same budget) run in this
process and as Ray tasks on a local Ray instance with 2 workers; prints both picks and Ray's per-trial
overhead (a task's round trip minus the trial's own time).

    .venv/bin/python benchmarks/bench_search_ray.py [--trials 17] [--objective size]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from machine import print_machine  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import slimkit  # noqa: E402
from slimkit.demo_models import trained_digits_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=17)
    parser.add_argument("--objective", default="size")
    args = parser.parse_args()
    print_machine()
    root = Path(tempfile.mkdtemp(prefix="bench-search-ray-"))
    module = trained_digits_model("cnn", root / "cache")
    weights = root / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(weights))
    picks = {}
    for executor in ("local", "ray"):
        out = root / executor
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        result = slimkit.search("slimkit.demo_models:DigitsCNN", weights=str(weights), data="sklearn:digits:train",
                                eval_data="sklearn:digits:test", output=out, max_drop=0.005, seed=0,
                                budget_trials=args.trials, objective=args.objective, executor=executor,
                                workers=2, settings=slimkit.MeasureSettings(threads=1))
        wall = time.perf_counter() - started
        rec = result.report["recommendation"]
        picks[executor] = rec["label"]
        print(f"{executor}: {wall:.0f}s wall, {len(result.report['trials'])} trials, pick: trial {rec['trial']} "
              f"{rec['label']}")
        if result.report.get("ray"):
            print(f"ray per-trial overhead: {result.report['ray']}")
        print(f"overhead: {result.report['overhead']}")
    print(f"same pick: {picks['local'] == picks['ray']}")


if __name__ == "__main__":
    main()
