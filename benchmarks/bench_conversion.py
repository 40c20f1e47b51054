"""Conversion benchmark: PyTorch eager vs ONNX Runtime vs OpenVINO (vs LiteRT) in one run.

For the digits MLP and CNN and (if installed) all-MiniLM-L6-v2 at batch 1, sequence 128, 2 threads:
latency p50 as a ratio to PyTorch eager (runtimes interleaved round by round, so machine noise hits
all of them alike; the median over rounds is quoted), export fidelity against PyTorch, and
conversion wall time.

    .venv/bin/python benchmarks/bench_conversion.py [--rounds 7] [--out benchmarks/out/conversion.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from slimkit.data_sources import text_data  # noqa: E402
from slimkit.demo_models import minilm_path, sentences, trained_digits_model  # noqa: E402
from slimkit.evaluate.measure import Evaluator, compare_latency  # noqa: E402
from slimkit.formats import load  # noqa: E402
from slimkit.passes.base import Context  # noqa: E402
from slimkit.pipeline import load_recipe, run_pipeline  # noqa: E402
from slimkit.report.environment import environment  # noqa: E402
from slimkit.settings import MeasureSettings  # noqa: E402


def convert_all(torch_model, ctx, tflite: bool) -> tuple[dict, dict]:
    artifacts, seconds = {}, {}
    t0 = time.perf_counter()
    onnx = run_pipeline(torch_model, load_recipe("onnx"), ctx)
    seconds["onnxruntime"] = time.perf_counter() - t0
    artifacts["onnxruntime"] = onnx.model
    t0 = time.perf_counter()
    artifacts["openvino"] = run_pipeline(onnx.model, load_recipe("openvino"), ctx).model
    seconds["openvino"] = time.perf_counter() - t0 + seconds["onnxruntime"]
    if tflite:
        t0 = time.perf_counter()
        artifacts["litert"] = run_pipeline(torch_model, load_recipe("tflite"), ctx).model
        seconds["litert"] = time.perf_counter() - t0
    return artifacts, seconds


def bench_model(title, torch_model, data, ctx, *, tflite, rounds, seconds_per_round, threads) -> dict:
    artifacts, conv_seconds = convert_all(torch_model, ctx, tflite)
    evaluator = Evaluator(data, reference=torch_model, settings=MeasureSettings(threads=threads, batch_size=1))
    fidelity = {name: evaluator.measure(model, latency=False).fidelity for name, model in artifacts.items()}
    feed = evaluator.dataset.batches[0].feed
    p50 = compare_latency({"pytorch": torch_model, **artifacts}, feed, threads=threads, rounds=rounds,
                          min_seconds=seconds_per_round)
    return {
        "model": title,
        "p50_ms": p50,
        "ratio_vs_pytorch": {name: p50[name] / p50["pytorch"] for name in p50},
        "fidelity": fidelity,
        "conversion_seconds": conv_seconds,
        "fidelity_samples": evaluator.dataset.num_samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds-per-round", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/conversion.json")
    args = parser.parse_args()
    ctx = Context(settings=MeasureSettings(threads=args.threads))
    results = []
    for name in ("mlp", "cnn"):
        model = load(trained_digits_model(name, cache_dir=Path(".cache")), task="classification")
        results.append(bench_model(f"digits-{name}", model, "sklearn:digits", ctx, tflite=True,
                                   rounds=args.rounds, seconds_per_round=args.seconds_per_round,
                                   threads=args.threads))
    folder = minilm_path()
    if folder is not None:
        model = load(folder)
        data = text_data(sentences("eval", 128), model, batch_size=1, seq_len=128)
        results.append(bench_model("all-MiniLM-L6-v2", model, data, ctx, tflite=False, rounds=args.rounds,
                                   seconds_per_round=max(args.seconds_per_round, 1.0), threads=args.threads))
    out = {"environment": environment(args.threads), "date": time.strftime("%Y-%m-%d"), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"{'model':18} {'runtime':12} {'p50 ms':>9} {'vs torch':>9} {'cos min':>10} {'max abs':>9} {'conv s':>7}")
    for r in results:
        for rt, p in r["p50_ms"].items():
            fid = r["fidelity"].get(rt) or {}
            print(f"{r['model']:18} {rt:12} {p:9.3f} {r['ratio_vs_pytorch'][rt]:9.2f} "
                  f"{fid.get('cosine_min', float('nan')):10.6f} {fid.get('max_abs_err', float('nan')):9.2e} "
                  f"{r['conversion_seconds'].get(rt, 0.0):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
