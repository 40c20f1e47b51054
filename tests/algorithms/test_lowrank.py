"""Low-rank factorization (slimkit.algorithms.lowrank): SVD error bounds, rank helpers, NMF, validation."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.algorithms.lowrank import (
    max_useful_rank,
    nmf,
    rank_for_energy,
    rank_for_ratio,
    reconstruction_error,
    singular_values,
    truncated_svd,
)


def low_rank_plus_noise(m: int, n: int, rank: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.linspace(3.0, 1.0, rank)
    return (rng.standard_normal((m, rank)) * scale) @ rng.standard_normal((rank, n)) \
        + noise * rng.standard_normal((m, n))


def test_exact_svd_error_is_the_tail_energy_bound():
    w = np.random.default_rng(0).standard_normal((60, 40))
    s = singular_values(w)
    for rank in range(1, 40):
        a, b = truncated_svd(w, rank, randomized=False)
        assert a.shape == (60, rank) and b.shape == (rank, 40)
        bound = np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s ** 2))
        assert reconstruction_error(w, a, b) == pytest.approx(bound, abs=1e-6)
    a, b = truncated_svd(w, 40)
    assert reconstruction_error(w, a, b) < 1e-12


def test_factors_split_the_singular_values_evenly():
    w = np.random.default_rng(1).standard_normal((30, 20))
    a, b = truncated_svd(w, 7)
    s = singular_values(w)[:7]
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), np.sqrt(s), rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), np.sqrt(s), rtol=1e-10)


def test_singular_values_are_descending_and_match_numpy():
    w = np.random.default_rng(2).standard_normal((25, 35)).astype(np.float32)
    s = singular_values(w)
    assert s.dtype == np.float64 and s.shape == (25,) and np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(s, np.linalg.svd(w.astype(np.float64), compute_uv=False), rtol=1e-12)


def test_randomized_svd_is_close_to_exact():
    w = low_rank_plus_noise(500, 300, 20, noise=0.05)
    for rank in (10, 20, 30):
        exact = reconstruction_error(w, *truncated_svd(w, rank, randomized=False))
        fast = reconstruction_error(w, *truncated_svd(w, rank, randomized=True, seed=3))
        assert exact <= fast * (1 + 1e-9)
        assert fast <= exact * 1.01, rank


def test_dtype_follows_the_input():
    w = np.random.default_rng(4).standard_normal((12, 9))
    assert all(f.dtype == np.float32 for f in truncated_svd(w.astype(np.float32), 3))
    assert all(f.dtype == np.float64 for f in truncated_svd(w, 3))


def test_rank_for_energy():
    s = np.array([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.65) == 2
    assert rank_for_energy(s, 13 / 14) == 2
    assert rank_for_energy(s, 0.93) == 3
    assert rank_for_energy(s, 1.0) == 3
    assert rank_for_energy(s[::-1], 0.65) == 2  # order does not matter
    assert rank_for_energy(np.array([5.0, 0.0, 0.0]), 1.0) == 1
    assert rank_for_energy(np.zeros(4), 0.9) == 0
    with pytest.raises(ValueError, match="energy"):
        rank_for_energy(s, 0.0)
    with pytest.raises(ValueError, match="energy"):
        rank_for_energy(s, 1.5)


def test_rank_for_ratio_and_max_useful_rank():
    assert rank_for_ratio(384, 384, 0.5) == 96
    assert rank_for_ratio(384, 1536, 0.25) == 76  # 76 * 1920 = 145,920 <= 147,456 < 77 * 1920
    assert rank_for_ratio(10, 10, 5.0) == 10  # capped at the full rank
    assert max_useful_rank(384, 384) == 191
    assert max_useful_rank(384, 1536) == 307
    assert max_useful_rank(2, 2) == 0
    rng = np.random.default_rng(5)
    for _ in range(300):
        m, n = (int(v) for v in rng.integers(2, 5000, 2))
        ratio = float(rng.uniform(0.01, 0.99))
        r = rank_for_ratio(m, n, ratio)
        assert r * (m + n) <= ratio * m * n < (r + 1) * (m + n) or r == min(m, n)
        u = max_useful_rank(m, n)
        assert u * (m + n) < m * n <= (u + 1) * (m + n)
    assert rank_for_ratio(100, 100, 0.01) == 0  # rank 1 (200 parameters) exceeds 1% of 10,000
    assert rank_for_ratio(100, 100, 0.02) == 1
    with pytest.raises(ValueError, match="ratio"):
        rank_for_ratio(10, 10, 0.0)
    with pytest.raises(ValueError, match="positive integers"):
        max_useful_rank(0, 5)


@pytest.mark.parametrize("rank", [0, 41, 3.0])
def test_bad_rank_names_the_maximum(rank):
    w = np.ones((40, 70))
    with pytest.raises(ValueError, match="max rank 40"):
        truncated_svd(w, rank)
    with pytest.raises(ValueError, match="max rank 40"):
        nmf(w, rank)


def test_bad_matrices_raise():
    with pytest.raises(ValueError, match="2-D"):
        truncated_svd(np.ones(5), 1)
    w = np.ones((4, 4))
    w[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        truncated_svd(w, 1)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_nmf_factors_are_non_negative_and_improve_with_rank():
    rng = np.random.default_rng(6)
    w = rng.uniform(0, 1, (80, 12)) @ rng.uniform(0, 1, (12, 50)) + 0.05 * rng.uniform(0, 1, (80, 50))
    errors = []
    for rank in (1, 3, 6, 12):
        a, b = nmf(w, rank, max_iter=500)
        assert a.shape == (80, rank) and b.shape == (rank, 50)
        assert a.min() >= 0 and b.min() >= 0
        errors.append(reconstruction_error(w, a, b))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.05
    svd_error = reconstruction_error(w, *truncated_svd(w, 6))
    assert svd_error <= errors[2]  # the SVD is the best rank-6 fit; NMF pays for non-negativity


def test_nmf_rejects_negative_weights():
    w = np.abs(np.random.default_rng(7).standard_normal((10, 8)))
    w[3, 4] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        nmf(w, 2)


def test_reconstruction_error_edge_cases():
    z = np.zeros((3, 4))
    assert reconstruction_error(z, np.zeros((3, 1)), np.zeros((1, 4))) == 0.0
    assert reconstruction_error(z, np.ones((3, 1)), np.ones((1, 4))) == np.inf
    w = np.arange(12.0).reshape(3, 4)
    assert reconstruction_error(w, np.zeros((3, 2)), np.zeros((2, 4))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes"):
        reconstruction_error(w, np.zeros((3, 2)), np.zeros((3, 4)))
