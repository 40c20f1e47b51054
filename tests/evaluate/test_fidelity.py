"""Fidelity metrics on crafted arrays: cosine per row, max abs error, top-1 agreement, accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.evaluate.fidelity import accuracy, compare_outputs, rowwise_cosine


def test_cosine_identical_opposite_orthogonal_scaled():
    ref = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0], [0.5, -1.0, 2.0], [1.0, 1.0, 0.0]])
    cand = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0], [-0.5, 1.0, -2.0], [3.0, 3.0, 0.0]])
    np.testing.assert_allclose(rowwise_cosine(ref, cand), [1.0, 0.0, -1.0, 1.0], atol=1e-12)


def test_cosine_zero_rows():
    ref = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    cand = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    cos = rowwise_cosine(ref, cand)
    assert cos.tolist() == [1.0, 0.0, 0.0]  # both zero: identical; one zero: no similarity, and no NaN
    assert not np.isnan(cos).any()


def test_cosine_flattens_trailing_axes_and_is_float64():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 3, 5)).astype(np.float32)
    cos = rowwise_cosine(ref, ref.copy())
    assert cos.shape == (4,) and cos.dtype == np.float64
    np.testing.assert_allclose(cos, 1.0, atol=1e-12)
    noisy = rowwise_cosine(ref, ref + 0.5 * rng.standard_normal(ref.shape).astype(np.float32))
    assert (noisy < 0.999).all() and (noisy > 0.5).all()


def test_compare_outputs_errors_and_agreement():
    ref = [np.array([[1.0, 5.0, 2.0], [3.0, 0.0, 1.0]]), np.array([[0.0, 0.0, 9.0]])]
    cand = [np.array([[1.0, 5.25, 2.0], [3.0, 0.0, 1.0]]), np.array([[0.0, 9.5, 9.0]])]  # last row: top-1 changes
    result = compare_outputs(ref, cand, classification=True)
    assert result["samples"] == 3
    assert result["max_abs_err"] == pytest.approx(9.5)
    assert result["mean_abs_err"] == pytest.approx((0.25 + 9.5) / 9)
    assert result["top1_agreement"] == pytest.approx(2 / 3)
    assert result["cosine_min"] < 0.8 < result["cosine_mean"] < 1.0


def test_compare_outputs_identical_and_not_classification():
    ref = [np.arange(12, dtype=np.float32).reshape(4, 3)]
    result = compare_outputs(ref, [ref[0].copy()])
    assert result["max_abs_err"] == 0.0 and result["mean_abs_err"] == 0.0
    assert result["cosine_min"] == pytest.approx(1.0)
    assert "top1_agreement" not in result


def test_compare_outputs_shape_mismatch_is_reported():
    result = compare_outputs([np.zeros((2, 3))], [np.zeros((2, 4))])
    assert "output shapes differ" in result["error"] and "[2, 3]" in result["error"] and "[2, 4]" in result["error"]


def test_compare_outputs_single_column_has_no_top1():
    result = compare_outputs([np.ones((3, 1))], [np.ones((3, 1))], classification=True)
    assert "top1_agreement" not in result


def test_accuracy():
    scores = [np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[0.3, 0.7], [0.6, 0.4]])]
    labels = [np.array([1, 0]), np.array([0, 0])]
    assert accuracy(scores, labels) == pytest.approx(0.75)
    assert accuracy([np.eye(5)], [np.arange(5)]) == 1.0


def test_accuracy_not_applicable():
    assert accuracy([np.ones((4, 1))], [np.zeros(4)]) is None  # one score per sample: not class scores
    assert accuracy([np.ones((4, 3))], [np.zeros(5)]) is None  # label count does not match
