"""Weight sharing: 1-D k-means that replaces a tensor's values by the nearest of K shared values.

`W_shared = sum_i c_i * 1(W in C_i)`: K centroids `c` (a codebook) plus one small label per weight.

In one dimension, k-means clusters are contiguous runs of the sorted values, which makes two things
cheap here:

- Lloyd's algorithm runs on sorted data with prefix sums: each step finds the K-1 midpoints between
  centroids with `np.searchsorted` and reads cluster sums off the prefix sums, O(K log n) per step.
- The global optimum is a dynamic program over contiguous partitions (Wang & Song 2011,
  Ckmeans.1d.dp): `D[j][i] = min_m D[j-1][m-1] + SSE(m..i)`, SSE from prefix sums in O(1).

`init="optimal"` (the default) runs that DP on weighted points, then polishes with Lloyd on the full
data. The weighted points are the distinct values with their counts when a tensor has at most
`MAX_BINS` distinct values, otherwise contiguous bins of the sorted values whose widths follow the
optimal quantizer's point density (density ** (1/3)), so every cluster spans a similar number of bins.
The DP evaluates, for each end point, the last cluster's possible starts within a band of W weighted
points (W widened until the chosen partition stays inside it), vectorized over all end points of a
layer: K numpy steps in all. Exactness:

- exact (the global optimum of 1-D k-means, up to float rounding) when the tensor has at most
  `MAX_BINS` distinct values and the unbanded DP fits `EXACT_WORK`, e.g. any tensor of up to ~300
  distinct values beyond K at K=256, ~1,900 at K=16;
- near-exact otherwise: optimal over partitions whose boundaries fall on bin edges (and whose clusters
  respect the band), then Lloyd moves the boundaries freely. On MiniLM's weights at K=256 this beats
  scikit-learn's KMeans by a wide margin in inertia (benchmarks/bench_kmeans.py).

The other inits ("linear": evenly spaced from min to max, "density": quantiles, "kmeans++": exact D^2
sampling done with the prefix sums) are followed by Lloyd. Lloyd relocates empty clusters to the
values farthest from their centroids, as scikit-learn does.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Init = Literal["linear", "density", "kmeans++", "optimal"]
INITS = ("linear", "density", "kmeans++", "optimal")
MIN_K, MAX_K = 2, 256
MAX_BINS = 4096  # weighted points the DP runs on at most; tensors with more distinct values are binned
BINS_PER_CLUSTER = 8  # bins per cluster for binned tensors (within [MIN_BINS, MAX_BINS])
MIN_BINS = 1024
EXACT_WORK = 20_000_000
MAX_SPLIT_ROUNDS = 200  # the unbanded DP (K * rows * starts elements) runs when it is at most this


class _Sorted:
    """Sorted values (float64, centered on their mean) with prefix sums of x and x**2."""

    def __init__(self, flat: np.ndarray) -> None:
        xs = np.sort(flat).astype(np.float64)
        self.shift = float(xs.mean())
        xs -= self.shift  # centering keeps the prefix-sum differences accurate
        self.x = xs
        self.n = xs.size
        self.p1 = np.concatenate(([0.0], np.cumsum(xs)))
        self.p2 = np.concatenate(([0.0], np.cumsum(xs * xs)))

    def runs(self) -> np.ndarray:
        """Start index of every run of equal values, plus n: the edges of the distinct values."""
        return np.concatenate(([0], np.flatnonzero(self.x[1:] != self.x[:-1]) + 1, [self.n]))

    def stats(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, sum and sum of squares of each range edges[t]:edges[t+1]."""
        return np.diff(edges).astype(np.float64), np.diff(self.p1[edges]), np.diff(self.p2[edges])

    def cuts(self, c: np.ndarray) -> np.ndarray:
        """Cluster edges in the sorted data for centroids c: values below a midpoint go left."""
        return np.concatenate(([0], np.searchsorted(self.x, (c[:-1] + c[1:]) / 2, side="left"), [self.n]))


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not MIN_K <= k <= MAX_K:
        raise ValueError(f"k must be an integer from {MIN_K} to {MAX_K} (labels are stored as uint8), got {k!r}")
    return int(k)


def _check_values(values: object) -> np.ndarray:
    x = np.asarray(values)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"kmeans1d needs a real-valued array, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError("kmeans1d needs a non-empty array")
    bad = x.size - int(np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(f"the tensor holds {bad} NaN/Inf value(s) of {x.size}: weight sharing needs finite "
                         "values; fix or mask them first (e.g. np.nan_to_num)")
    return x


def _check_distinct(data: _Sorted, k: int) -> None:
    distinct = 1 + int(np.count_nonzero(data.x[1:] != data.x[:-1]))
    if k > distinct:
        raise ValueError(f"k={k} is larger than the {distinct} distinct value(s) in the tensor: use k <= {distinct} "
                         "(with that many clusters every value is already its own centroid)")


def _out_dtype(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _label_dtype(k: int) -> np.dtype:
    return np.dtype(np.uint8) if k <= 256 else np.dtype(np.uint16)


def kmeans1d(values: np.ndarray, k: int, *, init: Init = "optimal", max_iter: int = 300,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster all values of a tensor into k shared values.

    Returns (centroids sorted ascending, float64 for float64 input else float32; labels with the input's
    shape, uint8, each the index of the nearest centroid; inertia, the sum of squared errors against the
    returned centroids). `max_iter` caps Lloyd's iterations; `seed` drives "kmeans++" only.
    """
    x = _check_values(values)
    k = _check_k(k)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    data = _Sorted(x.ravel())
    _check_distinct(data, k)
    centroids = _fit(data, k, init, max_iter, seed)
    return _finish(x, data, centroids)


def kmeans1d_per_channel(w: np.ndarray, k: int, axis: int = 0, *, init: Init = "optimal", max_iter: int = 300,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """One codebook per index of `axis` (e.g. per output channel), for finer sharing at K floats per channel.

    Returns (codebooks of shape (channels, k), labels with w's shape, total inertia over all channels).
    """
    x = _check_values(w)
    k = _check_k(k)
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {x.ndim} dimension(s)")
    moved = np.moveaxis(x, axis, 0)
    books = np.empty((moved.shape[0], k), _out_dtype(x))
    labels = np.empty(moved.shape, _label_dtype(k))
    inertia = 0.0
    for ch in range(moved.shape[0]):
        try:
            books[ch], labels[ch], part = kmeans1d(moved[ch], k, init=init, max_iter=max_iter, seed=seed)
        except ValueError as err:
            raise ValueError(f"channel {ch} along axis {axis}: {err}") from None
        inertia += part
    return books, np.moveaxis(labels, 0, axis), inertia


def _fit(data: _Sorted, k: int, init: str, max_iter: int, seed: int) -> np.ndarray:
    """Centroids (centered coordinates) for the chosen init, polished by Lloyd."""
    if init == "optimal":
        c = _optimal_init(data, k)
    elif init == "linear":
        c = np.linspace(data.x[0], data.x[-1], k)
    elif init == "density":
        c = data.x[np.minimum(((np.arange(k) + 0.5) * data.n / k).astype(np.int64), data.n - 1)]
    else:
        c = _kmeanspp(data, k, np.random.default_rng(seed))
    return _lloyd(data, c, max_iter)


def _finish(x: np.ndarray, data: _Sorted, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Cast centroids, label every value by its nearest returned centroid, and measure the inertia."""
    centroids = np.sort((c + data.shift).astype(_out_dtype(x)))
    mids = (centroids[:-1].astype(np.float64) + centroids[1:]) / 2
    labels = np.searchsorted(mids, x.astype(np.float64, copy=False), side="right").astype(_label_dtype(c.size))
    cc = centroids.astype(np.float64) - data.shift
    return centroids, labels, _inertia(data, data.cuts(cc), cc)


def _inertia(data: _Sorted, edges: np.ndarray, c: np.ndarray) -> float:
    """Sum over clusters of sum (x - c)^2 = (Q - S^2/n) + n (S/n - c)^2, from the prefix sums."""
    n, s, q = data.stats(edges)
    safe = np.maximum(n, 1.0)
    within = np.maximum(q - s * s / safe, 0.0)
    return float(np.sum(np.where(n > 0, within + n * (s / safe - c) ** 2, 0.0)))


# ---- Lloyd on sorted data -------------------------------------------------------------------------

def _lloyd(data: _Sorted, c: np.ndarray, max_iter: int) -> np.ndarray:
    """Lloyd's algorithm on sorted data: O(K log n) per step; stops when the clusters stop changing."""
    c = np.sort(np.asarray(c, dtype=np.float64))
    edges = None
    for _ in range(max(int(max_iter), 1)):
        new = data.cuts(c)
        if edges is not None and np.array_equal(new, edges):
            break
        edges = new
        n, s, _ = data.stats(edges)
        if np.all(n > 0):
            c = s / n
        else:
            c = _relocate_empty(data, edges, np.where(n > 0, s / np.maximum(n, 1.0), c), n == 0)
    return c


def _relocate_empty(data: _Sorted, edges: np.ndarray, c: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Move empty clusters' centroids onto the values farthest from their centroids (scikit-learn's rule).

    In 1-D the farthest value of each cluster is one of its two ends, so only 2K candidates are scanned.
    """
    full = np.flatnonzero(~empty)
    first, last = data.x[edges[full]], data.x[edges[full + 1] - 1]
    cand = np.concatenate((first, last))
    dist = np.concatenate((np.abs(first - c[full]), np.abs(last - c[full])))
    keep = dist > 0
    order = np.argsort(-dist[keep], kind="stable")
    cand = cand[keep][order]
    _, first_seen = np.unique(cand, return_index=True)
    picks = cand[np.sort(first_seen)]  # distinct values, farthest first
    m = min(int(empty.sum()), picks.size)
    c = c.copy()
    c[np.flatnonzero(empty)[:m]] = picks[:m]
    return np.sort(c)


# ---- kmeans++ --------------------------------------------------------------------------------------

def _kmeanspp(data: _Sorted, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ (D^2 sampling), exact on the full data: each draw picks a cluster by its SSE, then a
    value inside it by bisection on the cluster's cumulative squared distance, all from prefix sums."""
    c = np.array([data.x[rng.integers(data.n)]])
    for _ in range(k - 1):
        edges = data.cuts(c)
        n, s, q = data.stats(edges)
        sse = np.maximum(q - 2 * c * s + n * c * c, 0.0)
        total = sse.sum()
        if total <= 0:
            break
        j = min(int(np.searchsorted(np.cumsum(sse), rng.random() * total, side="right")), c.size - 1)
        pick = data.x[_draw_in_cluster(data, int(edges[j]), int(edges[j + 1]), c[j], rng.random() * sse[j])]
        c = np.sort(np.append(c, pick))
    if c.size < k:  # only when fewer distinct values than k remain to draw; cannot happen after validation
        raise AssertionError("kmeans++ ran out of distinct values")
    return c


def _draw_in_cluster(data: _Sorted, a: int, b: int, c: float, u: float) -> int:
    """Smallest index t in [a, b) whose cumulative sum of (x - c)^2 over a..t reaches u."""
    lo, hi = a, b - 1
    while lo < hi:
        mid = (lo + hi) // 2
        m = mid + 1 - a
        s = data.p1[mid + 1] - data.p1[a]
        q = data.p2[mid + 1] - data.p2[a]
        if q - 2 * c * s + m * c * c >= u:
            hi = mid
        else:
            lo = mid + 1
    return lo


# ---- optimal: weighted dynamic program ----------------------------------------------------------------

def _optimal_init(data: _Sorted, k: int) -> np.ndarray:
    """Centroids of the DP-optimal partition of the weighted points (distinct values or bins)."""
    runs = data.runs()
    if runs.size - 1 <= MAX_BINS:
        edges = runs
    else:
        edges = _bin_edges(data, min(MAX_BINS, max(MIN_BINS, BINS_PER_CLUSTER * k)))
    n, s, q = data.stats(edges)
    exact = runs.size - 1 <= MAX_BINS and _exact_fits(n.size, k)
    starts = _dp_partition(n, s, q, k, exact=exact)
    return np.add.reduceat(s, starts) / np.add.reduceat(n, starts)


def _exact_fits(size: int, k: int) -> bool:
    """Whether the unbanded DP on `size` weighted points stays within EXACT_WORK (time and memory)."""
    rows = size - k + 1
    return k * rows * rows <= EXACT_WORK and size * rows <= EXACT_WORK // 10


def _bin_edges(data: _Sorted, bins: int) -> np.ndarray:
    """Edges (indices into the sorted data) of at most `bins` contiguous bins of similar SSE.

    Starting from one bin, every round splits each bin whose SSE exceeds half the largest one at its mean
    (a value threshold, so equal values stay together). Bins of equal SSE have widths proportional to
    density ** (-1/3), the cell width of an optimal quantizer, so each cluster spans a similar number of
    bins; isolated outliers get bins of their own. The bins' own SSE, a floor under the DP's result,
    ends far below the k-means optimum.
    """
    edges = np.array([0, data.n])
    for _ in range(MAX_SPLIT_ROUNDS):
        room = bins - (edges.size - 1)
        if room <= 0:
            break
        lo, hi = edges[:-1], edges[1:]
        n, s, q = data.stats(edges)
        sse = np.where(data.x[lo] < data.x[hi - 1], q - s * s / n, 0.0)
        if not np.any(sse > 0):
            break
        pick = np.flatnonzero(sse > sse.max() / 2)
        if pick.size > room:
            pick = pick[np.argsort(-sse[pick], kind="stable")[:room]]
        split = np.searchsorted(data.x, s[pick] / n[pick], side="left")
        split = split[(split > lo[pick]) & (split < hi[pick])]
        if split.size == 0:
            break
        edges = np.sort(np.concatenate((edges, split)))
    return edges


def _dp_partition(n: np.ndarray, s: np.ndarray, q: np.ndarray, k: int, *, exact: bool) -> np.ndarray:
    """Start index of each of k clusters in the SSE-optimal contiguous partition of weighted points.

    `exact` searches every start of the last cluster; otherwise only the last W points (a band), W being
    doubled until no cluster of the chosen partition fills the band.
    """
    size = n.size
    rows = size - k + 1  # end points per layer: the points after them must fill the remaining clusters
    width = rows if exact else min(rows, max(16, 3 * -(-size // k)))
    while True:
        starts = _banded_dp(n, s, q, k, width)
        if width >= rows or np.diff(np.append(starts, size))[1:].max() < width:
            return starts
        width = min(rows, 2 * width)


def _band_costs(n: np.ndarray, s: np.ndarray, q: np.ndarray, width: int) -> np.ndarray:
    """cost[i, e] = SSE of the weighted points (i - width + 1 + e) .. i; inf where that start is below 0."""
    pn, ps, pq = (np.concatenate(([0.0], np.cumsum(v))) for v in (n, s, q))
    end = np.arange(1, n.size + 1)[:, None]
    start = end - width + np.arange(width)[None, :]
    before = start < 0
    np.maximum(start, 0, out=start)
    total = ps[end] - ps[start]
    np.square(total, out=total)
    total /= np.maximum(pn[end] - pn[start], 1.0)
    cost = pq[end] - pq[start]
    cost -= total
    np.maximum(cost, 0.0, out=cost)
    cost[before] = np.inf
    return cost


def _banded_dp(n: np.ndarray, s: np.ndarray, q: np.ndarray, k: int, width: int) -> np.ndarray:
    """The DP, layer by layer, with the last cluster's start restricted to `width` points before its end.

    Layer j holds d[i] = least SSE of points 0..i in j+1 clusters, for the rows i in [j, j + rows) that
    can still lead to a full partition; a layer is one vectorized add and argmin over (rows, width).
    """
    size = n.size
    rows = size - k + 1
    cost = _band_costs(n, s, q, width)
    pad = np.full(width + size, np.inf)  # pad[width + i] = d[i]; inf before 0 and outside a layer's rows
    pn, ps, pq = (np.cumsum(v[:rows]) for v in (n, s, q))
    pad[width:width + rows] = np.maximum(pq - ps * ps / pn, 0.0)  # layer 0: one cluster over points 0..i
    windows = sliding_window_view(pad, width)  # windows[i, e] = d[i - width + e], the layer before i's start
    back = np.zeros((k, size), dtype=np.int32)
    buf = np.empty((rows, width))
    flat = np.arange(rows) * width
    offset = np.arange(rows) - width + 1
    for j in range(1, k):
        np.add(windows[j:j + rows], cost[j:j + rows], out=buf)
        arg = np.argmin(buf, axis=1)
        best = buf.ravel()[flat + arg]
        pad[width + j - 1] = np.inf
        pad[width + j:width + j + rows] = best
        back[j, j:j + rows] = offset + j + arg
    starts = np.zeros(k, dtype=np.int64)
    i = size - 1
    for j in range(k - 1, 0, -1):
        starts[j] = back[j, i]
        i = starts[j] - 1
    return starts
