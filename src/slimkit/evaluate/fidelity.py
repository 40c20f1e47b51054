"""How close a candidate's outputs are to a reference's, and task metrics against labels.

Pure numpy on output arrays: no model types, so it can be tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rowwise_cosine(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample (first axis), flattening the rest. Two zero rows count as identical."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    cand = candidate.reshape(candidate.shape[0], -1).astype(np.float64)
    dot = (ref * cand).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(cand, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dot / norms, 0.0)
    return np.where(both_zero, 1.0, cos)


def compare_outputs(
    references: Sequence[np.ndarray], candidates: Sequence[np.ndarray], *, classification: bool = False
) -> dict:
    """Fidelity over many batches of one output: cosine mean/min, max abs error, top-1 agreement."""
    ref = np.concatenate([r.reshape(r.shape[0], -1) if r.ndim else r.reshape(1, 1) for r in references])
    cand = np.concatenate([c.reshape(c.shape[0], -1) if c.ndim else c.reshape(1, 1) for c in candidates])
    if ref.shape != cand.shape:
        return {"error": f"output shapes differ: reference {list(ref.shape)} vs candidate {list(cand.shape)}"}
    cos = rowwise_cosine(ref, cand)
    diff = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
    result = {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_abs_err": float(diff.max()) if diff.size else 0.0,
        "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
        "samples": int(ref.shape[0]),
    }
    if classification and ref.ndim == 2 and ref.shape[1] > 1:
        result["top1_agreement"] = float((ref.argmax(1) == cand.argmax(1)).mean())
    return result


def accuracy(outputs: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float | None:
    """Top-1 accuracy of class scores against integer labels; None when outputs are not class scores."""
    scores = np.concatenate([o.reshape(o.shape[0], -1) for o in outputs])
    y = np.concatenate([np.asarray(lab).reshape(-1) for lab in labels])
    if scores.shape[1] < 2 or scores.shape[0] != y.shape[0]:
        return None
    return float((scores.argmax(1) == y).mean())


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: honest at small counts and near 0 or 1, unlike p ± z·se."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denom = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def accuracy_with_interval(outputs: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict | None:
    """Top-1 accuracy, its 95% Wilson interval and the sample count; None when outputs are not class scores."""
    acc = accuracy(outputs, labels)
    if acc is None:
        return None
    total = int(sum(np.asarray(lab).size for lab in labels))
    low, high = wilson_interval(int(round(acc * total)), total)
    return {"accuracy": acc, "accuracy_ci95": [low, high], "accuracy_samples": total}
