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
