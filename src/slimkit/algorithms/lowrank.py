"""Low-rank factorization: replace an m x n weight matrix by two thin factors, W ~ A @ B.

Truncated SVD `W = U S V^T` kept to rank r is the best rank-r approximation in Frobenius norm
(Eckart-Young), with relative error exactly sqrt(sum_{i>r} s_i^2 / sum_i s_i^2). The factors split the
singular values evenly, A = U_r sqrt(S_r) [m x r] and B = sqrt(S_r) V_r^T [r x n], so neither factor
carries all the scale (which matters once they are quantized). A layer then costs r (m + n) parameters
instead of m n: factorize only below `max_useful_rank`.

NMF is offered for non-negative matrices only (e.g. some embedding or activation-derived tables); it
raises on negative entries rather than splitting W = W+ - W-: two NMF factorizations cost twice the
parameters of one and fit worse than an SVD of the same size, so signed weights should use the SVD.
"""

from __future__ import annotations

import math

import numpy as np

RANDOMIZED_MIN_DIM = 1000  # auto mode: randomized SVD when min(m, n) is at least this ...
RANDOMIZED_MAX_FRACTION = 0.2  # ... and the rank is at most this fraction of min(m, n)


def _matrix(w: object, what: str = "w") -> np.ndarray:
    x = np.asarray(w)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D matrix, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} must not be empty, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} holds NaN or Inf values: factorization needs finite weights")
    return x


def _out_dtype(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _check_rank(rank: object, m: int, n: int) -> int:
    top = min(m, n)
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or not 1 <= rank <= top:
        raise ValueError(f"rank must be an integer from 1 to {top} for a {m}x{n} matrix (max rank {top}), "
                         f"got {rank!r}; factorizing saves parameters only up to rank "
                         f"{max_useful_rank(m, n)}")
    return int(rank)


def singular_values(w: np.ndarray) -> np.ndarray:
    """All singular values of w, descending (float64), the input to the rank-selection helpers."""
    return np.linalg.svd(_matrix(w).astype(np.float64), compute_uv=False)


def truncated_svd(w: np.ndarray, rank: int, *, randomized: bool | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-r factors (A [m x r], B [r x n]) with A @ B ~ w and the singular values split evenly.

    `randomized=None` picks Halko et al.'s randomized SVD (scikit-learn's, seeded) for large matrices at
    small ranks, where it is much faster and nearly as accurate; otherwise an exact LAPACK SVD is used.
    Computed in float64; factors come back float64 for float64 input, else float32.
    """
    x = _matrix(w)
    m, n = x.shape
    rank = _check_rank(rank, m, n)
    if randomized is None:
        randomized = min(m, n) >= RANDOMIZED_MIN_DIM and rank <= RANDOMIZED_MAX_FRACTION * min(m, n)
    x64 = x.astype(np.float64)
    if randomized:
        from sklearn.utils.extmath import randomized_svd

        u, s, vt = randomized_svd(x64, rank, n_oversamples=max(10, rank // 2), n_iter="auto",
                                  random_state=seed)
    else:
        u, s, vt = np.linalg.svd(x64, full_matrices=False)
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    root = np.sqrt(s)
    dtype = _out_dtype(x)
    return (u * root).astype(dtype), (root[:, None] * vt).astype(dtype)


def rank_for_energy(s: np.ndarray, energy: float) -> int:
    """Smallest r whose top-r singular values keep at least `energy` of sum(s^2) (0 for an all-zero s)."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    sq = np.sort(np.abs(np.asarray(s, dtype=np.float64)).ravel())[::-1] ** 2
    if sq.size == 0 or not np.all(np.isfinite(sq)):
        raise ValueError("singular values must be a non-empty array of finite numbers")
    cum = np.cumsum(sq)
    if cum[-1] == 0:
        return 0
    return int(min(np.searchsorted(cum / cum[-1], energy, side="left") + 1, sq.size))


def rank_for_ratio(m: int, n: int, ratio: float) -> int:
    """Largest r with r (m + n) <= ratio m n: the rank that keeps `ratio` of the dense parameter count.

    Capped at min(m, n); 0 when even rank 1 costs more than the budget (the layer is best left dense).
    """
    _check_dims(m, n)
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    budget = ratio * m * n
    r = math.floor(budget / (m + n))
    while (r + 1) * (m + n) <= budget:  # guard both ways against float rounding of the division
        r += 1
    while r > 0 and r * (m + n) > budget:
        r -= 1
    return min(r, min(m, n))


def max_useful_rank(m: int, n: int) -> int:
    """Largest r with r (m + n) < m n: above it the two factors hold at least as many parameters as W."""
    _check_dims(m, n)
    return (m * n - 1) // (m + n)


def _check_dims(m: int, n: int) -> None:
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in (m, n)):
        raise ValueError(f"matrix dimensions must be positive integers, got {m!r} x {n!r}")


def nmf(w: np.ndarray, rank: int, *, max_iter: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative factors (A [m x r], B [r x n]) with A @ B ~ w, by scikit-learn's NMF (init 'nndsvda').

    Raises ValueError on negative entries: NMF needs non-negative weights (use truncated_svd for signed ones).
    """
    from sklearn.decomposition import NMF

    x = _matrix(w)
    m, n = x.shape
    rank = _check_rank(rank, m, n)
    lowest = float(x.min())
    if lowest < 0:
        raise ValueError(f"NMF needs non-negative weights, but the matrix has negative entries "
                         f"(min {lowest:.4g}); use truncated_svd for signed weights")
    model = NMF(n_components=rank, init="nndsvda", max_iter=max_iter, random_state=seed)
    x64 = x.astype(np.float64)
    a = model.fit_transform(x64)
    dtype = _out_dtype(x)
    return a.astype(dtype), model.components_.astype(dtype)


def reconstruction_error(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Relative Frobenius error ||w - a @ b|| / ||w|| (0 when both are zero, inf for a zero w otherwise)."""
    x = _matrix(w).astype(np.float64)
    a64, b64 = _matrix(a, "a").astype(np.float64), _matrix(b, "b").astype(np.float64)
    if a64.shape[0] != x.shape[0] or b64.shape[1] != x.shape[1] or a64.shape[1] != b64.shape[0]:
        raise ValueError(f"factor shapes {a64.shape} @ {b64.shape} do not make w's shape {x.shape}")
    residual = float(np.linalg.norm(x - a64 @ b64))
    norm = float(np.linalg.norm(x))
    if norm == 0:
        return 0.0 if residual == 0 else math.inf
    return residual / norm


def rank_for_output_cosine(w: np.ndarray, x: np.ndarray, min_cosine: float, *, max_rank: int | None = None) -> int:
    """Smallest rank whose factorization keeps the layer's outputs on real inputs `x` at `min_cosine`.

    `w` is [in, out] (outputs are x @ w), `x` is [samples, in]. Data-aware: directions of W the inputs
    never excite cost nothing to drop. Bisection over ranks (the output error shrinks as rank grows);
    returns 0 when even `max_rank` misses the target (the layer is best left dense).
    """
    w = _matrix(w).astype(np.float64)
    x = np.asarray(x, dtype=np.float64).reshape(-1, w.shape[0])
    limit = max_rank if max_rank is not None else max_useful_rank(*w.shape)
    if limit <= 0:
        return 0
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    reference = x @ w
    xu = x @ u  # [samples, min(in, out)]: the rank-r output is (xu[:, :r] * s[:r]) @ vt[:r]

    def cosine(rank: int) -> float:
        approx = (xu[:, :rank] * s[:rank]) @ vt[:rank]
        num = (reference * approx).sum(1)
        den = np.linalg.norm(reference, axis=1) * np.linalg.norm(approx, axis=1)
        return float(np.mean(np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)))

    if cosine(limit) < min_cosine:
        return 0
    lo, hi = 0, limit  # cosine(hi) meets the target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cosine(mid) >= min_cosine:
            hi = mid
        else:
            lo = mid
    return hi
