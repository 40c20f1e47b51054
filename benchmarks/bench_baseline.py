"""What the deployable baseline changes: each technique's p50 ratio against PyTorch eager (what reports said
before) and against the plain fp32 export on the artifact's own runtime (what they say now), on the digits
CNN, batch 1 and 32, from one `slimkit.optimize` run per recipe (interleaved timing inside each run).

Every number is measured on the digits test split; the recipes that calibrate or train read fit / val.

    .venv/bin/python benchmarks/bench_baseline.py [--recipes int8-dynamic,int8-static,prune-50,fp16]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from machine import print_machine

from slimkit import optimize
from slimkit.demo_models import trained_digits_model
from slimkit.formats import load
from slimkit.report.flags import speed_verdict
from slimkit.settings import MeasureSettings, TrainSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", default="int8-dynamic,int8-static,prune-50,fp16,openvino")
    parser.add_argument("--batch-sizes", default="1,32")
    args = parser.parse_args()
    print_machine()
    cache = Path(tempfile.gettempdir()) / "slimkit-bench-cache"
    print("| batch | recipe | baseline | p50 vs PyTorch eager | p50 vs baseline (IQR) | verdict vs baseline |")
    print("|---:|---|---|---:|---:|---|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        for recipe in args.recipes.split(","):
            model = load(trained_digits_model("cnn", cache_dir=cache), task="classification")
            result = optimize(model, recipe, data="sklearn:digits:val", settings=MeasureSettings(batch_size=batch), training=TrainSettings(data="sklearn:digits:fit"),
                              eval_data="sklearn:digits:test")
            report = result.report
            p50 = {m["label"]: m["latency_ms"]["p50"] for m in report["measurements"]}
            ratios = {r["model"]: r for r in report["ratios"]}
            mine = ratios[result.recipe.name]
            base = mine.get("baseline", "original (the recipe is the plain export)")
            spread = mine.get("p50_ratio_spread") or [float("nan")] * 2
            vs_eager = p50[result.recipe.name] / p50["original"]
            print(f"| {batch} | {recipe} | {base} | {vs_eager:.3f} | {mine['p50_ratio']:.2f} "
                  f"({spread[0]:.2f}-{spread[1]:.2f}) | {speed_verdict(mine)} |", flush=True)


if __name__ == "__main__":
    main()
