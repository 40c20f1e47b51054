"""1-D k-means for weight sharing (slimkit.algorithms.kmeans1d): optimality, labels, inits, validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import slimkit.algorithms.kmeans1d as km
from slimkit.algorithms.kmeans1d import kmeans1d, kmeans1d_per_channel

LLOYD_INITS = ("linear", "density", "kmeans++")


def brute_force(values: np.ndarray, k: int) -> float:
    """Least SSE over every split of the sorted values into k contiguous non-empty groups."""
    xs = np.sort(values.astype(np.float64))
    best = np.inf
    for cuts in itertools.combinations(range(1, xs.size), k - 1):
        best = min(best, sum(float(((g - g.mean()) ** 2).sum()) for g in np.split(xs, cuts)))
    return best


def direct_inertia(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    return float(((values.astype(np.float64) - centroids.astype(np.float64)[labels]) ** 2).sum())


def sample(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(n)
    if kind == "laplace":
        return rng.laplace(size=n)
    if kind == "mixture":
        return np.concatenate([rng.normal(mu, 0.1, n // 3 + 1) for mu in (-2.0, 0.0, 3.0)])[:n]
    if kind == "ties":  # few distinct values, many repeats
        return rng.integers(-6, 7, n).astype(np.float64)
    raise AssertionError(kind)


def test_optimal_matches_brute_force_on_small_inputs():
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(400):
        n = int(rng.integers(2, 13))
        kind = ("normal", "laplace", "mixture", "ties")[trial % 4]
        x = sample(kind, n, rng) * rng.uniform(0.01, 10)
        distinct = np.unique(x).size
        if distinct < 2:
            continue
        k = int(rng.integers(2, min(4, distinct) + 1))
        _, _, inertia = kmeans1d(x, k)
        assert inertia == pytest.approx(brute_force(x, k), abs=1e-9, rel=1e-12), (x, k)
        checked += 1
    assert checked > 350


def test_optimal_never_worse_than_lloyd_from_any_init():
    rng = np.random.default_rng(1)
    for kind, n, k in [("normal", 600, 8), ("laplace", 900, 5), ("mixture", 500, 12), ("ties", 800, 9),
                       ("laplace", 300, 30)]:
        x = sample(kind, n, rng)
        best = kmeans1d(x, k)[2]
        for init in LLOYD_INITS:
            for seed in range(3):
                assert best <= kmeans1d(x, k, init=init, seed=seed)[2] * (1 + 1e-12), (kind, init, seed)


def test_binned_path_is_near_exact(monkeypatch):
    """Tensors with more distinct values than MAX_BINS are binned; forcing that on a small tensor, the
    result stays within 0.5% of the exact optimum and no worse than k-means++ followed by Lloyd."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.laplace(size=3000), rng.uniform(-30, 30, 6)])  # heavy tail plus outliers
    exact = kmeans1d(x, 16)[2]
    monkeypatch.setattr(km, "MAX_BINS", 256)
    monkeypatch.setattr(km, "MIN_BINS", 256)
    binned = kmeans1d(x, 16)[2]
    assert exact <= binned <= exact * 1.005
    assert binned <= min(kmeans1d(x, 16, init="kmeans++", seed=s)[2] for s in range(3)) * (1 + 1e-9)


def test_labels_point_to_the_nearest_centroid_and_inertia_is_honest():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 48)) * 0.05).astype(np.float32)
    for init in (*LLOYD_INITS, "optimal"):
        c, labels, inertia = kmeans1d(x, 13, init=init)
        assert labels.shape == x.shape and labels.dtype == np.uint8
        dist = np.abs(x.astype(np.float64)[..., None] - c.astype(np.float64))
        chosen = np.take_along_axis(dist, labels[..., None].astype(np.int64), -1)[..., 0]
        assert np.all(chosen <= dist.min(-1)), init
        assert inertia == pytest.approx(direct_inertia(x, c, labels), rel=1e-9)


def test_large_tensor_labels_match_nearest_centroid():
    """Above 65,536 values labels come from a lookup table checked against the midpoints."""
    rng = np.random.default_rng(12)
    x = np.concatenate([rng.laplace(size=90_000) * 0.03, [2.5, -1.75]]).astype(np.float32).reshape(-1, 2)
    c, labels, inertia = kmeans1d(x, 64)
    dist = np.abs(x.astype(np.float64)[..., None] - c.astype(np.float64))
    chosen = np.take_along_axis(dist, labels[..., None].astype(np.int64), -1)[..., 0]
    assert np.all(chosen <= dist.min(-1))
    assert inertia == pytest.approx(direct_inertia(x, c, labels), rel=1e-9)


@pytest.mark.parametrize("k", [2, 3, 40])
def test_binned_path_with_ties_and_few_clusters(monkeypatch, k):
    """Binned DP, window refinement and Lloyd on values with heavy ties (rounded to 1e-3)."""
    rng = np.random.default_rng(k)
    x = np.round(rng.standard_normal(20_000), 3)
    monkeypatch.setattr(km, "MAX_BINS", 256)
    monkeypatch.setattr(km, "MIN_BINS", 256)
    c, labels, inertia = kmeans1d(x, k)
    assert np.all(np.diff(c) > 0) and np.unique(labels).size == k
    assert inertia <= min(kmeans1d(x, k, init="kmeans++", seed=s)[2] for s in range(3)) * (1 + 1e-9)


def test_lloyd_result_is_a_fixed_point():
    """Each centroid is the mean of the values labelled with it (float32 rounding aside)."""
    x = np.random.default_rng(4).laplace(size=5000)
    for init in (*LLOYD_INITS, "optimal"):
        c, labels, _ = kmeans1d(x, 20, init=init)
        counts = np.bincount(labels, minlength=20)
        means = np.bincount(labels, weights=x, minlength=20) / np.maximum(counts, 1)
        used = counts > 0
        np.testing.assert_allclose(c[used], means[used], rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 17, 64, 255, 256])
def test_every_k_from_2_to_256(k):
    x = np.random.default_rng(k).standard_normal(3000).astype(np.float32)
    c, labels, inertia = kmeans1d(x, k)
    assert c.shape == (k,) and c.dtype == np.float32
    assert np.all(np.diff(c) > 0)
    assert labels.dtype == np.uint8 and labels.shape == x.shape
    assert np.unique(labels).size == k  # the optimal partition uses every cluster
    assert inertia > 0


def test_dtypes_and_shapes():
    x64 = np.random.default_rng(5).standard_normal((5, 6, 7))
    c, labels, _ = kmeans1d(x64, 4)
    assert c.dtype == np.float64 and labels.shape == (5, 6, 7)
    c16, _, _ = kmeans1d(x64.astype(np.float16), 4)
    assert c16.dtype == np.float32
    ints = np.arange(10).repeat(3)
    c_int, labels_int, inertia = kmeans1d(ints, 10)
    np.testing.assert_array_equal(c_int, np.arange(10, dtype=np.float32))
    assert inertia == 0.0 and np.array_equal(c_int[labels_int], ints)


def test_exactly_k_distinct_values_are_reproduced():
    x = np.random.default_rng(6).choice([-1.5, 0.25, 2.0, 7.0], size=200)
    c, labels, inertia = kmeans1d(x, 4)
    np.testing.assert_array_equal(c, [-1.5, 0.25, 2.0, 7.0])
    assert inertia == 0.0 and np.array_equal(c[labels], x)


def test_kmeanspp_is_seeded():
    x = np.random.default_rng(7).laplace(size=4000)
    a = kmeans1d(x, 32, init="kmeans++", seed=1)
    b = kmeans1d(x, 32, init="kmeans++", seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    assert any(not np.array_equal(a[0], kmeans1d(x, 32, init="kmeans++", seed=s)[0]) for s in (2, 3, 4))


def test_linear_init_relocates_empty_clusters():
    """Evenly spaced centroids over data with far outliers start mostly empty; none stay empty."""
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal(2000) * 0.01, [50.0, -40.0]])
    c, labels, _ = kmeans1d(x, 16, init="linear")
    assert np.unique(labels).size == 16 and np.all(np.diff(c) > 0)


@pytest.mark.parametrize("k, match", [(1, "from 2 to 256"), (257, "from 2 to 256"), (2.0, "integer"),
                                      (True, "integer"), (6, "larger than the 5 distinct")])
def test_bad_k_raises(k, match):
    with pytest.raises(ValueError, match=match):
        kmeans1d(np.array([0.0, 1, 2, 3, 4, 4, 4]), k)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise(bad):
    x = np.random.default_rng(9).standard_normal(100)
    x[17] = bad
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        kmeans1d(x, 4)


def test_other_bad_inputs_raise():
    with pytest.raises(ValueError, match="init must be one of"):
        kmeans1d(np.arange(10.0), 2, init="random")
    with pytest.raises(ValueError, match="non-empty"):
        kmeans1d(np.array([]), 2)
    with pytest.raises(ValueError, match="1 distinct"):
        kmeans1d(np.zeros(50), 2)
    with pytest.raises(ValueError, match="real-valued"):
        kmeans1d(np.array(["a", "b"]), 2)


def test_per_channel_codebooks():
    rng = np.random.default_rng(10)
    w = rng.standard_normal((6, 40)) * np.arange(1, 7)[:, None]
    books, labels, inertia = kmeans1d_per_channel(w, 5, axis=0)
    assert books.shape == (6, 5) and labels.shape == w.shape and labels.dtype == np.uint8
    total = 0.0
    for ch in range(6):
        c, lab, part = kmeans1d(w[ch], 5)
        np.testing.assert_array_equal(books[ch], c)
        np.testing.assert_array_equal(labels[ch], lab)
        total += part
    assert inertia == pytest.approx(total)
    books1, labels1, _ = kmeans1d_per_channel(w, 4, axis=1)
    assert books1.shape == (40, 4) and labels1.shape == w.shape
    np.testing.assert_array_equal(books1[3], kmeans1d(w[:, 3], 4)[0])


def test_per_channel_errors_name_the_channel():
    w = np.random.default_rng(11).standard_normal((3, 10))
    w[2] = 1.0
    with pytest.raises(ValueError, match="channel 2 along axis 0"):
        kmeans1d_per_channel(w, 2)
    with pytest.raises(ValueError, match="out of range"):
        kmeans1d_per_channel(w, 2, axis=2)
