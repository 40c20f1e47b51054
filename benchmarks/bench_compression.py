"""Weight sharing and factorization benchmark (issue 4), one run.

- Clustering all-MiniLM-L6-v2 (every weight matrix, embeddings included) at K=256 and K=16: ONNX file
  size vs the fp32 file (and gzip), mean/min embedding cosine on real sentences, no fine-tuning;
  ONNX Runtime and OpenVINO latency vs fp32 (should be equal: the weights are rebuilt at load).
- SVD at a 0.5 parameter ratio: each distinct factorized layer shape of MiniLM (batch 1, sequence 128)
  and of the digits MLP (batch 32) timed alone in ONNX Runtime, original vs factorized, speedup compared
  with the FLOP reduction; whole-model speedup and fidelity too.

    .venv/bin/python benchmarks/bench_compression.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from slimkit.algorithms.lowrank import rank_for_ratio, truncated_svd  # noqa: E402
from slimkit.data_sources import load_data, text_data  # noqa: E402
from slimkit.demo_models import minilm_path, sentences, trained_digits_model  # noqa: E402
from slimkit.evaluate.fidelity import accuracy, compare_outputs  # noqa: E402
from slimkit.evaluate.measure import compare_latency  # noqa: E402
from slimkit.formats import (
    load,  # noqa: E402
    make_runner,  # noqa: E402
)
from slimkit.models.base import OnnxModel  # noqa: E402
from slimkit.passes.base import Context  # noqa: E402
from slimkit.pipeline import load_recipe, run_pipeline  # noqa: E402
from slimkit.report.environment import environment  # noqa: E402
from slimkit.settings import MeasureSettings  # noqa: E402


def interleaved(models: dict, feed: dict, rounds: int, seconds: float, threads: int) -> dict:
    return compare_latency(models, feed, threads=threads, rounds=rounds, min_seconds=seconds)


def fidelity(reference_model, model, data, threads) -> dict:
    ref = make_runner(reference_model, threads)
    cand = make_runner(model, threads)
    return compare_outputs([ref.run(b.feed)[0] for b in data], [cand.run(b.feed)[0] for b in data])


def layer_model(m: int, k: int, n: int, rank: int | None, seed: int = 0) -> OnnxModel:
    """One MatMul [m, k] x [k, n], or its rank-r factorization, as a standalone ONNX model."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    if rank is None:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        inits = [numpy_helper.from_array(w, "w")]
    else:
        a, b = truncated_svd(w, rank)
        nodes = [helper.make_node("MatMul", ["x", "a"], ["t"]), helper.make_node("MatMul", ["t", "b"], ["y"])]
        inits = [numpy_helper.from_array(a.astype(np.float32), "a"), numpy_helper.from_array(b.astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "layer", [x], [y], inits)
    return OnnxModel.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def layer_speedups(shapes: list[tuple[int, int, int]], rounds: int, threads: int) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        rank = rank_for_ratio(k, n, 0.5)
        models = {"dense": layer_model(m, k, n, None), "factorized": layer_model(m, k, n, rank)}
        feed = {"x": np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)}
        p50 = interleaved(models, feed, rounds, 0.2, threads)
        flop_ratio = rank * (k + n) / (k * n)
        speedup = p50["dense"] / p50["factorized"]
        rows.append({"shape": f"[{m}x{k}] x [{k}x{n}]", "rank": rank, "flop_ratio": flop_ratio,
                     "flop_reduction": 1 / flop_ratio, "speedup": speedup,
                     "speedup_over_reduction": speedup / (1 / flop_ratio), "p50_ms": p50})
    return rows


def minilm(args) -> dict:
    torch_model = load(minilm_path())
    work = Path(tempfile.mkdtemp(prefix="bc-"))
    ctx = Context(workdir=work, settings=MeasureSettings(threads=args.threads))
    base = run_pipeline(torch_model, load_recipe("onnx"), ctx).model
    data = text_data(sentences("eval", args.eval_sentences), base, batch_size=1, seq_len=128)
    base_bytes = base.path.read_bytes()
    out = {"clustering": {}, "factorization": {}}
    for k in (256, 16):
        t0 = time.perf_counter()
        result = run_pipeline(base, load_recipe(f"cluster-{k}"), ctx)
        seconds = time.perf_counter() - t0
        model = result.model
        stats = result.steps[-1]["stats"]
        blob = model.path.read_bytes()
        fid = fidelity(base, model, data, args.threads)
        ov = run_pipeline(model, load_recipe("openvino"), ctx).model
        ov_base = run_pipeline(base, load_recipe("openvino"), ctx).model
        p50 = interleaved({"ort fp32": base, "ort clustered": model, "ov fp32": ov_base, "ov clustered": ov},
                          data.batches[0].feed, args.rounds, 0.5, args.threads)
        out["clustering"][f"K={k}"] = {
            "file_ratio": len(blob) / len(base_bytes),
            "gzip_ratio": len(gzip.compress(blob, 6)) / len(gzip.compress(base_bytes, 6)),
            "cosine_mean": fid["cosine_mean"], "cosine_min": fid["cosine_min"], "layers": stats["layers"],
            "pass_seconds": seconds, "ort_latency_ratio": p50["ort clustered"] / p50["ort fp32"],
            "openvino_latency_ratio": p50["ov clustered"] / p50["ov fp32"]}
    factorized = run_pipeline(base, load_recipe("svd-ratio-0.5"), ctx)
    fstats = factorized.steps[-1]["stats"]
    fid = fidelity(base, factorized.model, data, args.threads)
    p50 = interleaved({"dense": base, "factorized": factorized.model}, data.batches[0].feed, args.rounds, 0.5,
                      args.threads)
    shapes = sorted({(128, layer["shape"][0], layer["shape"][1]) for layer in fstats["per_layer"]})
    out["factorization"] = {
        "layers": fstats["layers"], "flop_ratio_factorized_layers": fstats["flop_ratio"],
        "whole_model_speedup": p50["dense"] / p50["factorized"], "cosine_mean": fid["cosine_mean"],
        "cosine_min": fid["cosine_min"], "per_shape": layer_speedups(shapes, args.rounds, args.threads)}
    return out


def digits_mlp(args) -> dict:
    torch_model = load(trained_digits_model("mlp", cache_dir=Path(".cache")), task="classification")
    ctx = Context(workdir=Path(tempfile.mkdtemp(prefix="bcd-")), settings=MeasureSettings(threads=args.threads))
    base = run_pipeline(torch_model, load_recipe("onnx"), ctx).model
    result = run_pipeline(base, load_recipe("svd-ratio-0.5"), ctx)
    stats = result.steps[-1]["stats"]
    test = load_data("sklearn:digits", base, batch_size=32)
    accs = {}
    for label, model in (("dense", base), ("factorized", result.model)):
        r = make_runner(model, args.threads)
        accs[label] = accuracy([r.run(b.feed)[0] for b in test], [b.labels for b in test])
    p50 = interleaved({"dense": base, "factorized": result.model}, test.batches[0].feed, args.rounds, 0.3,
                      args.threads)
    shapes = sorted({(32, layer["shape"][0], layer["shape"][1]) for layer in stats["per_layer"]})
    return {"accuracy": accs, "whole_model_speedup": p50["dense"] / p50["factorized"],
            "flop_ratio_factorized_layers": stats["flop_ratio"],
            "per_shape": layer_speedups(shapes, args.rounds, args.threads)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-sentences", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/out/compression.json")
    args = parser.parse_args()
    result = {"date": time.strftime("%Y-%m-%d"), "environment": environment(args.threads),
              "digits_mlp": digits_mlp(args), "minilm": minilm(args) if minilm_path() else None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
