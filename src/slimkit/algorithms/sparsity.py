"""Magnitude pruning math: `W_pruned = W * 1(|W| > tau)`, thresholds and Zhu & Gupta's cubic schedule.

Plain numpy, no model types: the pruning passes call these per tensor, tests check them alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_sparsity(sparsity: float, what: str = "sparsity") -> None:
    """Sparsity is the fraction of weights set to zero: 1.0 would delete the layer."""
    from slimkit.errors import SlimkitError

    if not 0.0 <= float(sparsity) < 1.0 or not np.isfinite(sparsity):
        raise SlimkitError(f"{what} {sparsity} is outside [0, 1)", "give the fraction of weights to zero, e.g. 0.5")


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep-mask zeroing exactly round(sparsity * n) weights of smallest magnitude (ties broken by position)."""
    check_sparsity(sparsity)
    flat = np.abs(weights.reshape(-1))
    drop = int(round(sparsity * flat.size))
    keep = np.ones(flat.size, dtype=bool)
    if drop > 0:
        order = np.argsort(flat, kind="stable")
        keep[order[:drop]] = False
    return keep.reshape(weights.shape)


def global_threshold(tensors: Sequence[np.ndarray], sparsity: float) -> float:
    """One magnitude threshold tau over all tensors so that about `sparsity` of all weights have |w| <= tau.

    A global threshold prunes redundant layers harder than sensitive ones (Han et al. 2015).
    """
    check_sparsity(sparsity)
    if not tensors:
        return 0.0
    values = np.concatenate([np.abs(t.reshape(-1)) for t in tensors])
    drop = int(round(sparsity * values.size))
    if drop == 0:
        return -1.0
    return float(np.partition(values, drop - 1)[drop - 1])


def threshold_mask(weights: np.ndarray, tau: float) -> np.ndarray:
    """`1(|W| > tau)` as a boolean keep-mask."""
    return np.abs(weights) > tau


def layer_sparsities(tensors: Sequence[np.ndarray], sparsity: float, scope: str = "layer") -> list[float]:
    """Per-tensor sparsity: the same for every layer ("layer"), or what one global threshold gives ("global")."""
    if scope == "layer":
        check_sparsity(sparsity)
        return [float(sparsity)] * len(tensors)
    tau = global_threshold(tensors, sparsity)
    return [float(1.0 - threshold_mask(t, tau).mean()) if t.size else 0.0 for t in tensors]


def cubic_sparsity(step: int, *, final: float, initial: float = 0.0, begin_step: int = 0, end_step: int) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3, clamped to [t0, t1].

    Prunes fast while there is much redundancy and slowly near the target, so training can recover.
    """
    check_sparsity(final, "final sparsity")
    if end_step <= begin_step:
        return float(final) if step >= begin_step else float(initial)
    progress = min(max((step - begin_step) / (end_step - begin_step), 0.0), 1.0)
    return float(final + (initial - final) * (1.0 - progress) ** 3)


def sparsity_of(weights: np.ndarray) -> float:
    """Fraction of exact zeros."""
    return float((weights == 0).mean()) if weights.size else 0.0


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """Bit-pack a boolean mask (first element in the high bit): 1 bit per weight on disk."""
    return np.packbits(mask.reshape(-1).astype(np.uint8))


def unpack_mask(packed: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(packed)[:count].astype(bool)
