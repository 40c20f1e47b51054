"""A realistic `slimkit search` report dict (schema slimkit.search-report/1) for the HTML report's tests.

Thirteen trials on the digits CNN: completed ones on and off the Pareto front (one below the floor, one with
NaN outputs), pruned, failed (an error with markup in it) and one still running; a recommendation with
validation and held-out figures, a final interleaved measurement, a sensitivity table, weight histograms
(int8 and 16-cluster, computed from seeded random weights) and the environment.
"""

from __future__ import annotations

import math

import numpy as np

THRESHOLD = 0.9700
BASELINE = {"latency_ms": 0.210, "size_bytes": 90_000, "accuracy": 0.975}


def _measure(latency_ms: float, size_bytes: int, accuracy: float, cosine: float) -> dict:
    return {"latency_ms": latency_ms,
            "latency_iqr_ms": [round(latency_ms * 0.94, 4), round(latency_ms * 1.07, 4)],
            "size_bytes": size_bytes, "speedup": round(BASELINE["latency_ms"] / latency_ms, 3),
            "size_ratio": round(size_bytes / BASELINE["size_bytes"], 3), "metric": accuracy, "cosine": cosine,
            "accuracy": accuracy, "meets_floor": bool(accuracy >= THRESHOLD)}


def _trial(number: int, state: str, label: str, chain: str, runtime: str, *, measure: dict | None = None,
           flags: tuple[str, ...] = (), pareto: bool = False, duration_s: float | None = 3.0,
           error: str | None = None, pruned_reason: str | None = None, passes: list | None = None,
           params: dict | None = None) -> dict:
    return {"number": number, "state": state, "label": label, "chain": chain, "runtime": runtime,
            "passes": passes or [{"pass": "to-onnx"}, {"pass": chain}], "params": params or {},
            "artifact": f"trials/{number:04d}/model.onnx" if state == "complete" else None,
            "duration_s": duration_s, "error": error, "pruned_reason": pruned_reason,
            "validation": measure, "flags": list(flags), "pareto": pareto, "final": None}


def _histograms() -> list[dict]:
    """Before/after counts of two layers on shared bin edges: int8 rounding (the same shape, slightly
    spikier) and 16-cluster k-means-like sharing (16 spikes)."""
    rng = np.random.default_rng(0)
    out = []
    weights = rng.normal(0.0, 0.08, 4800)
    scale = np.abs(weights).max() / 127
    int8 = np.round(weights / scale) * scale
    edges = np.linspace(weights.min(), weights.max(), 41)
    out.append({"layer": "fc1.weight", "technique": "int8",
                "edges": [round(float(e), 6) for e in edges],
                "before": np.histogram(weights, edges)[0].tolist(),
                "after": np.histogram(np.clip(int8, edges[0], edges[-1]), edges)[0].tolist()})
    weights = rng.laplace(0.0, 0.05, 2304)
    centers = np.quantile(weights, (np.arange(16) + 0.5) / 16)
    clustered = centers[np.abs(weights[:, None] - centers[None, :]).argmin(axis=1)]
    edges = np.linspace(weights.min(), weights.max(), 41)
    out.append({"layer": "conv2.weight", "technique": "cluster-16",
                "edges": [round(float(e), 6) for e in edges],
                "before": np.histogram(weights, edges)[0].tolist(),
                "after": np.histogram(clustered, edges)[0].tolist()})
    return out


def sample_report() -> dict:
    """A fresh copy each call, so a test may edit it."""
    trials = [
        _trial(0, "complete", "ONNX Runtime int8-dynamic", "int8-dynamic", "onnxruntime",
               measure=_measure(0.120, 30_100, 0.9722, 0.9991), duration_s=3.2,
               passes=[{"pass": "to-onnx"}, {"pass": "int8-dynamic", "per_channel": True}],
               params={"int8-dynamic.per_channel": True}),
        _trial(1, "complete", "OpenVINO fp32", "to-openvino", "openvino",
               measure=_measure(0.090, 91_200, 0.9750, 1.0), pareto=True, duration_s=4.1),
        _trial(2, "complete", "OpenVINO int8 (NNCF)", "int8-static", "openvino",
               measure=_measure(0.055, 24_300, 0.9733, 0.9962), pareto=True, duration_s=9.8),
        _trial(3, "pruned", "cluster-16 + int8-dynamic", "cluster-16 > int8-dynamic", "onnxruntime",
               pruned_reason="accuracy 91.2% after the first fine-tuning step, below the floor (97.00%)",
               duration_s=5.5),
        _trial(4, "failed", "TFLite int8", "int8-static", "litert",
               error="RuntimeError: <converter> failed: unsupported op 'aten::unflatten' & 2 more",
               duration_s=1.4),
        _trial(5, "complete", "ONNX cluster-16", "cluster-16", "onnxruntime",
               measure=_measure(0.230, 22_400, 0.9711, 0.9978), flags=("smaller-not-faster", "slower"),
               duration_s=12.0),
        _trial(6, "complete", "TFLite fp16", "fp16", "litert",
               measure=_measure(0.150, 46_000, 0.9750, 0.99999), duration_s=6.3),
        _trial(7, "complete", "OpenVINO int4 weights", "int4-weights", "openvino",
               measure=_measure(0.045, 14_200, 0.9550, 0.9871), flags=("faster-below-floor",), pareto=True,
               duration_s=7.7),
        _trial(8, "complete", "ONNX prune-50% + int8-dynamic", "prune-0.5 > int8-dynamic", "onnxruntime",
               measure=_measure(0.110, 18_300, 0.9705, 0.9958), duration_s=21.4),
        _trial(9, "failed", "ONNX low-rank 0.25", "lowrank-0.25", "onnxruntime",
               error="ValueError: rank 0 for layer fc2 (keep at least 1)", duration_s=0.8),
        _trial(10, "pruned", "OpenVINO int8 per-tensor", "int8-static", "openvino",
               pruned_reason="same configuration as trial 2", duration_s=0.0),
        _trial(11, "complete", "ONNX fp16", "fp16", "onnxruntime",
               measure={**_measure(0.200, 45_500, 0.0, 0.0), "metric": math.nan, "accuracy": math.nan,
                        "cosine": math.nan, "meets_floor": False},
               flags=("nan-output",), duration_s=2.9),
        _trial(12, "running", "OpenVINO int8 + cluster-32", "cluster-32 > int8-static", "openvino",
               duration_s=None),
    ]
    recommended = trials[2]
    final_rec = _measure(0.057, 24_300, 0.9722, 0.9960)
    recommended["final"] = final_rec
    return {
        "schema": "slimkit.search-report/1",
        "command": "search",
        "model": {"source": "digits_cnn.pt", "kind": "torch", "size_bytes": 123_456},
        "objective": "latency",
        "floor": {"metric": "accuracy", "rule": "max_drop", "value": 0.005, "threshold": THRESHOLD,
                  "text": "accuracy drop <= 0.5 points (>= 97.00% on validation)"},
        "data": {"train": "digits.npz[0:1000]", "validation": "digits.npz[1000:1437]",
                 "evaluation": "digits.npz[1437:1797]", "held_back": True},
        "budget": {"trials": 30, "minutes": None}, "executor": "local", "seed": 0,
        "baseline": {"label": "ONNX fp32 [onnxruntime]", "latency_ms": BASELINE["latency_ms"],
                     "size_bytes": BASELINE["size_bytes"], "metric": BASELINE["accuracy"],
                     "accuracy": BASELINE["accuracy"], "cosine": 1.0},
        "trials": trials,
        "pareto": [1, 2, 7],
        "recommendation": {
            "trial": 2, "label": recommended["label"],
            "reason": "OpenVINO int8 (NNCF): 3.8x faster and 3.7x smaller than ONNX fp32 at accuracy 97.33%; "
                      "clustering was 4x smaller but not faster",
            "meets_floor": True, "shortfall": None, "closest_trial": None,
            "validation": recommended["validation"], "final": final_rec},
        "final_measurement": {
            "data": "digits test split (360 samples)", "interleaved": True,
            "entries": [
                {"label": "ONNX fp32 [onnxruntime] (baseline)", "trial": None, "latency_ms": 0.212,
                 "latency_iqr_ms": [0.205, 0.221], "size_bytes": 90_000, "metric": 0.9750, "cosine": 1.0,
                 "accuracy": 0.9750, "accuracy_ci": [0.9517, 0.9886], "speedup": 1.0, "size_ratio": 1.0,
                 "meets_floor": True},
                {"label": "OpenVINO int8 (NNCF)", "trial": 2, "latency_ms": 0.057,
                 "latency_iqr_ms": [0.054, 0.061],
                 "size_bytes": 24_300, "metric": 0.9722, "cosine": 0.9960, "accuracy": 0.9722,
                 "accuracy_ci": [0.9481, 0.9864], "speedup": 3.72, "size_ratio": 0.27, "meets_floor": True},
                {"label": "OpenVINO fp32", "trial": 1, "latency_ms": 0.092, "latency_iqr_ms": [0.088, 0.097],
                 "size_bytes": 91_200, "metric": 0.9750, "cosine": 1.0, "accuracy": 0.9750,
                 "accuracy_ci": [0.9517, 0.9886], "speedup": 2.30, "size_ratio": 1.01, "meets_floor": True},
            ]},
        "sensitivity": [
            {"layer": "conv1", "cosine": 0.9721, "kept_float": True},
            {"layer": "conv2", "cosine": 0.9934, "kept_float": False},
            {"layer": "fc1", "cosine": 0.9968, "kept_float": False},
            {"layer": "fc2", "cosine": 0.9989, "kept_float": False},
        ],
        "histograms": _histograms(),
        "environment": {"cpu_model": "AMD EPYC 9B14", "logical_cores": 2, "threads": 2,
                        "cpu_flags": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni",
                                      "avx512_bf16"],
                        "python": "3.11.9", "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
                        "packages": {"onnxruntime": "1.32.0", "openvino": "2025.3.0", "optuna": "5.0.0",
                                     "torch": "2.13.0", "plotly": "7.1.0"}},
        "warnings": ["evaluation data has 360 samples: accuracy ±1.7 points (95% CI)",
                     "2 trials failed; their errors are in the trials table"],
        "overhead": {"wall_s": 120.0, "trials_s": 117.0, "fraction": 0.025},
        "summary": "13 trials in 2.0 min: 8 completed, 2 pruned, 2 failed, 1 still running. OpenVINO int8 "
                   "(NNCF) is 3.7x faster and 3.7x smaller than the ONNX fp32 baseline at 97.22% accuracy on "
                   "held-out data.",
    }
