"""slimkit.models.onnx_surgery on small hand-built graphs: every rewrite is run with ONNX Runtime and compared
with what numpy says it must compute (a codebook rebuilds centroids[indices], sparse storage the dense
weight bit for bit, a factor split x @ A @ B)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper

from slimkit.models.onnx_surgery import (
    CODEBOOK_OPSET,
    SPARSE_OPSET,
    insert_rebuild_nodes,
    replace_by_codebook,
    replace_by_sparse,
    set_initializer,
    split_layers,
)

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _arr(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _matmul_model(make_model, weight: np.ndarray, opset: int = 17):
    """y = x @ w, with w also a graph output so tests can read the rebuilt tensor itself."""
    k, n = weight.shape
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    return make_model(nodes, {"w": weight}, {"x": (F, [3, k])}, {"y": (F, [3, n]), "w": (F, [k, n])}, opset)


def _names(proto):
    return {t.name for t in proto.graph.initializer}


@pytest.mark.parametrize("k, size", [(256, (33, 20)), (16, (7, 5)), (3, (4, 6))])
def test_codebook_rebuilds_centroids_at_indices(make_model, run, k, size):
    """8-bit indices (k > 16) and 4-bit pairs (k <= 16, here with an odd count so the last byte is padded)."""
    centroids = np.sort(_arr(k))
    labels = RNG.integers(0, k, size=size)
    proto = _matmul_model(make_model, _arr(*size), opset=10)
    nodes = replace_by_codebook(proto, "w", centroids, labels)
    insert_rebuild_nodes(proto, nodes, CODEBOOK_OPSET)
    assert "w" not in _names(proto) and ("w__packed4" in _names(proto)) == (k <= 16)
    assert proto.opset_import[0].version == CODEBOOK_OPSET
    x = _arr(3, size[0])
    out = run(proto, {"x": x})
    want = centroids[labels]
    np.testing.assert_array_equal(out["w"], want)
    np.testing.assert_allclose(out["y"], x @ want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [8, 200])
def test_per_channel_codebook_on_matmul_output_axis(make_model, run, k):
    """A MatMul weight [in, out] clustered per output channel (axis 1): centroids [out, K], labels follow the
    weight with axis 1 moved first."""
    n_in, n_out = 12, 20
    centroids = np.sort(_arr(n_out, k), axis=1)
    labels = RNG.integers(0, k, size=(n_out, n_in))
    proto = _matmul_model(make_model, _arr(n_in, n_out))
    insert_rebuild_nodes(proto, replace_by_codebook(proto, "w", centroids, labels, channel_axis=1),
                         CODEBOOK_OPSET)
    out = run(proto, {"x": _arr(3, n_in)})
    np.testing.assert_array_equal(out["w"], np.take_along_axis(centroids, labels, axis=1).T)


@pytest.mark.parametrize("channels, k", [(10, 32), (40, 8)])
def test_per_channel_index_width_follows_k_not_the_channel_count(make_model, run, channels, k):
    """4-bit pairs exactly when each codebook has <= 16 entries: with 10 channels of 32 entries the indices
    need 8 bits (packing them in 4 rebuilt wrong weights), with 40 channels of 8 they fit in 4."""
    centroids = np.sort(_arr(channels, k), axis=1)
    labels = RNG.integers(0, k, size=(channels, 30))
    proto = _matmul_model(make_model, _arr(30, channels))
    insert_rebuild_nodes(proto, replace_by_codebook(proto, "w", centroids, labels, channel_axis=1),
                         CODEBOOK_OPSET)
    assert ("w__packed4" in _names(proto)) == (k <= 16)
    out = run(proto, {"x": _arr(3, 30)})
    np.testing.assert_array_equal(out["w"], np.take_along_axis(centroids, labels, axis=1).T)


def test_per_channel_codebook_on_conv_weight(make_model, run):
    weight = _arr(18, 2, 3, 3)  # [out, in, kh, kw]: channels first
    centroids = np.sort(_arr(18, 4), axis=1)
    labels = RNG.integers(0, 4, size=(18, 2 * 3 * 3))
    nodes = [helper.make_node("Conv", ["img", "w"], ["y"], name="conv")]
    proto = make_model(nodes, {"w": weight}, {"img": (F, [1, 2, 5, 5])},
                       {"y": (F, [1, 18, 3, 3]), "w": (F, [18, 2, 3, 3])})
    insert_rebuild_nodes(proto, replace_by_codebook(proto, "w", centroids, labels, channel_axis=0),
                         CODEBOOK_OPSET)
    out = run(proto, {"img": _arr(1, 2, 5, 5)})
    np.testing.assert_array_equal(out["w"], np.take_along_axis(centroids, labels, axis=1).reshape(weight.shape))


def test_sparse_storage_restores_the_dense_weight_exactly(make_model, run):
    weight = _arr(13, 7)  # 91 elements: the last mask byte is partly padding
    weight[RNG.random(weight.shape) < 0.6] = 0.0
    mask = weight.reshape(-1) != 0
    proto = _matmul_model(make_model, weight)
    nodes = replace_by_sparse(proto, "w", np.packbits(mask), weight.reshape(-1)[mask])
    insert_rebuild_nodes(proto, nodes, SPARSE_OPSET)
    assert "w" not in _names(proto)
    values = next(t for t in proto.graph.initializer if t.name == "w__sparse_values")
    assert values.dims[0] == mask.sum() + 1  # the nonzeros after one shared zero
    x = _arr(3, 13)
    out = run(proto, {"x": x})
    np.testing.assert_array_equal(out["w"], weight)
    np.testing.assert_allclose(out["y"], x @ weight, rtol=1e-5, atol=1e-5)


def test_rebuild_nodes_go_first_in_the_order_given(make_model, run):
    """Two weights rebuilt in one graph, codebook and sparse: the graph stays valid and both come back."""
    a, b = _arr(4, 4), _arr(4, 4)
    b[b < 0.3] = 0.0
    nodes = [helper.make_node("MatMul", ["x", "a"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "b"], ["y"], name="mm2")]
    proto = make_model(nodes, {"a": a, "b": b}, {"x": (F, [1, 4])}, {"y": (F, [1, 4])}, opset=13)
    labels = RNG.integers(0, 5, size=16)
    centroids = np.sort(_arr(5))
    mask = b.reshape(-1) != 0
    rebuild = replace_by_codebook(proto, "a", centroids, labels)
    rebuild += replace_by_sparse(proto, "b", np.packbits(mask), b.reshape(-1)[mask])
    insert_rebuild_nodes(proto, rebuild, SPARSE_OPSET)
    assert [n.name for n in proto.graph.node] == [n.name for n in rebuild] + ["mm1", "mm2"]
    assert proto.opset_import[0].version == SPARSE_OPSET
    x = _arr(1, 4)
    np.testing.assert_allclose(run(proto, {"x": x})["y"], x @ centroids[labels].reshape(4, 4) @ b,
                               rtol=1e-5, atol=1e-5)


def test_split_matmul_computes_x_a_b(make_model, run):
    a, b = _arr(6, 2), _arr(2, 5)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")]
    proto = make_model(nodes, {"w": _arr(6, 5)}, {"x": (F, [3, 6])}, {"y": (F, [3, 5])})
    split_layers(proto, [(proto.graph.node[1], a, b)])
    assert [n.op_type for n in proto.graph.node] == ["Relu", "MatMul", "MatMul"]
    assert _names(proto) == {"w__lr_a", "w__lr_b"}  # the dense weight is gone
    x = _arr(3, 6)
    np.testing.assert_allclose(run(proto, {"x": x})["y"], np.maximum(x, 0) @ a @ b, rtol=1e-5, atol=1e-5)


def _conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray, pad: int) -> np.ndarray:
    """Stride-1 NCHW convolution (cross-correlation, as ONNX Conv) in numpy."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, w.shape[2:], axis=(2, 3))  # [N, C, H, W, kh, kw]
    return np.einsum("nchwij,ocij->nohw", windows, w) + bias[None, :, None, None]


def test_split_conv_computes_kxk_then_1x1(make_model, run):
    out_ch, in_ch, rank = 6, 3, 2
    a, b, bias = _arr(out_ch, rank), _arr(rank, in_ch * 9), _arr(out_ch)
    nodes = [helper.make_node("Conv", ["img", "w", "bias"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    proto = make_model(nodes, {"w": _arr(out_ch, in_ch, 3, 3), "bias": bias}, {"img": (F, [2, in_ch, 5, 5])},
                       {"y": (F, [2, out_ch, 5, 5])})
    split_layers(proto, [(proto.graph.node[0], a, b)])
    first, second = proto.graph.node
    assert (first.op_type, second.op_type, list(second.input)[2]) == ("Conv", "Conv", "bias")
    img = _arr(2, in_ch, 5, 5)
    want = _conv2d(img, (a @ b).reshape(out_ch, in_ch, 3, 3), bias, pad=1)
    np.testing.assert_allclose(run(proto, {"img": img})["y"], want, rtol=1e-4, atol=1e-4)


def test_split_layers_refuses_other_ops_and_foreign_nodes(make_model):
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")]
    proto = make_model(nodes, {"w": _arr(4, 4)}, {"x": (F, [1, 4])}, {"y": (F, [1, 4])})
    with pytest.raises(ValueError, match="Gemm, not a MatMul or Conv"):
        split_layers(proto, [(proto.graph.node[0], _arr(4, 1), _arr(1, 4))])
    stranger = helper.make_node("MatMul", ["x", "w"], ["y"], name="elsewhere")
    with pytest.raises(ValueError, match="not one of the graph's nodes"):
        split_layers(proto, [(stranger, _arr(4, 1), _arr(1, 4))])


def test_set_initializer_swaps_values_in_place(make_model, run):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    proto = make_model(nodes, {"first": _arr(2), "w": _arr(4, 3)}, {"x": (F, [2, 4])}, {"y": (F, [2, 3])})
    pruned = _arr(4, 3) * (RNG.random((4, 3)) < 0.5)
    set_initializer(proto, "w", pruned.astype(np.float32))
    assert [t.name for t in proto.graph.initializer] == ["first", "w"]
    x = _arr(2, 4)
    np.testing.assert_allclose(run(proto, {"x": x})["y"], x @ pruned, rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="no initializer named 'missing'"):
        set_initializer(proto, "missing", pruned)
