"""slimkit.models.onnx_graph on small hand-built graphs: which nodes carry weights (and where their output
channels are), and the small generic edits, each checked by running the graph with ONNX Runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import slimkit.models.onnx_graph as onnx_graph
import slimkit.models.onnx_surgery as onnx_surgery
from slimkit.models.onnx_graph import (
    attribute,
    copy_model,
    ensure_node_names,
    gemm_to_matmul,
    quantized_ops,
    remove_unused_initializers,
    weight_layers,
)

F, H = TensorProto.FLOAT, TensorProto.FLOAT16
RNG = np.random.default_rng(0)


def _arr(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


@pytest.fixture
def zoo_graph(make_model):
    """One of each: transposed and plain Gemm, MatMul with its weight second and first, Conv, Gather, an
    fp16 MatMul, a weight shared by two MatMuls and a 1-D bias (not a weight layer)."""
    inits = {"wt": _arr(5, 6), "bt": _arr(5), "wg": _arr(5, 4), "wm": _arr(4, 3), "wf": _arr(7, 2),
             "wc": _arr(4, 2, 3, 3), "table": _arr(10, 3), "whalf": _arr(6, 3, dtype=np.float16),
             "ws": _arr(3, 3), "b3": _arr(3)}
    nodes = [
        helper.make_node("Gemm", ["x", "wt", "bt"], ["h"], name="fc_t", transB=1),
        helper.make_node("Gemm", ["h", "wg"], ["g"], name="fc"),
        helper.make_node("MatMul", ["g", "wm"], ["m"], name="mm"),
        helper.make_node("MatMul", ["wf", "x"], ["f"], name="mm_first"),
        helper.make_node("Conv", ["img", "wc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Gather", ["table", "ids"], ["e"], name="emb", axis=0),
        helper.make_node("MatMul", ["xh", "whalf"], ["hh"], name="mm_half"),
        helper.make_node("Add", ["m", "b3"], ["out"], name="bias_add"),
        helper.make_node("MatMul", ["out", "ws"], ["s1"], name="sh1"),
        helper.make_node("MatMul", ["s1", "ws"], ["s2"], name="sh2"),
    ]
    inputs = {"x": (F, [2, 6]), "img": (F, [1, 2, 5, 5]), "ids": (TensorProto.INT64, [4]), "xh": (H, [2, 6])}
    outputs = {"h": (F, [2, 5]), "g": (F, [2, 4]), "m": (F, [2, 3]), "f": (F, [7, 6]), "c": (F, [1, 4, 5, 5]),
               "e": (F, [4, 3]), "hh": (H, [2, 3]), "s1": (F, [2, 3]), "s2": (F, [2, 3])}
    feed = {"x": _arr(2, 6), "img": _arr(1, 2, 5, 5), "ids": np.array([0, 3, 9, 3]), "xh": _arr(2, 6, dtype=np.float16)}
    return make_model(nodes, inits, inputs, outputs), feed


def test_weight_layers_lists_each_weight_reader_in_graph_order(zoo_graph):
    proto, _ = zoo_graph
    layers = weight_layers(proto)
    assert [(x.node, x.op_type, x.weight, x.input_index) for x in layers] == [
        ("fc_t", "Gemm", "wt", 1), ("fc", "Gemm", "wg", 1), ("mm", "MatMul", "wm", 1), ("conv", "Conv", "wc", 1),
        ("emb", "Gather", "table", 0), ("mm_half", "MatMul", "whalf", 1), ("sh1", "MatMul", "ws", 1),
        ("sh2", "MatMul", "ws", 1)]
    # W @ x is not a weight layer: every rewrite (factor split, per-channel axis, MatMulNBits) takes the weight
    # as the right operand. Nor is the 1-D bias of the Add.
    assert "mm_first" not in {x.node for x in layers}
    for layer in layers:
        node = proto.graph.node[layer.position]
        assert node.name == layer.node and node.input[layer.input_index] == layer.weight
        assert layer.params == int(np.prod(layer.shape))
    by_node = {x.node: x for x in layers}
    assert by_node["mm_half"].data_type == TensorProto.FLOAT16
    assert by_node["fc_t"].data_type == TensorProto.FLOAT
    assert by_node["fc_t"].shape == (5, 6)


def test_weight_layers_channel_axis_is_where_the_outputs_are(zoo_graph, run):
    """The output's channel count, as ONNX Runtime computes it, is the weight's size along channel_axis."""
    proto, feed = zoo_graph
    outputs = run(proto, feed)
    out_of = {n.name: n.output[0] for n in proto.graph.node}
    checked = 0
    for layer in weight_layers(proto, {"Gemm", "MatMul", "Conv"}):
        assert outputs[out_of[layer.node]].shape[1] == layer.shape[layer.channel_axis], layer.node
        checked += 1
    assert checked == 7
    axes = {x.node: x.channel_axis for x in weight_layers(proto)}
    assert (axes["fc_t"], axes["fc"], axes["mm"], axes["conv"], axes["emb"]) == (0, 1, 1, 0, 0)


def test_weight_layers_op_types_filter(zoo_graph):
    proto, _ = zoo_graph
    assert [x.node for x in weight_layers(proto, {"Gemm"})] == ["fc_t", "fc"]
    assert [x.node for x in weight_layers(proto, {"Conv", "Gather"})] == ["conv", "emb"]
    assert weight_layers(proto, {"ConvTranspose"}) == []


def test_gemm_to_matmul_keeps_outputs(make_model, run):
    x, wt, b, w = _arr(3, 6), _arr(5, 6), _arr(5), _arr(5, 4)
    nodes = [helper.make_node("Gemm", ["x", "wt", "b"], ["h"], name="fc_t", transB=1),
             helper.make_node("Gemm", ["h", "w"], ["y"], name="fc"),
             helper.make_node("Gemm", ["h", "w"], ["z"], name="scaled", alpha=0.5)]
    proto = make_model(nodes, {"wt": wt, "b": b, "w": w}, {"x": (F, [3, 6])},
                       {"y": (F, [3, 4]), "z": (F, [3, 4])})
    assert gemm_to_matmul(proto) == 2
    assert [n.op_type for n in proto.graph.node] == ["MatMul", "Add", "MatMul", "Gemm"]  # alpha != 1 stays
    assert "wt" not in {t.name for t in proto.graph.initializer}  # replaced by its transpose
    out = run(proto, {"x": x})
    h = x @ wt.T + b
    np.testing.assert_allclose(out["y"], h @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["z"], 0.5 * (h @ w), rtol=1e-5, atol=1e-5)


def test_remove_unused_initializers_keeps_read_and_output_tensors(make_model):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    proto = make_model(nodes, {"w": _arr(2, 2), "orphan": _arr(3)}, {"x": (F, [1, 2])}, {"y": (F, [1, 2])})
    proto.graph.initializer.append(onnx.numpy_helper.from_array(_arr(2), "exported"))
    proto.graph.output.append(helper.make_tensor_value_info("exported", F, [2]))
    remove_unused_initializers(proto)
    assert [t.name for t in proto.graph.initializer] == ["w", "exported"]


def test_ensure_node_names_makes_names_unique(make_model):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Relu", ["b"], ["y"])]
    proto = make_model(nodes, {}, {"x": (F, [2])}, {"y": (F, [2])})
    ensure_node_names(proto)
    assert [n.name for n in proto.graph.node] == ["r", "Relu_1", "Relu_2"]


def test_quantized_ops_and_copy_model(make_model):
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="dq"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    proto = make_model(nodes, {"q": np.ones((2, 2), np.int8), "s": np.array(0.5, np.float32)},
                       {"x": (F, [1, 2])}, {"y": (F, [1, 2])})
    assert quantized_ops(proto) == ["DequantizeLinear"]
    copy = copy_model(proto)
    del copy.graph.node[0]
    assert len(proto.graph.node) == 2 and quantized_ops(copy) == []


def test_attribute_reads_values_and_defaults():
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=4, pads=[1, 1, 1, 1])
    assert attribute(node, "group", 1) == 4
    assert attribute(node, "pads") == [1, 1, 1, 1]
    assert attribute(node, "strides", [1, 1]) == [1, 1]


@pytest.mark.parametrize("module", [onnx_graph, onnx_surgery])
def test_model_layer_imports_nothing_above_it(module):
    """Layer rule: graph reading and surgery take protos and arrays; passes, algorithms, measurement and
    data sit above them (or beside, for algorithms) and must not be imported here."""
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    forbidden = ("slimkit.passes", "slimkit.algorithms", "slimkit.evaluate", "slimkit.data_sources")
    assert not [m for m in imported if m.startswith(forbidden)]
    assert "onnx" in imported


def test_sort_topologically_puts_producers_first_and_keeps_a_sorted_graph():
    import onnx
    from onnx import TensorProto, helper

    from slimkit.models.onnx_graph import sort_topologically

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    late = helper.make_node("Relu", ["x"], ["h"], name="first")  # appended last, like the fp16 casts
    reader = helper.make_node("Neg", ["h"], ["y"], name="second")
    graph = helper.make_graph([reader, late], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        onnx.checker.check_model(model)
        raise AssertionError("the checker should refuse the unsorted graph")
    except onnx.checker.ValidationError:
        pass
    sort_topologically(model.graph)
    assert [n.name for n in model.graph.node] == ["first", "second"]
    onnx.checker.check_model(model)
    sort_topologically(model.graph)  # already sorted: unchanged
    assert [n.name for n in model.graph.node] == ["first", "second"]
