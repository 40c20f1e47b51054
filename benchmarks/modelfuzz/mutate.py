"""Seeded mutants of an ONNX model file: byte-level damage to the serialized file, graph-level damage to its proto.

A mutant is named by (model, seed, kind) and is the same bytes every time: `mutate(data, kind, seed)` draws every
choice from `numpy.random.default_rng(seed)`. `kind_for(seed)` spreads the seeds over KINDS round-robin, so a
run of N seeds exercises every kind about N / len(KINDS) times.

Byte-level offsets land half the time in the file's structure (graph, nodes, names, shapes) and half the time
anywhere, weights included: uniform offsets in a 69 MB transformer would almost only hit weight bytes, which
the NaN-weight mutations cover already.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BYTE_KINDS = ("truncate", "flip", "zero", "garbage", "duplicate")
GRAPH_KINDS = (
    "drop-initializer", "bad-dims", "bad-dtype", "rename-input", "unknown-op", "drop-node", "cycle",
    "bad-opset", "nan-weights", "empty-graph", "duplicate-output",
)
KINDS = BYTE_KINDS + GRAPH_KINDS

# Dims a graph can declare that no runtime should try to allocate (10^9 is the example).
HUGE_DIMS = (10**9, 2**31 - 1, 2**31, 2**40, 2**62)
BAD_DIMS = (-1, -7, 0, *HUGE_DIMS)
# Element types: undefined, string, complex, an unassigned number, and types that exist but fit nowhere here.
BAD_DTYPES = (0, TensorProto.STRING, TensorProto.COMPLEX64, 99, 12345, TensorProto.BFLOAT16, TensorProto.BOOL,
              TensorProto.FLOAT16, TensorProto.UINT64, TensorProto.INT4)


def kind_for(seed: int) -> str:
    """The mutation kind of seed `seed` (round-robin over KINDS)."""
    return KINDS[seed % len(KINDS)]


def mutant_name(model: str, seed: int, kind: str) -> str:
    return f"{model}-s{seed}-{kind}"


def mutate(data: bytes, kind: str, seed: int) -> bytes:
    """The serialized mutant of the ONNX file `data`: mutation `kind`, every random choice from `seed`."""
    rng = np.random.default_rng(seed)
    if kind in BYTE_KINDS:
        return BYTE_MUTATIONS[kind](bytearray(data), rng, _structure_spans(data))
    if kind in GRAPH_KINDS:
        model = onnx.load_from_string(data)
        GRAPH_MUTATIONS[kind](model, rng)
        return model.SerializeToString()
    raise ValueError(f"unknown mutation kind {kind!r}; choose from {', '.join(KINDS)}")


# ---- byte level ----


def _structure_spans(data: bytes) -> list[tuple[int, int]]:
    """[start, end) byte ranges of the file that are not large raw weight payloads."""
    try:
        model = onnx.load_from_string(data)
    except Exception:
        return [(0, len(data))]
    payloads = []
    for tensor in _weight_tensors(model.graph):
        raw = tensor.raw_data
        if len(raw) >= 256:
            at = data.find(raw[:64])
            if at >= 0:
                payloads.append((at, at + len(raw)))
    spans, cursor = [], 0
    for start, end in sorted(payloads):
        if start > cursor:
            spans.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < len(data):
        spans.append((cursor, len(data)))
    return spans or [(0, len(data))]


def _offset(rng: np.random.Generator, size: int, spans: list[tuple[int, int]]) -> int:
    """A byte offset: half the time in the structure spans, else anywhere in the file."""
    if size <= 1:
        return 0
    if rng.random() < 0.5:
        lengths = np.array([end - start for start, end in spans], dtype=np.float64)
        start, end = spans[int(rng.choice(len(spans), p=lengths / lengths.sum()))]
        return int(rng.integers(start, max(start + 1, end)))
    return int(rng.integers(0, size))


def _truncate(buf: bytearray, rng, spans) -> bytes:
    return bytes(buf[: _offset(rng, len(buf), spans)])


def _flip(buf: bytearray, rng, spans) -> bytes:
    for _ in range(int(rng.integers(1, 9))):
        at = _offset(rng, len(buf), spans)
        buf[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _zero(buf: bytearray, rng, spans) -> bytes:
    at = _offset(rng, len(buf), spans)
    length = int(rng.choice([1, 2, 4, 8, 16, 64, 256]))
    buf[at: at + length] = bytes(len(buf[at: at + length]))
    return bytes(buf)


def _garbage(buf: bytearray, rng, spans) -> bytes:
    at = _offset(rng, len(buf), spans)
    length = int(rng.choice([1, 3, 8, 32, 128, 1024]))
    junk = rng.integers(0, 256, size=length, dtype=np.uint8).tobytes()
    if rng.random() < 0.3:  # insert rather than overwrite: every later field shifts
        buf[at:at] = junk
    else:
        buf[at: at + length] = junk
    return bytes(buf)


def _duplicate(buf: bytearray, rng, spans) -> bytes:
    """Copy a chunk of the file and insert it elsewhere (repeated protobuf fields then repeat: nodes, inputs)."""
    start = _offset(rng, len(buf), spans)
    length = int(rng.choice([4, 16, 64, 512, 4096]))
    chunk = bytes(buf[start: start + length])
    at = _offset(rng, len(buf), spans)
    buf[at:at] = chunk
    return bytes(buf)


BYTE_MUTATIONS: dict[str, Callable] = {
    "truncate": _truncate, "flip": _flip, "zero": _zero, "garbage": _garbage, "duplicate": _duplicate,
}


# ---- graph level ----


def _all_graphs(graph: onnx.GraphProto):
    """The graph and every subgraph (If branches, Loop bodies), outermost first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attr.g)
            for sub in attr.graphs:
                yield from _all_graphs(sub)


def _weight_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Initializers and Constant nodes' tensors, subgraphs included (Paddle exports keep weights in Constants)."""
    found = []
    for g in _all_graphs(graph):
        found.extend(g.initializer)
        for node in g.node:
            if node.op_type == "Constant":
                found.extend(a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    return found


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(0, len(items)))] if items else None


def _pick_graph(model: onnx.ModelProto, rng) -> onnx.GraphProto:
    """The main graph most of the time, else a subgraph (an If branch) when there is one."""
    graphs = list(_all_graphs(model.graph))
    return graphs[0] if len(graphs) == 1 or rng.random() < 0.7 else _pick(rng, graphs[1:])


def _drop_initializer(model, rng) -> None:
    """Remove a weight: an initializer, or a Constant node where the exporter keeps weights that way."""
    graph = _pick_graph(model, rng)
    if graph.initializer and (rng.random() < 0.7 or not any(n.op_type == "Constant" for n in graph.node)):
        del graph.initializer[int(rng.integers(0, len(graph.initializer)))]
        return
    constants = [i for i, n in enumerate(graph.node) if n.op_type == "Constant"]
    if constants:
        del graph.node[_pick(rng, constants)]
    elif model.graph.initializer:
        del model.graph.initializer[int(rng.integers(0, len(model.graph.initializer)))]


def _set_dim(value_info: onnx.ValueInfoProto, rng, bad: int) -> None:
    dims = value_info.type.tensor_type.shape.dim
    if not dims:
        value_info.type.tensor_type.shape.dim.add().dim_value = bad
        return
    dim = dims[int(rng.integers(0, len(dims)))]
    dim.dim_value = bad  # negative values are set too: protobuf int64 takes them, the checker should not


def _bad_dims(model, rng) -> None:
    """A bad or absurd (10^9 and beyond) dim in an input, an output, a weight's dims or a shape-giving constant."""
    bad = int(_pick(rng, BAD_DIMS))
    where = _pick(rng, ("input", "input", "output", "weight", "shape-constant", "value-info"))
    graph = model.graph
    if where == "input" and graph.input:
        _set_dim(_pick(rng, graph.input), rng, bad)
    elif where == "output" and graph.output:
        _set_dim(_pick(rng, graph.output), rng, bad)
    elif where == "value-info" and graph.value_info:
        _set_dim(_pick(rng, graph.value_info), rng, bad)
    elif where == "shape-constant" and _shape_constants(graph):
        tensor = _pick(rng, _shape_constants(graph))
        values = numpy_helper.to_array(tensor).astype(np.int64).copy()
        if values.size:
            values.flat[int(rng.integers(0, values.size))] = bad
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    else:
        weights = [t for t in _weight_tensors(graph) if len(t.dims)]
        tensor = _pick(rng, weights)
        if tensor is not None:
            tensor.dims[int(rng.integers(0, len(tensor.dims)))] = bad
        elif graph.input:
            _set_dim(_pick(rng, graph.input), rng, bad)


def _shape_constants(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """int64 tensors that feed a shape: Reshape / Expand / ConstantOfShape / Tile / Slice inputs (by name)."""
    shape_inputs = {name for n in graph.node if n.op_type in ("Reshape", "Expand", "ConstantOfShape", "Tile", "Slice",
                                                                "Pad", "Unsqueeze", "Resize")
                    for name in n.input[1:]} | {n.input[0] for n in graph.node if n.op_type == "ConstantOfShape"}
    found = [t for t in graph.initializer if t.name in shape_inputs and t.data_type == TensorProto.INT64]
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in shape_inputs:
            found.extend(a.t for a in node.attribute
                         if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.INT64)
    return found


def _bad_dtype(model, rng) -> None:
    """A wrong element type on an input, an output, a weight or a Cast's target."""
    dtype = int(_pick(rng, BAD_DTYPES))
    graph = model.graph
    where = _pick(rng, ("input", "output", "weight", "cast"))
    casts = [n for g in _all_graphs(graph) for n in g.node if n.op_type == "Cast"]
    if where == "input" and graph.input:
        _pick(rng, graph.input).type.tensor_type.elem_type = dtype
    elif where == "output" and graph.output:
        _pick(rng, graph.output).type.tensor_type.elem_type = dtype
    elif where == "cast" and casts:
        for attr in _pick(rng, casts).attribute:
            if attr.name == "to":
                attr.i = dtype
    else:
        tensor = _pick(rng, _weight_tensors(graph))
        if tensor is not None:
            tensor.data_type = dtype
        elif graph.input:
            graph.input[0].type.tensor_type.elem_type = dtype


def _rename_input(model, rng) -> None:
    """Rename a graph input without renaming its uses (or to a clash, an empty or an odd name)."""
    graph = model.graph
    if not graph.input:
        return
    value = _pick(rng, graph.input)
    others = [v.name for v in list(graph.input) + list(graph.output) if v.name != value.name]
    value.name = str(_pick(rng, ["", "renamed_input", "x\u00e9\u4e2d\U0001f600", "a/b:0", " ", "x" * 5000,
                                 *(others[:1] or ["dup"])]))


def _unknown_op(model, rng) -> None:
    """A node whose op does not exist (or lives in a domain nothing implements)."""
    graph = _pick_graph(model, rng)
    node = _pick(rng, graph.node)
    if node is None:
        return
    choice = rng.random()
    if choice < 0.5:
        node.op_type = str(_pick(rng, ["FooBar", "Conv2D", "", "LSTMX", "If_"]))
    else:
        node.domain = str(_pick(rng, ["com.unknown", "ai.onnx.ml", "com.microsoft", "org.pytorch.aten"]))


def _drop_node(model, rng) -> None:
    graph = _pick_graph(model, rng)
    if graph.node:
        del graph.node[int(rng.integers(0, len(graph.node)))]


def _cycle(model, rng) -> None:
    """Feed a node from its own output or a later node's output: a cycle in the graph."""
    graph = _pick_graph(model, rng)
    nodes = [n for n in graph.node if n.input and n.output]
    if not nodes:
        return
    index = int(rng.integers(0, len(nodes)))
    node = nodes[index]
    later = [o for n in nodes[index:] for o in n.output if o]
    source = _pick(rng, later) if rng.random() < 0.7 else node.output[0]
    slot = int(rng.integers(0, len(node.input)))
    node.input[slot] = source


def _bad_opset(model, rng) -> None:
    """An opset the model was not made for: too old, from the future, missing, or its domain duplicated."""
    choice = _pick(rng, ("old", "future", "absurd", "missing", "duplicate", "negative"))
    main = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if choice == "missing" or main is None:
        kept = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    elif choice == "duplicate":
        model.opset_import.add().CopyFrom(helper.make_opsetid("", int(rng.integers(1, 30))))
    else:
        main.version = {"old": int(rng.integers(1, 7)), "future": int(rng.integers(25, 100)),
                        "absurd": 10**12, "negative": -1}[choice]


def _nan_weights(model, rng) -> None:
    """NaN or Inf in a float weight: one element, a slice, or the whole tensor."""
    floats = [t for t in _weight_tensors(model.graph)
              if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE) and _count(t) > 0]
    tensor = _pick(rng, floats)
    if tensor is None:
        return
    values = numpy_helper.to_array(tensor).copy()
    bad = _pick(rng, (np.nan, np.inf, -np.inf))
    how = rng.random()
    flat = values.reshape(-1)
    if how < 0.5:
        flat[int(rng.integers(0, flat.size))] = bad
    elif how < 0.8:
        flat[: max(1, flat.size // 10)] = bad
    else:
        flat[:] = bad
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def _count(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims)) if len(tensor.dims) else 1


def _empty_graph(model, rng) -> None:
    """No nodes; or no nodes and no outputs; or nothing at all."""
    graph = model.graph
    del graph.node[:]
    choice = rng.random()
    if choice < 0.4:
        del graph.output[:]
    elif choice < 0.7:
        del graph.output[:]
        del graph.input[:]
        del graph.initializer[:]
        del graph.value_info[:]


def _duplicate_output(model, rng) -> None:
    """An output listed twice, or two outputs with one name."""
    graph = model.graph
    if not graph.output:
        return
    chosen = _pick(rng, graph.output)
    if rng.random() < 0.6 or len(graph.output) == 1:
        graph.output.add().CopyFrom(chosen)
    else:
        other = _pick(rng, [o for o in graph.output if o is not chosen])
        other.name = chosen.name


GRAPH_MUTATIONS: dict[str, Callable] = {
    "drop-initializer": _drop_initializer, "bad-dims": _bad_dims, "bad-dtype": _bad_dtype,
    "rename-input": _rename_input, "unknown-op": _unknown_op, "drop-node": _drop_node, "cycle": _cycle,
    "bad-opset": _bad_opset, "nan-weights": _nan_weights, "empty-graph": _empty_graph,
    "duplicate-output": _duplicate_output,
}
