"""Reading ONNX graphs (which nodes carry weights, which ops are quantized) plus the small generic edits the
passes share. Rewrites that build new subgraphs live next door in `onnx_surgery`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearMatMul", "QLinearConv", "QAttention", "MatMulNBits", "DynamicQuantizeMatMul", "GatherBlockQuantized",
    "QGemm", "MatMulIntegerToFloat",
})


def copy_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy: passes never edit the model they were given."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def quantized_ops(proto: onnx.ModelProto) -> list[str]:
    """Quantized op types already in the graph (a model quantized twice loses accuracy for nothing)."""
    return sorted({n.op_type for n in proto.graph.node if n.op_type in QUANTIZED_OPS})


@dataclass(frozen=True)
class WeightLayer:
    """A node that multiplies by a constant weight: what quantization and compression act on."""

    node: str
    op_type: str
    weight: str
    params: int
    shape: tuple[int, ...]
    # Where it is: the node's index in graph.node and the weight's index among the node's inputs.
    position: int
    input_index: int
    data_type: int
    # The axis of the stored weight that per-channel schemes split on: the output channels of MatMul and of
    # Gemm ([in, out], or [out, in] with transB) and of Conv ([out, in/group, k...]); axis 0 for the rest
    # (Gather's rows, Attention, and ConvTranspose, whose axis 0 is its input channels).
    channel_axis: int


# The one table of which input of an op is its weight. Every rewrite here (two-MatMul factors, per-channel
# axes, MatMulNBits) takes a MatMul's weight as its right operand, so a MatMul whose constant is its first
# input (W @ x) is not a weight layer; Gather's table (an embedding) is its first input.
_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Attention": 1, "Gather": 0, "ConvTranspose": 1}
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


def weight_layers(proto: onnx.ModelProto, op_types: set[str] | None = None) -> list[WeightLayer]:
    """Nodes whose weight input is a float (32 or 16 bit) initializer of 2+ dimensions, in graph order.

    A weight shared by several nodes is listed once per node; callers that act on tensors dedupe by `weight`.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    layers = []
    for position, node in enumerate(proto.graph.node):
        index = _WEIGHT_INPUT.get(node.op_type)
        if index is None or (op_types and node.op_type not in op_types) or len(node.input) <= index:
            continue
        tensor = inits.get(node.input[index])
        if tensor is None or tensor.data_type not in FLOAT_TYPES:
            continue
        shape = tuple(int(d) for d in tensor.dims)
        if len(shape) < 2:
            continue
        layers.append(WeightLayer(node.name, node.op_type, tensor.name, int(np.prod(shape)), shape,
                                  position=position, input_index=index, data_type=tensor.data_type,
                                  channel_axis=_channel_axis(node)))
    return layers


def _channel_axis(node: onnx.NodeProto) -> int:
    """MatMul weights (and Gemm's without transB) are stored [in, out]; the others put channels first."""
    if node.op_type == "MatMul":
        return 1
    if node.op_type == "Gemm":
        return 0 if attribute(node, "transB", 0) else 1
    return 0


def attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of one attribute of `node`, or `default` when it is not set."""
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def ensure_node_names(proto: onnx.ModelProto) -> None:
    """Give every node a unique name (quantizers select and exclude nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def gemm_to_matmul(proto: onnx.ModelProto) -> int:
    """Rewrite Gemm with a constant B as MatMul (+ Add): ONNX Runtime has integer MatMul kernels, not Gemm."""
    inits = {t.name: t for t in proto.graph.initializer}
    new_nodes = []
    rewritten = 0
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        name = f"{node.input[1]}_matmul"
        proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_mm" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], name], [mm_out], name=f"{node.name}_MatMul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                              name=f"{node.name}_Add"))
        rewritten += 1
    if rewritten:
        del proto.graph.node[:]
        proto.graph.node.extend(new_nodes)
        remove_unused_initializers(proto)
    return rewritten


def remove_unused_initializers(proto: onnx.ModelProto) -> None:
    """Drop initializers no node reads and no graph output names (left behind by rewrites)."""
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` in place so every node comes after the producers of its inputs (ONNX requires it;
    ONNX Runtime's fp16 converter appends the input casts at the end). Stable: nodes already in order keep it.
    A graph whose order cannot be resolved here (a node reading a name nothing produces) is left as it is."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    available |= {t.name for t in graph.sparse_initializer}
    pending = list(graph.node)
    needs = {id(n): set(n.input) | _outer_names(n) for n in pending}
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if needs[id(n)] <= available]
        if not ready:
            return
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for node in ready:
            ordered.append(node)
            available.update(node.output)
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _outer_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If / Loop / Scan bodies) read from the enclosing graph."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            local = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                local.update(inner.output)
            for inner in sub.node:
                names.update(n for n in list(inner.input) + list(_outer_names(inner)) if n and n not in local)
    return names
