"""ONNX graph surgery: the rewrites the compression passes make, given the arrays they computed.

Passes decide (which weights, which centroids, what rank) with `slimkit.algorithms`; the functions here only
edit the graph, so they take protos and numpy arrays and know nothing of configs or data. Two kinds:

- Stored forms rebuilt at load. A weight initializer is replaced by smaller constants (a codebook and its
  indices, or a bit mask and the nonzero values) plus nodes that rebuild the dense tensor under the same name.
  Every input of those nodes is constant, so ONNX Runtime and OpenVINO fold them once at session start: the
  file shrinks and inference costs nothing extra. `replace_by_codebook` / `replace_by_sparse` make the
  constants and return the nodes; `insert_rebuild_nodes` puts them in front of the graph.
- Layer rewrites. `split_layers` turns a MatMul or a Conv into two smaller ones (low-rank factors), and
  `set_initializer` swaps a weight's values in place (pruning).

Bits and indices are unpacked with integer Div/Mul/Sub on int32, which every runtime implements the same
way (OpenVINO's BitShift on uint8 gave wrong values).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slimkit.models.onnx_graph import remove_unused_initializers

# Lowest default-domain opsets the rebuild nodes need: GatherElements (11); CumSum on int32 and Reshape with -1
# as the sparse rebuild uses them (14).
CODEBOOK_OPSET = 11
SPARSE_OPSET = 14


def replace_by_codebook(proto: onnx.ModelProto, name: str, centroids: np.ndarray, labels: np.ndarray,
                        channel_axis: int | None = None) -> list[onnx.NodeProto]:
    """Replace initializer `name` by a codebook and its indices; return the nodes that rebuild it.

    Per tensor: `centroids` is [K] and `labels` (any shape, C order) index it. Per channel (`channel_axis`
    set): `centroids` is [C, K] and `labels` follow the weight with that axis moved first; the values come
    from GatherElements and are moved back with a Transpose. K <= 16 stores two 4-bit indices per byte (the
    first index in the high nibble); otherwise one uint8 per index.
    """
    original = _initializer(proto, name)
    nodes = codebook_subgraph(proto, name, tuple(int(d) for d in original.dims),
                              np.asarray(centroids, np.float32), labels, channel_axis)
    proto.graph.initializer.remove(original)
    return nodes


def codebook_subgraph(proto: onnx.ModelProto, name: str, shape: tuple[int, ...], centroids: np.ndarray,
                      labels: np.ndarray, channel_axis: int | None = None) -> list[onnx.NodeProto]:
    """Add the codebook + index initializers for `name` (of `shape`) and return the nodes that rebuild it."""
    n = int(np.prod(shape))
    labels = labels.reshape(-1).astype(np.uint8)
    k = centroids.shape[-1]  # entries per codebook: per channel, len(centroids) would count the channels
    nodes = []
    book = f"{name}__codebook"
    proto.graph.initializer.append(numpy_helper.from_array(centroids, book))
    if k <= 16:
        padded = np.concatenate([labels, np.zeros(n % 2, np.uint8)])
        packed = (padded[0::2] << 4) | padded[1::2]
        proto.graph.initializer.extend([
            numpy_helper.from_array(packed.astype(np.uint8), f"{name}__packed4"),
            numpy_helper.from_array(np.array([16], np.int32), f"{name}__sixteen"),
            numpy_helper.from_array(np.array([-1, 1], np.int64), f"{name}__col"),
            numpy_helper.from_array(np.array([-1], np.int64), f"{name}__flat"),
            numpy_helper.from_array(np.array([0], np.int64), f"{name}__start"),
            numpy_helper.from_array(np.array([n], np.int64), f"{name}__end"),
        ])
        p = f"{name}__"
        nodes += [
            helper.make_node("Cast", [p + "packed4"], [p + "packed32"], to=onnx.TensorProto.INT32),
            helper.make_node("Div", [p + "packed32", p + "sixteen"], [p + "hi"]),
            helper.make_node("Mul", [p + "hi", p + "sixteen"], [p + "hi16"]),
            helper.make_node("Sub", [p + "packed32", p + "hi16"], [p + "lo"]),
            helper.make_node("Reshape", [p + "hi", p + "col"], [p + "hi_col"]),
            helper.make_node("Reshape", [p + "lo", p + "col"], [p + "lo_col"]),
            helper.make_node("Concat", [p + "hi_col", p + "lo_col"], [p + "pairs"], axis=1),
            helper.make_node("Reshape", [p + "pairs", p + "flat"], [p + "all"]),
            helper.make_node("Slice", [p + "all", p + "start", p + "end"], [p + "idx32"]),
        ]
        index = p + "idx32"
    else:
        proto.graph.initializer.append(numpy_helper.from_array(labels, f"{name}__indices"))
        nodes.append(helper.make_node("Cast", [f"{name}__indices"], [f"{name}__idx32"], to=onnx.TensorProto.INT32))
        index = f"{name}__idx32"
    if channel_axis is None:
        shape_name = f"{name}__shape"
        proto.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), shape_name))
        nodes += [
            helper.make_node("Gather", [book, index], [f"{name}__values"], axis=0),
            helper.make_node("Reshape", [f"{name}__values", shape_name], [name]),
        ]
    else:
        moved = (shape[channel_axis],) + tuple(d for i, d in enumerate(shape) if i != channel_axis)
        perm = list(range(1, len(shape)))
        perm.insert(channel_axis, 0)  # inverse of moving channel_axis to the front
        proto.graph.initializer.extend([
            numpy_helper.from_array(np.array([moved[0], -1], np.int64), f"{name}__rows"),
            numpy_helper.from_array(np.array(moved, np.int64), f"{name}__moved"),
        ])
        nodes += [
            helper.make_node("Reshape", [index, f"{name}__rows"], [f"{name}__idx2d"]),
            helper.make_node("GatherElements", [book, f"{name}__idx2d"], [f"{name}__values"], axis=1),
            helper.make_node("Reshape", [f"{name}__values", f"{name}__moved"], [f"{name}__moved_w"]),
            helper.make_node("Transpose", [f"{name}__moved_w"], [name], perm=perm),
        ]
    for i, node in enumerate(nodes):
        node.name = f"{name}__cluster_{i}"
    return nodes


def replace_by_sparse(proto: onnx.ModelProto, name: str, bits: np.ndarray, values: np.ndarray
                      ) -> list[onnx.NodeProto]:
    """Replace initializer `name` by a bit mask and its nonzero values; return the nodes that rebuild it.

    `bits` is the keep-mask packed 8 per byte, first element in the high bit (np.packbits order); `values`
    are the kept elements in C order. Position i of the rebuilt tensor is [0, values...][cumsum(mask)[i]],
    with pruned positions indexing the 0.
    """
    original = _initializer(proto, name)
    shape = tuple(int(d) for d in original.dims)
    size = int(np.prod(shape))
    p = f"{name}__sparse_"
    proto.graph.initializer.extend([
        numpy_helper.from_array(np.asarray(bits, np.uint8), p + "bits"),
        numpy_helper.from_array(np.concatenate([[0.0], np.asarray(values).reshape(-1)]).astype(np.float32),
                                p + "values"),
        numpy_helper.from_array(np.array([[128, 64, 32, 16, 8, 4, 2, 1]], np.int32), p + "pow2"),
        numpy_helper.from_array(np.array([2], np.int32), p + "two"),
        numpy_helper.from_array(np.array([-1], np.int64), p + "flat"),
        numpy_helper.from_array(np.array([0], np.int64), p + "start"),
        numpy_helper.from_array(np.array([size], np.int64), p + "end"),
        numpy_helper.from_array(np.array(0, np.int32), p + "axis"),
        numpy_helper.from_array(np.array(shape, np.int64), p + "shape"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), p + "col"),
    ])
    nodes = [
        helper.make_node("Cast", [p + "bits"], [p + "bytes"], to=onnx.TensorProto.INT32),
        helper.make_node("Reshape", [p + "bytes", p + "col"], [p + "bytes_col"]),
        helper.make_node("Div", [p + "bytes_col", p + "pow2"], [p + "shifted"]),       # [n/8, 8]
        helper.make_node("Div", [p + "shifted", p + "two"], [p + "half"]),
        helper.make_node("Mul", [p + "half", p + "two"], [p + "even"]),
        helper.make_node("Sub", [p + "shifted", p + "even"], [p + "bit2d"]),            # 0 / 1
        helper.make_node("Reshape", [p + "bit2d", p + "flat"], [p + "bit_all"]),
        helper.make_node("Slice", [p + "bit_all", p + "start", p + "end"], [p + "bit"]),
        helper.make_node("CumSum", [p + "bit", p + "axis"], [p + "rank"]),
        helper.make_node("Mul", [p + "rank", p + "bit"], [p + "index"]),               # 0 where pruned
        helper.make_node("Gather", [p + "values", p + "index"], [p + "dense"], axis=0),
        helper.make_node("Reshape", [p + "dense", p + "shape"], [name]),
    ]
    for i, node in enumerate(nodes):
        node.name = f"{p}{i}"
    proto.graph.initializer.remove(original)
    return nodes


def insert_rebuild_nodes(proto: onnx.ModelProto, nodes: Sequence[onnx.NodeProto], min_opset: int) -> None:
    """Put the rebuild nodes in front of the graph (in the order given), so they run before any reader of
    the tensors they rebuild; raise the opset to what they need and drop initializers nothing reads now."""
    for node in reversed(nodes):
        proto.graph.node.insert(0, node)
    ensure_opset(proto, min_opset)
    remove_unused_initializers(proto)


def split_layers(proto: onnx.ModelProto, factors: Sequence[tuple[onnx.NodeProto, np.ndarray, np.ndarray]]
                 ) -> None:
    """Replace each (node, A, B) by two nodes computing with the low-rank factors W ≈ A @ B.

    `node` is one of `proto.graph.node` with its weight at input 1. MatMul (W [K, N]): X @ W becomes
    (X @ A) @ B with A [K, r], B [r, N]. Conv (W [O, I, kh, kw], group 1, W reshaped [O, I*kh*kw] for the
    factoring): a k×k Conv with r filters (B) and the node's attributes, then a 1×1 Conv (A) with the bias.
    The replaced weights are dropped once nothing reads them.
    """
    replacements: dict[int, list[onnx.NodeProto]] = {}
    for node, a, b in factors:
        if node.op_type == "MatMul":
            replacements[id(node)] = _split_matmul(proto, node, a, b)
        elif node.op_type == "Conv":
            replacements[id(node)] = _split_conv(proto, node, a, b)
        else:
            raise ValueError(f"split_layers: node '{node.name}' is a {node.op_type}, not a MatMul or Conv")
    new_nodes = []
    for node in proto.graph.node:
        new_nodes.extend(replacements.pop(id(node), [node]))
    if replacements:
        raise ValueError("split_layers: a node to split is not one of the graph's nodes")
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    remove_unused_initializers(proto)


def _split_matmul(proto: onnx.ModelProto, node: onnx.NodeProto, a: np.ndarray, b: np.ndarray
                  ) -> list[onnx.NodeProto]:
    w = node.input[1]
    proto.graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(a, np.float32), f"{w}__lr_a"),
                                    numpy_helper.from_array(np.ascontiguousarray(b, np.float32), f"{w}__lr_b")])
    mid = f"{node.output[0]}__lr_mid"
    return [helper.make_node("MatMul", [node.input[0], f"{w}__lr_a"], [mid], name=f"{node.name}__lr1"),
            helper.make_node("MatMul", [mid, f"{w}__lr_b"], list(node.output), name=f"{node.name}__lr2")]


def _split_conv(proto: onnx.ModelProto, node: onnx.NodeProto, a: np.ndarray, b: np.ndarray
                ) -> list[onnx.NodeProto]:
    w = node.input[1]
    out_ch, in_ch, kh, kw = (int(d) for d in _initializer(proto, w).dims)
    rank = a.shape[1]
    first = b.reshape(rank, in_ch, kh, kw).astype(np.float32)
    second = a.reshape(out_ch, rank, 1, 1).astype(np.float32)
    proto.graph.initializer.extend([numpy_helper.from_array(first, f"{w}__lr_kxk"),
                                    numpy_helper.from_array(second, f"{w}__lr_1x1")])
    mid = f"{node.output[0]}__lr_mid"
    conv1 = helper.make_node("Conv", [node.input[0], f"{w}__lr_kxk"], [mid], name=f"{node.name}__lr1")
    conv1.attribute.extend(node.attribute)
    inputs2 = [mid, f"{w}__lr_1x1"] + ([node.input[2]] if len(node.input) > 2 and node.input[2] else [])
    conv2 = helper.make_node("Conv", inputs2, list(node.output), name=f"{node.name}__lr2", kernel_shape=[1, 1])
    return [conv1, conv2]


def set_initializer(proto: onnx.ModelProto, name: str, values: np.ndarray) -> None:
    """Give initializer `name` new values (same name, same place in the graph)."""
    _initializer(proto, name).CopyFrom(numpy_helper.from_array(values, name))


def ensure_opset(proto: onnx.ModelProto, minimum: int) -> None:
    """Raise the default-domain opset to at least `minimum` (the nodes added need it)."""
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < minimum:
            opset.version = minimum


def _initializer(proto: onnx.ModelProto, name: str) -> onnx.TensorProto:
    for tensor in proto.graph.initializer:
        if tensor.name == name:
            return tensor
    raise KeyError(f"no initializer named '{name}' in the graph")
