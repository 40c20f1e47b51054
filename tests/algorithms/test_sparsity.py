"""Magnitude-pruning math, the cubic schedule, distillation losses, and sparse storage in ONNX files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slimkit.algorithms.distill import distillation_loss, feature_loss, soft_loss
from slimkit.algorithms.sparsity import (
    cubic_sparsity,
    global_threshold,
    layer_sparsities,
    magnitude_mask,
    pack_mask,
    threshold_mask,
    unpack_mask,
)
from slimkit.demo_models import trained_digits_model
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.formats.onnx import OrtRunner
from slimkit.formats.openvino import OpenVinoRunner
from slimkit.passes.base import Context, get_pass
from slimkit.pipeline import load_recipe, run_pipeline


def test_magnitude_mask_zeroes_exactly_the_smallest():
    w = np.array([[0.5, -0.1, 2.0], [-3.0, 0.05, -0.2]], np.float32)
    keep = magnitude_mask(w, 0.5)
    assert keep.sum() == 3
    assert set(np.abs(w[keep]).tolist()) == {0.5, 2.0, 3.0}
    assert magnitude_mask(w, 0.0).all()


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_magnitude_mask_hits_target_on_random_weights(sparsity):
    w = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32)
    keep = magnitude_mask(w, sparsity)
    assert abs((1 - keep.mean()) - sparsity) < 1 / w.size + 1e-9
    assert np.abs(w[~keep]).max() <= np.abs(w[keep]).min()


def test_global_threshold_prunes_small_layers_harder():
    rng = np.random.default_rng(1)
    big = rng.standard_normal(1000).astype(np.float32)
    small = 0.1 * rng.standard_normal(1000).astype(np.float32)
    tau = global_threshold([big, small], 0.5)
    total = np.concatenate([big, small])
    assert abs((np.abs(total) <= tau).mean() - 0.5) < 1e-3
    per_layer = layer_sparsities([big, small], 0.5, scope="global")
    assert per_layer[1] > 0.8 and per_layer[0] < 0.2
    assert layer_sparsities([big, small], 0.5) == [0.5, 0.5]
    assert threshold_mask(small, tau).mean() < 0.2


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_out_of_range_is_a_clear_error(bad):
    with pytest.raises(SlimkitError, match="outside \\[0, 1\\)"):
        magnitude_mask(np.ones((2, 2), np.float32), bad)


def test_cubic_schedule_matches_zhu_gupta():
    assert cubic_sparsity(0, final=0.9, begin_step=0, end_step=100) == 0.0
    assert cubic_sparsity(100, final=0.9, begin_step=0, end_step=100) == pytest.approx(0.9)
    assert cubic_sparsity(500, final=0.9, begin_step=0, end_step=100) == pytest.approx(0.9)
    # s_t = s_f (1 - (1 - t/n)^3): halfway is 0.9 * (1 - 0.125)
    assert cubic_sparsity(50, final=0.9, begin_step=0, end_step=100) == pytest.approx(0.9 * 0.875)
    steps = [cubic_sparsity(t, final=0.8, begin_step=10, end_step=60) for t in range(0, 80)]
    assert all(b >= a for a, b in zip(steps, steps[1:], strict=False))
    assert steps[5] == 0.0
    # front-loaded: the first fifth of the ramp already prunes more than a linear ramp would
    assert cubic_sparsity(20, final=0.8, begin_step=10, end_step=60) > 0.8 * 0.2


def test_pack_mask_round_trip():
    mask = np.random.default_rng(2).random(1001) > 0.7
    packed = pack_mask(mask)
    assert packed.size == math.ceil(1001 / 8)
    assert np.array_equal(unpack_mask(packed, 1001), mask)


def test_distillation_loss_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[2.0, 1.0, 0.0]])
    temp = 2.0
    p_t = np.exp(t.numpy()[0] / temp) / np.exp(t.numpy()[0] / temp).sum()
    p_s = np.exp(s.numpy()[0] / temp) / np.exp(s.numpy()[0] / temp).sum()
    kl = float((p_t * np.log(p_t / p_s)).sum())
    assert soft_loss(s, t, temp).item() == pytest.approx(kl * temp * temp, rel=1e-5)
    ce = float(-np.log(np.exp(s.numpy()[0])[1] / np.exp(s.numpy()[0]).sum()))
    parts = distillation_loss(s, t, torch.tensor([1]), alpha=0.3, temperature=temp)
    assert parts["hard"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(0.3 * ce + 0.7 * kl * temp * temp, rel=1e-5)
    unlabeled = distillation_loss(s, t, None, alpha=0.0, temperature=temp)
    assert unlabeled["loss"].item() == pytest.approx(kl * temp * temp, rel=1e-5)
    assert soft_loss(t, t, temp).item() == pytest.approx(0.0, abs=1e-7)


def test_feature_loss_zero_for_identical_and_uses_projection():
    x = torch.randn(4, 8)
    assert feature_loss(x, x.clone())["loss"].item() == pytest.approx(0.0, abs=1e-6)
    proj = torch.nn.Linear(8, 6)
    parts = feature_loss(x, torch.randn(4, 6), proj)
    assert parts["loss"].item() > 0 and parts["mse"].item() > 0


@pytest.fixture(scope="module")
def mlp_onnx(digits_cache, tmp_path_factory):
    torch_model = load(trained_digits_model("mlp", digits_cache), task="classification")
    return run_pipeline(torch_model, load_recipe("onnx"), Context(workdir=tmp_path_factory.mktemp("sp"))).model


def _digits_accuracy(runner):
    from slimkit.bundled_data import digits_arrays

    x, y = digits_arrays("test")
    return float((runner.run({"x": x})[0].argmax(1) == y).mean())


def test_onnx_prune_shrinks_file_and_both_runtimes_agree(mlp_onnx, tmp_path):
    result = get_pass("prune")({"sparsity": 0.8}).run(mlp_onnx, Context(workdir=tmp_path))
    stats = result.stats
    assert stats["layers"] == 3 and stats["sparsity"] == pytest.approx(0.8, abs=0.01)
    storage = stats["storage"]
    assert storage["layers"] == 3
    ratio = storage["file_bytes_after"] / storage["file_bytes_before"]
    assert ratio < 0.30  # 1 bit mask + 20% of the floats: about 0.23x
    assert result.model.size_bytes() < 0.3 * mlp_onnx.size_bytes()
    assert "not faster" in stats["speed_note"]
    from slimkit.bundled_data import digits_arrays

    x, _ = digits_arrays("test")
    ort_out = OrtRunner(result.model, 1).run({"x": x})[0]
    ov_out = OpenVinoRunner(result.model, 1).run({"x": x})[0]
    np.testing.assert_allclose(ort_out, ov_out, atol=1e-4)
    # one-shot 80% without fine-tuning costs points (about 17 with the seed-0 zoo MLP; 9 to 17 across models);
    # pruning the wrong weights (the largest, or at random) lands near chance. Fine-tuning recovers it.
    assert _digits_accuracy(OrtRunner(result.model, 1)) > 0.75


def test_sparse_storage_rebuilds_exact_weights(mlp_onnx, tmp_path):
    import onnx

    pruned = get_pass("prune")({"sparsity": 0.5, "store_sparse": False}).run(mlp_onnx, Context(workdir=tmp_path / "p"))
    dense_proto = pruned.model.proto
    stored = get_pass("sparse-storage")({}).run(pruned.model, Context(workdir=tmp_path / "s"))
    assert stored.stats["layers"] == 3
    assert stored.stats["file_bytes_after"] < 0.6 * stored.stats["file_bytes_before"]
    # ONNX Runtime folds the rebuild subgraph; the folded weights equal the pruned dense ones bit for bit
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp_path / "folded.onnx")
    ort.InferenceSession(str(stored.model.path), opts, providers=["CPUExecutionProvider"])
    folded = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "folded.onnx")).graph.initializer}
    for t in dense_proto.graph.initializer:
        if len(t.dims) >= 2:
            original = onnx.numpy_helper.to_array(t)
            match = [v for v in folded.values() if v.shape == original.shape and np.array_equal(v, original)]
            assert match, f"{t.name} was not rebuilt exactly"
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    np.testing.assert_array_equal(OrtRunner(pruned.model, 1).run({"x": x})[0], OrtRunner(stored.model, 1).run({"x": x})[0])


def test_sparse_storage_skips_dense_weights(mlp_onnx, tmp_path):
    stored = get_pass("sparse-storage")({}).run(mlp_onnx, Context(workdir=tmp_path))
    assert stored.stats["layers"] == 0


def test_prune_pattern_matching_nothing_lists_layers(mlp_onnx, tmp_path):
    with pytest.raises(SlimkitError, match="matches no weight"):
        get_pass("prune")({"include": ["nope*"]}).run(mlp_onnx, Context(workdir=tmp_path))


def test_prune_rejects_training_an_onnx_model(mlp_onnx, tmp_path):
    with pytest.raises(SlimkitError, match="cannot be fine-tuned"):
        get_pass("prune")({"train": {"epochs": 1}}).run(mlp_onnx, Context(workdir=tmp_path))
    with pytest.raises(SlimkitError, match="needs train"):
        get_pass("prune")({"schedule": "gradual"}).run(mlp_onnx, Context(workdir=tmp_path))
