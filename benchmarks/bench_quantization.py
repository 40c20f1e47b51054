"""Quantization benchmark (issue 3), one run, ratios against ONNX Runtime fp32 on the plain exported model.

MiniLM at batch 1, sequence 128, 2 threads; fidelity on real sentences (evaluation split), calibration on
the disjoint calibration split. Runtimes are interleaved round by round; medians of per-round p50s are
quoted. Beside slimkit's artifacts, ONNX Runtime's own `quantize_dynamic` (default and per-channel) are
measured in the same run. Digits MLP/CNN: int8-static accuracy on the full test split and latency at
batch 32.

    .venv/bin/python benchmarks/bench_quantization.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from slimkit.data_sources import load_data, text_data  # noqa: E402
from slimkit.demo_models import minilm_path, sentences, trained_digits_model  # noqa: E402
from slimkit.evaluate.fidelity import accuracy, compare_outputs  # noqa: E402
from slimkit.evaluate.measure import compare_latency  # noqa: E402
from slimkit.formats import load  # noqa: E402
from slimkit.formats.onnx import OrtRunner  # noqa: E402
from slimkit.models.base import OnnxModel  # noqa: E402
from slimkit.passes.base import Context  # noqa: E402
from slimkit.passes.quantize import quiet_quantizer  # noqa: E402
from slimkit.pipeline import load_recipe, parse_recipe, run_pipeline  # noqa: E402
from slimkit.report.environment import environment  # noqa: E402
from slimkit.settings import MeasureSettings  # noqa: E402


def ort_quantize_dynamic(model: OnnxModel, per_channel: bool) -> OnnxModel:
    """ONNX Runtime's quantize_dynamic as a user would call it (defaults, optionally per-channel)."""
    from onnxruntime.quantization import quantize_dynamic

    folder = Path(tempfile.mkdtemp(prefix="ortq-"))
    with quiet_quantizer():
        quantize_dynamic(str(model.path), str(folder / "q.onnx"), per_channel=per_channel)
    return load(folder / "q.onnx")


def interleaved(models: dict[str, OnnxModel], feed: dict, rounds: int, seconds: float, threads: int) -> dict:
    return compare_latency(models, feed, threads=threads, rounds=rounds, min_seconds=seconds)


def minilm(args) -> dict:
    torch_model = load(minilm_path())
    work = Path(tempfile.mkdtemp(prefix="bq-"))
    calib_file, eval_file = work / "calib.txt", work / "eval.txt"
    calib_file.write_text("\n".join(sentences("calib", 512)))
    eval_file.write_text("\n".join(sentences("eval", args.eval_sentences)))
    ctx = Context(workdir=work / "w", data=str(calib_file), settings=MeasureSettings(threads=args.threads))
    base = run_pipeline(torch_model, load_recipe("onnx"), ctx).model
    artifacts: dict[str, OnnxModel] = {"ORT fp32 (plain export)": base}
    artifacts["ORT quantize_dynamic default"] = ort_quantize_dynamic(base, per_channel=False)
    artifacts["ORT quantize_dynamic per-channel"] = ort_quantize_dynamic(base, per_channel=True)
    seconds = {}
    for recipe in ("fp16", "int8-dynamic", "int8-auto", "int4-weight", "int8-weight"):
        t0 = time.perf_counter()
        artifacts[f"slimkit {recipe}"] = run_pipeline(base, load_recipe(recipe), ctx).model
        seconds[f"slimkit {recipe}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    static = parse_recipe({"name": "int8-static-512", "passes": [{"pass": "int8-static", "samples": 512}]})
    artifacts["slimkit int8-static (512 calib)"] = run_pipeline(base, static, ctx).model
    seconds["slimkit int8-static (512 calib)"] = time.perf_counter() - t0
    data = text_data(sentences("eval", args.eval_sentences), base, batch_size=1, seq_len=128)
    ref_runner = OrtRunner(base, args.threads)
    reference = [ref_runner.run(b.feed)[0] for b in data]
    rows = {}
    for name, model in artifacts.items():
        runner = OrtRunner(model, args.threads)
        fid = compare_outputs(reference, [runner.run(b.feed)[0] for b in data])
        rows[name] = {"cosine_mean": fid["cosine_mean"], "cosine_min": fid["cosine_min"],
                      "size_ratio": model.size_bytes() / base.size_bytes(), "seconds": seconds.get(name)}
    p50 = interleaved(artifacts, data.batches[0].feed, args.rounds, 1.0, args.threads)
    for name in rows:
        rows[name]["p50_ms"] = p50[name]
        rows[name]["latency_ratio"] = p50[name] / p50["ORT fp32 (plain export)"]
    return {"model": "all-MiniLM-L6-v2", "eval_sentences": data.num_samples, "rows": rows}


def digits(args) -> list[dict]:
    out = []
    for name, image, key in (("mlp", False, "x"), ("cnn", True, "image")):
        torch_model = load(trained_digits_model(name, cache_dir=Path(".cache")), task="classification")
        work = Path(tempfile.mkdtemp(prefix="bqd-"))
        from slimkit.bundled_data import digits_arrays

        x, y = digits_arrays("train", image=image)
        np.savez(work / "calib.npz", **{key: x[:512]})
        ctx = Context(workdir=work / "w", data=str(work / "calib.npz"), settings=MeasureSettings(threads=args.threads, batch_size=32))
        base = run_pipeline(torch_model, load_recipe("onnx"), ctx).model
        q = run_pipeline(base, load_recipe("int8-static"), ctx).model
        test = load_data("sklearn:digits", base, batch_size=32)
        accs = {}
        for label, model in (("fp32", base), ("int8-static", q)):
            runner = OrtRunner(model, args.threads)
            accs[label] = accuracy([runner.run(b.feed)[0] for b in test], [b.labels for b in test])
        p50 = interleaved({"fp32": base, "int8-static": q}, test.batches[0].feed, args.rounds, 0.3, args.threads)
        out.append({"model": f"digits-{name}", "batch": 32, "accuracy": accs, "p50_ms": p50,
                    "latency_ratio": p50["int8-static"] / p50["fp32"],
                    "size_ratio": q.size_bytes() / base.size_bytes()})
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-sentences", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/out/quantization.json")
    args = parser.parse_args()
    result = {"date": time.strftime("%Y-%m-%d"), "environment": environment(args.threads),
              "digits": digits(args), "minilm": minilm(args) if minilm_path() else None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    for d in result["digits"]:
        print(f"{d['model']}: int8-static acc {d['accuracy']['int8-static']:.4f} vs fp32 {d['accuracy']['fp32']:.4f}, "
              f"p50 ratio {d['latency_ratio']:.2f} at batch 32, size {d['size_ratio']:.2f}x")
    if result["minilm"]:
        print(f"{'artifact':36} {'p50 ms':>8} {'vs fp32':>8} {'cos mean':>9} {'cos min':>8} {'size':>6} {'time s':>7}")
        for name, r in result["minilm"]["rows"].items():
            secs = f"{r['seconds']:.1f}" if r["seconds"] else "-"
            print(f"{name:36} {r['p50_ms']:8.2f} {r['latency_ratio']:8.3f} {r['cosine_mean']:9.5f} "
                  f"{r['cosine_min']:8.5f} {r['size_ratio']:6.3f} {secs:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
