"""Uniform (affine) quantization on numpy arrays: schemes, integer ranges, range estimators, scales.

Framework-free on purpose (no torch here): the PyTorch fake-quant pass and ONNX-side passes use the
same numbers, and the math is tested on its own. The rule is `W_low = round(W / s) * s`, with a zero
point z for asymmetric ranges:

    q = clip(round(x / s) + z, qmin, qmax)        x_hat = (q - z) * s

Rounding is round-half-to-even (`np.rint`), as in ONNX QuantizeLinear and torch's fake_quantize ops.
Every range is widened to include 0, so 0 (padding, ReLU zeros) is exactly representable.

Granularity (`QuantScheme.granularity`) decides how many (scale, zero point) pairs there are:

- "tensor": one pair; parameters are 0-d arrays.
- "channel": one per index of `axis`; parameters have size 1 on every other axis, so they broadcast.
- "block": one per run of `block_size` consecutive elements along `block_axis`, for every index of the
  other axes. Parameters use ONNX's blocked layout (x's rank, ceil(n / block_size) along
  `block_axis`); `expand_qparams` repeats them to broadcast against x. The default `block_axis=-1`
  suits PyTorch Linear weights [out, in] (blocks along the reduction dim `in`); for ONNX MatMul
  weights [K, N] pass `block_axis=0` (blocks along K, as MatMulNBits and blocked DequantizeLinear
  do). A last partial block is padded with its own last value while estimating, which keeps min/max
  exact.

Range estimators ("observers") return (lo, hi) in the parameter layout: `minmax`; `percentile` (clips
the rarest values); `entropy` (TensorRT's KL-divergence calibration on a 2048-bin histogram, meant
for activations: it loops over groups); `mse` (grid search over clipping ratios).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

Granularity = Literal["tensor", "channel", "block"]
METHODS = ("minmax", "percentile", "entropy", "mse")
_GRANULARITIES = ("tensor", "channel", "block")
_TINY = float(np.finfo(np.float32).tiny)


def _check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 2 <= int(bits) <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8, got {bits!r}")
    return int(bits)


@dataclass(frozen=True)
class QuantScheme:
    """How to quantize one array: bit width, symmetry, signedness and granularity."""

    bits: int = 8
    symmetric: bool = True
    granularity: Granularity = "tensor"
    axis: int = 0
    block_size: int = 32
    block_axis: int = -1
    signed: bool = True

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if self.granularity not in _GRANULARITIES:
            raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "block" and (not isinstance(self.block_size, int) or self.block_size < 1):
            raise ValueError(f"block_size must be a positive integer, got {self.block_size!r}")

    @property
    def qrange(self) -> tuple[int, int]:
        return qrange(self.bits, self.symmetric, self.signed)


def qrange(bits: int, symmetric: bool = True, signed: bool = True) -> tuple[int, int]:
    """Integer range (qmin, qmax).

    Symmetric ranges are restricted to ±(2^(b-1) - 1) around the zero point, so +a and -a both
    exist; unsigned ranges are the signed ones shifted by 2^(b-1) (symmetric unsigned: z = 2^(b-1)).
    """
    bits = _check_bits(bits)
    half = 1 << (bits - 1)
    if symmetric:
        lo, hi = -(half - 1), half - 1
    else:
        lo, hi = -half, half - 1
    return (lo + half, hi + half) if not signed else (lo, hi)


# ---- grouping: every granularity becomes a [groups, elements] matrix ----


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim


def _groups(x: np.ndarray, scheme: QuantScheme) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """x as [groups, elements], and a function that lays one value per group out as a parameter array."""
    if scheme.granularity == "tensor":
        return x.reshape(1, -1), lambda v: np.asarray(v).reshape(())
    if scheme.granularity == "channel":
        axis = _axis(scheme.axis, x.ndim)
        shape = [1] * x.ndim
        shape[axis] = x.shape[axis]
        return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1), lambda v: np.asarray(v).reshape(shape)
    axis = _axis(scheme.block_axis, x.ndim)
    moved = np.moveaxis(x, axis, -1)
    size, block = moved.shape[-1], scheme.block_size
    nblocks = -(-size // block)
    pad = nblocks * block - size
    if pad:
        moved = np.pad(moved, [(0, 0)] * (x.ndim - 1) + [(0, pad)], mode="edge")
    lead = moved.shape[:-1]
    return moved.reshape(-1, block), lambda v: np.moveaxis(np.asarray(v).reshape(*lead, nblocks), -1, axis)


def _as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# ---- range estimators: (lo, hi) per group ----


def minmax(x, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """The full range: no value is clipped, outliers set the step size."""
    rows, shape = _groups(_as_float(x), scheme)
    return shape(rows.min(axis=1)), shape(rows.max(axis=1))


def percentile(x, scheme: QuantScheme, percentile: float = 99.99) -> tuple[np.ndarray, np.ndarray]:
    """Clip the rarest (100 - p)% of values: of |x| for symmetric schemes, of each tail otherwise."""
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    rows, shape = _groups(_as_float(x), scheme)
    if scheme.symmetric:
        amax = np.percentile(np.abs(rows), percentile, axis=1)
        return shape(-amax), shape(amax)
    lo, hi = np.percentile(rows, [100.0 - percentile, percentile], axis=1)
    return shape(lo), shape(hi)


def mse(x, scheme: QuantScheme, grid: int = 20, min_ratio: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Shrink the min/max range by the ratio in [min_ratio, 1] with the least squared quantization error.

    Two passes of `grid` ratios each: a geometric grid from 1 down to `min_ratio` (outliers can call
    for a small ratio), then a finer one around each group's best. Vectorized over groups: one pass
    over the data per ratio, every group keeps its own best.
    """
    if not 0.0 < min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in (0, 1], got {min_ratio}")
    rows, shape = _groups(_as_float(x), scheme)
    lo0, hi0 = rows.min(axis=1).astype(np.float64), rows.max(axis=1).astype(np.float64)
    grid = max(int(grid), 2)
    best_err = np.full(rows.shape[0], np.inf)
    best = np.ones(rows.shape[0])
    coarse = np.geomspace(1.0, min_ratio, grid)
    step = coarse[0] / coarse[1]

    def consider(ratio) -> None:
        nonlocal best
        ratio = np.broadcast_to(np.minimum(ratio, 1.0), best.shape)
        err = _squared_error(rows, lo0 * ratio, hi0 * ratio, scheme)
        better = err < best_err  # strict: ties keep the earlier, wider range
        best_err[better] = err[better]
        best = np.where(better, ratio, best)

    for ratio in coarse:
        consider(ratio)
    center = best.copy()
    for t in np.linspace(-1.0, 1.0, grid):
        consider(center * step**t)
    return shape(lo0 * best), shape(hi0 * best)


def _squared_error(rows: np.ndarray, lo, hi, scheme: QuantScheme) -> np.ndarray:
    """Per-row sum of squared fake-quantization error for per-row ranges."""
    scale, zero = compute_qparams(lo, hi, scheme)
    qmin, qmax = scheme.qrange
    err = rows - _fake(rows, np.reshape(scale, (-1, 1)), np.reshape(zero, (-1, 1)), qmin, qmax)
    return np.einsum("ij,ij->i", err, err)


def entropy(x, scheme: QuantScheme, bins: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """TensorRT's KL calibration: the |x| threshold whose quantized histogram diverges least from the data's."""
    rows, shape = _groups(_as_float(x), scheme)
    qmin, qmax = scheme.qrange
    lo, hi = rows.min(axis=1).astype(np.float64), rows.max(axis=1).astype(np.float64)
    amax = np.empty(rows.shape[0])
    for i, row in enumerate(rows):
        one_sided = lo[i] >= 0 or hi[i] <= 0
        levels = (qmax - qmin) if one_sided and not scheme.symmetric else (qmax - qmin) // 2
        amax[i] = _kl_threshold(np.abs(row), max(levels, 1), bins)
    return shape(np.maximum(lo, -amax)), shape(np.minimum(hi, amax))


def _kl_threshold(values: np.ndarray, levels: int, bins: int) -> float:
    """Threshold on |x| minimizing KL(P || Q), P the clipped histogram and Q its `levels`-level version."""
    top = float(values.max()) if values.size else 0.0
    if top <= 0.0 or bins <= levels:
        return top
    hist, edges = np.histogram(values, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    hist[0] = hist[1]  # as pytorch-quantization does: exact zeros (ReLU) would otherwise dominate P
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    best_i, best_kl = bins, np.inf
    for i in range(levels, bins + 1):
        ref = hist[:i].copy()
        ref[-1] += tail[i]  # clipped values land in the last kept bin
        nonzero = hist[:i] > 0
        group = np.arange(i) * levels // i
        merged = np.bincount(group, weights=hist[:i], minlength=levels)
        counts = np.bincount(group, weights=nonzero, minlength=levels)
        cand = np.where(nonzero, merged[group] / np.maximum(counts[group], 1.0), 0.0)
        kl = _kl(ref, cand)
        if kl <= best_kl:  # ties go to the wider threshold, as in pytorch-quantization
            best_i, best_kl = i, kl
    return float(edges[best_i])


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    qsum = q.sum()
    if qsum <= 0:
        return np.inf
    q = q / qsum
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


_ESTIMATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "minmax": minmax, "percentile": percentile, "entropy": entropy, "mse": mse,
}


def estimate_range(x, scheme: QuantScheme, method: str = "minmax", **opts) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of `x` per the scheme's granularity, with one of METHODS (options passed through)."""
    if method not in _ESTIMATORS:
        raise ValueError(f"unknown range method {method!r}; choose one of {', '.join(METHODS)}")
    x = _as_float(x)
    if x.size == 0:
        zero = np.zeros(())
        return zero, zero
    return _ESTIMATORS[method](x, scheme, **opts)


# ---- parameters and (fake) quantization ----


def compute_qparams(lo, hi, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32, zero_point int32) with lo/hi's shape; zero-width ranges get scale 1 (no 0/0)."""
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    qmin, qmax = scheme.qrange
    if scheme.symmetric:
        scale = np.maximum(-lo, hi) / ((qmax - qmin) / 2)
    else:
        scale = (hi - lo) / (qmax - qmin)
    scale = np.where(scale > _TINY, scale, 1.0).astype(np.float32)
    if scheme.symmetric:
        zero = np.full(scale.shape, (qmin + qmax) // 2, dtype=np.int32)
    else:
        zero = np.clip(qmin - np.rint(lo / scale), qmin, qmax).astype(np.int32)
    return scale, zero


def expand_qparams(scale, zero_point, scheme: QuantScheme, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Parameters that broadcast against an array of `shape` (repeats per-block ones; others as they are)."""
    if scheme.granularity != "block":
        return np.asarray(scale), np.asarray(zero_point)
    axis = _axis(scheme.block_axis, len(shape))
    keep = np.arange(shape[axis])

    def expand(p):
        return np.take(np.repeat(np.asarray(p), scheme.block_size, axis=axis), keep, axis=axis)

    return expand(scale), expand(zero_point)


def choose_qparams(x, scheme: QuantScheme, method: str = "minmax", **opts) -> tuple[np.ndarray, np.ndarray]:
    """estimate_range then compute_qparams: the parameters for `x` in the scheme's layout."""
    lo, hi = estimate_range(x, scheme, method, **opts)
    return compute_qparams(lo, hi, scheme)


def _int_dtype(qmin: int, qmax: int):
    for dtype in (np.int8, np.uint8, np.int16, np.uint16):
        info = np.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    return np.int32


def quantize(x, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Integers clip(rint(x / scale) + zero_point) (half to even), in the smallest dtype that holds the range."""
    q = np.rint(_as_float(x) / np.asarray(scale, dtype=np.float32))
    q += np.asarray(zero_point, dtype=np.float32)
    np.clip(q, qmin, qmax, out=q)
    return q.astype(_int_dtype(qmin, qmax))


def dequantize(q, scale, zero_point) -> np.ndarray:
    """(q - zero_point) * scale, in float32."""
    return (np.asarray(q, dtype=np.float32) - np.asarray(zero_point, dtype=np.float32)) * np.asarray(
        scale, dtype=np.float32)


def _fake(x: np.ndarray, scale, zero, qmin: int, qmax: int) -> np.ndarray:
    """dequantize(quantize(x)) without the integer array: fewer passes over large weights."""
    scale = np.asarray(scale, dtype=np.float32)
    zero = np.asarray(zero, dtype=np.float32)
    out = np.divide(x, scale, dtype=np.float32)
    np.rint(out, out=out)
    out += zero
    np.clip(out, qmin, qmax, out=out)
    out -= zero
    out *= scale
    return out


def fake_quantize(x, scheme: QuantScheme, method: str = "minmax", **opts) -> np.ndarray:
    """x rounded to the scheme's grid and back to float32: what a quantized model computes with."""
    x = _as_float(x)
    scale, zero = choose_qparams(x, scheme, method, **opts)
    scale, zero = expand_qparams(scale, zero, scheme, x.shape)
    qmin, qmax = scheme.qrange
    return _fake(x, scale, zero, qmin, qmax)


def quantization_error(x, x_hat) -> dict[str, float]:
    """mse, max_abs and SQNR in dB (signal power over error power; inf when the error is zero)."""
    x = np.asarray(x, dtype=np.float64)
    err = x - np.asarray(x_hat, dtype=np.float64)
    noise = float(np.sum(err * err))
    signal = float(np.sum(x * x))
    sqnr = np.inf if noise == 0.0 else (10.0 * np.log10(signal / noise) if signal > 0 else -np.inf)
    return {
        "mse": noise / max(x.size, 1),
        "max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
        "sqnr_db": float(sqnr),
    }


# ---- calibration over many batches ----


class RangeCollector:
    """Accumulates activation values over calibration batches for any estimator.

    Keeps the exact min/max and a random subsample (at most `per_update` values per batch and
    `max_values` in all, seeded), so memory stays bounded on long calibration runs; `minmax` uses the
    exact extremes, the other methods run on the subsample plus those extremes.
    """

    def __init__(self, max_values: int = 1 << 20, per_update: int = 1 << 16, seed: int = 0) -> None:
        self.max_values, self.per_update = max_values, per_update
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = np.inf, -np.inf
        self.chunks: list[np.ndarray] = []
        self.count = 0

    def update(self, x) -> None:
        flat = _as_float(x).reshape(-1)
        if flat.size == 0:
            return
        self.lo, self.hi = min(self.lo, float(flat.min())), max(self.hi, float(flat.max()))
        self.count += flat.size
        if flat.size > self.per_update:
            flat = flat[self.rng.choice(flat.size, self.per_update, replace=False)]
        self.chunks.append(flat.copy())

    def values(self) -> np.ndarray:
        data = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        if data.size > self.max_values:
            data = data[self.rng.choice(data.size, self.max_values, replace=False)]
        extremes = np.array([self.lo, self.hi], np.float32) if self.chunks else np.zeros(0, np.float32)
        return np.concatenate([data, extremes])

    def estimate(self, scheme: QuantScheme, method: str = "minmax", **opts) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) per-tensor over everything seen so far."""
        if scheme.granularity != "tensor":
            raise ValueError("RangeCollector estimates per-tensor ranges only")
        if method == "minmax" and self.chunks:
            return np.asarray(self.lo), np.asarray(self.hi)
        return estimate_range(self.values(), scheme, method, **opts)


__all__ = [
    "METHODS", "QuantScheme", "RangeCollector", "choose_qparams", "compute_qparams", "dequantize",
    "entropy", "estimate_range", "expand_qparams", "fake_quantize", "minmax", "mse", "percentile",
    "qrange", "quantization_error", "quantize",
]
