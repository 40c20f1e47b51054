"""Quantization math (slimkit.algorithms.quant) on numpy arrays: ranges, error bounds, estimators, edge cases."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from slimkit.algorithms.quant import (
    METHODS,
    QuantScheme,
    RangeCollector,
    choose_qparams,
    compute_qparams,
    dequantize,
    estimate_range,
    expand_qparams,
    fake_quantize,
    qrange,
    quantization_error,
    quantize,
)

RNG_SEED = 0


def weights(shape=(24, 70), seed=RNG_SEED) -> np.ndarray:
    """Normal weights whose rows have different spreads (70 columns: the last block of 32 is partial)."""
    rng = np.random.default_rng(seed)
    spread = np.exp(rng.uniform(-3, 1, size=(shape[0], 1)))
    return (rng.standard_normal(shape) * spread).astype(np.float32)


def heavy_tailed(n=200_000, outliers=8, seed=RNG_SEED) -> np.ndarray:
    """Laplace samples plus a few far outliers (fewer than 0.01%, so a 99.99th percentile clips them)."""
    rng = np.random.default_rng(seed)
    x = rng.laplace(size=n).astype(np.float32)
    idx = rng.choice(n, outliers, replace=False)
    x[idx] = rng.choice([-1.0, 1.0], outliers) * rng.uniform(25, 40, outliers)
    return x


def mse_of(x, scheme, method="minmax", **opts) -> float:
    return quantization_error(x, fake_quantize(x, scheme, method, **opts))["mse"]


# ---- integer ranges and validation ----


def test_qrange_restricts_symmetric_ranges_and_shifts_unsigned_ones():
    assert qrange(8, symmetric=True, signed=True) == (-127, 127)
    assert qrange(8, symmetric=False, signed=True) == (-128, 127)
    assert qrange(8, symmetric=False, signed=False) == (0, 255)
    assert qrange(8, symmetric=True, signed=False) == (1, 255)
    assert qrange(4, symmetric=True) == (-7, 7)
    assert qrange(2, symmetric=True) == (-1, 1)
    assert qrange(2, symmetric=False, signed=False) == (0, 3)


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 4.0, True, "8"])
def test_bad_bits_raise_value_error(bits):
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        QuantScheme(bits=bits)
    with pytest.raises(ValueError, match="bits"):
        qrange(bits)


def test_bad_scheme_fields_and_methods_raise():
    with pytest.raises(ValueError, match="granularity"):
        QuantScheme(granularity="row")
    with pytest.raises(ValueError, match="block_size"):
        QuantScheme(granularity="block", block_size=0)
    with pytest.raises(ValueError, match="unknown range method 'kl'"):
        estimate_range(weights(), QuantScheme(), "kl")
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        estimate_range(weights(), QuantScheme(granularity="channel", axis=2))
    with pytest.raises(ValueError, match="percentile"):
        estimate_range(weights(), QuantScheme(), "percentile", percentile=10)


# ---- parameter layout ----


def test_parameter_shapes_follow_granularity():
    x = weights((24, 70))
    scale, zero = choose_qparams(x, QuantScheme())
    assert scale.shape == () and zero.shape == () and scale.dtype == np.float32 and zero.dtype == np.int32
    assert choose_qparams(x, QuantScheme(granularity="channel", axis=0))[0].shape == (24, 1)
    assert choose_qparams(x, QuantScheme(granularity="channel", axis=1))[0].shape == (1, 70)
    block = QuantScheme(granularity="block", block_size=32)  # blocks along the last axis: ceil(70 / 32) = 3
    scale, zero = choose_qparams(x, block)
    assert scale.shape == (24, 3)
    wide_scale, wide_zero = expand_qparams(scale, zero, block, x.shape)
    assert wide_scale.shape == x.shape and np.all(wide_scale[:, 64:] == scale[:, 2:3])
    along_k = QuantScheme(granularity="block", block_size=32, block_axis=0)  # ONNX MatMul [K, N]
    assert choose_qparams(x.T.copy(), along_k)[0].shape == (3, 24)


def test_block_scales_are_the_per_block_ranges():
    x = weights((4, 70))
    scale, _ = choose_qparams(x, QuantScheme(granularity="block", block_size=32))
    for row, start in itertools.product(range(4), range(0, 70, 32)):
        block = x[row, start:start + 32]
        assert scale[row, start // 32] == pytest.approx(np.abs(block).max() / 127, rel=1e-6)


# ---- the round trip ----


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("granularity", ["tensor", "channel", "block"])
@pytest.mark.parametrize("symmetric,signed", [(True, True), (False, True), (False, False), (True, False)])
def test_round_trip_error_is_at_most_half_a_step(bits, granularity, symmetric, signed):
    """With min/max ranges every value is inside the range, so rounding moves it by at most scale / 2."""
    scheme = QuantScheme(bits=bits, symmetric=symmetric, signed=signed, granularity=granularity, block_size=32)
    x = weights()
    if not symmetric:
        x = x + np.linspace(0, 2, x.shape[1], dtype=np.float32)  # off-center data, where zero points matter
    scale, zero = choose_qparams(x, scheme)
    scale, zero = expand_qparams(scale, zero, scheme, x.shape)
    x_hat = fake_quantize(x, scheme)
    assert np.all(np.abs(x - x_hat) <= scale / 2 * (1 + 1e-5) + 1e-7)
    # the result lies on the integer grid, inside [qmin, qmax]
    qmin, qmax = scheme.qrange
    levels = x_hat / scale + zero
    assert np.allclose(levels, np.rint(levels), atol=1e-3)
    assert levels.min() >= qmin - 1e-3 and levels.max() <= qmax + 1e-3


def test_quantize_gives_small_integers_and_dequantize_inverts_the_grid():
    x = weights()
    scheme = QuantScheme(bits=8, symmetric=False, signed=False, granularity="channel")
    scale, zero = choose_qparams(x, scheme)
    q = quantize(x, scale, zero, *scheme.qrange)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255  # asymmetric min/max uses both ends
    np.testing.assert_allclose(dequantize(q, scale, zero), fake_quantize(x, scheme), rtol=0, atol=1e-6)
    signed = QuantScheme(bits=4, symmetric=True)
    q4 = quantize(x, *choose_qparams(x, signed), *signed.qrange)
    assert q4.dtype == np.int8 and q4.min() >= -7 and q4.max() <= 7


def test_rounding_is_half_to_even():
    q = quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 126.5]), np.float32(1.0), np.int32(0), -127, 127)
    assert q.tolist() == [0, 2, 2, 0, -2, 126]


# ---- which scheme wins where ----


def test_per_channel_beats_per_tensor_on_outlier_channels():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((64, 128)) * 0.02).astype(np.float32)
    w[[3, 17, 40, 41]] *= 50  # a few channels 50x wider set the per-tensor step for everyone
    tensor = mse_of(w, QuantScheme(bits=8))
    channel = mse_of(w, QuantScheme(bits=8, granularity="channel"))
    assert channel < tensor / 10


def test_per_block_beats_per_channel_on_outlier_blocks():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((32, 256)) * 0.02).astype(np.float32)
    w[:, 5] *= 50  # one outlier column: per channel every row's step is set by it, per block only one block's
    channel = mse_of(w, QuantScheme(bits=4, granularity="channel"))
    block = mse_of(w, QuantScheme(bits=4, granularity="block", block_size=32))
    assert block < channel / 3


def test_asymmetric_beats_symmetric_on_all_positive_data():
    x = np.abs(np.random.default_rng(3).standard_normal(50_000)).astype(np.float32)  # like ReLU outputs
    for bits in (4, 8):
        symmetric = mse_of(x, QuantScheme(bits=bits, symmetric=True))
        asymmetric = mse_of(x, QuantScheme(bits=bits, symmetric=False, signed=False))
        assert asymmetric < symmetric / 2  # symmetric wastes the negative half of its levels


@pytest.mark.parametrize("granularity", ["tensor", "channel", "block"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_more_bits_give_lower_error(granularity, symmetric):
    x = weights()
    errors = [mse_of(x, QuantScheme(bits=b, symmetric=symmetric, granularity=granularity)) for b in range(2, 9)]
    assert all(a > 2 * b for a, b in zip(errors, errors[1:], strict=False)), errors  # ~4x per bit


@pytest.mark.parametrize("bits", [4, 6])
@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_clipping_estimators_beat_minmax_on_heavy_tails(bits, method, symmetric):
    """Laplace data with far outliers: clipping the outliers buys a much finer step for everything else.

    (At 8 bits the step is fine already and clipping the outliers costs more than it buys for
    percentile and entropy; the mse search then keeps a wide range, as the next test checks.)
    """
    x = heavy_tailed()
    scheme = QuantScheme(bits=bits, symmetric=symmetric, signed=symmetric)
    lo, hi = estimate_range(x, scheme, method)
    full_lo, full_hi = estimate_range(x, scheme, "minmax")
    assert float(hi) < float(full_hi) / 2 and float(lo) > float(full_lo) / 2  # the outliers are clipped
    assert mse_of(x, scheme, method) < mse_of(x, scheme, "minmax") / 2


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_mse_search_is_never_worse_than_minmax(bits, granularity):
    for x in (weights(), heavy_tailed(20_000).reshape(100, 200)):
        scheme = QuantScheme(bits=bits, granularity=granularity)
        assert mse_of(x, scheme, "mse") <= mse_of(x, scheme, "minmax") * (1 + 1e-6)


def test_percentile_100_is_minmax_and_entropy_clips_relu_tails():
    x = heavy_tailed()
    scheme = QuantScheme(bits=8, symmetric=False)
    np.testing.assert_allclose(estimate_range(x, scheme, "percentile", percentile=100.0),
                               estimate_range(x, scheme, "minmax"))
    relu = np.maximum(np.random.default_rng(4).standard_normal(100_000), 0).astype(np.float32)
    lo, hi = estimate_range(relu, QuantScheme(bits=8, symmetric=False, signed=False), "entropy")
    assert float(lo) == 0.0 and 2.0 < float(hi) < float(relu.max())


# ---- edge cases ----


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_and_constant_tensors_do_not_divide_by_zero(method, symmetric):
    scheme = QuantScheme(bits=8, symmetric=symmetric, granularity="channel")
    with np.errstate(all="raise"):
        zeros = np.zeros((4, 16), np.float32)
        assert np.array_equal(fake_quantize(zeros, scheme, method), zeros)
        scale, _ = choose_qparams(zeros, scheme, method)
        assert np.all(scale == 1.0)
        constant = np.full((4, 16), 3.0, np.float32)
        constant[1] = -0.25
        constant[2] = 0.0  # one all-zero channel among non-zero ones
        np.testing.assert_allclose(fake_quantize(constant, scheme, method), constant, atol=1e-6)
        assert fake_quantize(np.zeros(0, np.float32), QuantScheme(), method).size == 0


def test_quantization_error_values():
    err = quantization_error(np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    assert err["mse"] == pytest.approx(0.5) and err["max_abs"] == 1.0
    assert err["sqnr_db"] == pytest.approx(10 * np.log10(5.0))
    assert quantization_error(np.ones(3), np.ones(3))["sqnr_db"] == np.inf


def test_compute_qparams_always_represents_zero_exactly():
    scheme = QuantScheme(bits=8, symmetric=False, signed=False)
    scale, zero = compute_qparams(np.array([0.3, -2.0]), np.array([1.7, -0.5]), scheme)  # ranges not holding 0
    x = np.zeros(2, np.float32)
    assert np.array_equal(dequantize(quantize(x, scale, zero, *scheme.qrange), scale, zero), x)
    assert zero.tolist() == [0, 255]


def test_range_collector_accumulates_batches():
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((64, 300)).astype(np.float32) * (i + 1) for i in range(6)]
    collector = RangeCollector(per_update=4096, max_values=10_000)
    for batch in batches:
        collector.update(batch)
    everything = np.concatenate([b.ravel() for b in batches])
    scheme = QuantScheme(bits=8, symmetric=False)
    lo, hi = collector.estimate(scheme, "minmax")
    assert (float(lo), float(hi)) == (everything.min(), everything.max())  # exact, not from the subsample
    assert collector.count == everything.size and collector.values().size <= 10_002
    p_lo, p_hi = collector.estimate(scheme, "percentile", percentile=99.0)
    true_lo, true_hi = np.percentile(everything, [1.0, 99.0])
    assert p_lo == pytest.approx(true_lo, rel=0.1) and p_hi == pytest.approx(true_hi, rel=0.1)
    with pytest.raises(ValueError, match="per-tensor"):
        collector.estimate(QuantScheme(granularity="channel"))


def test_all_weights_of_a_22m_parameter_model_in_seconds():
    """22M parameters as transformer-like matrices, per-channel 8-bit with min/max ranges."""
    rng = np.random.default_rng(6)
    matrices = [rng.standard_normal((1536, 384), dtype=np.float32) for _ in range(38)]
    scheme = QuantScheme(bits=8, granularity="channel")
    start = time.perf_counter()
    sqnr = [quantization_error(w, fake_quantize(w, scheme))["sqnr_db"] for w in matrices]
    seconds = time.perf_counter() - start
    assert sum(w.size for w in matrices) > 22_000_000
    assert seconds < 5.0, f"{seconds:.1f}s"
    assert min(sqnr) > 30.0
