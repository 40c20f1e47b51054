"""Checks on a foreign ONNX model before anything runs it: damage is refused with one line, not a crash later.

Mutation fuzzing (benchmarks/fuzz_models.py) showed what a damaged or hostile file does further down: a
10^9 dim allocates gigabytes, a weight whose dims disagree with its bytes makes numpy fail mid-report, a name
that is not UTF-8 breaks serialization inside a pass. `check_onnx_model` refuses these up front; ONNX's own
checker covers the rest of the format (topological order, hence cycles; opsets; attributes).

`nonfinite_weights` finds NaN / Inf weights, which are not an error (a model may mean them) but are shown by
`slimkit inspect`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import numpy as np

from slimkit.errors import SlimkitError, first_line

# A tensor (a weight, or an input at its declared fixed dims) of more elements than this is refused before
# anything allocates it: 2^31 float32 values are 8 GiB, far past any model slimkit measures on a CPU.
MAX_ELEMENTS = 2**31
# One input of more elements than this (1 GiB of float32) is refused: at its declared dims when loading a
# model, at the shape data is generated at (`slimkit.data_sources.generate_data`). A 10^9 dim is damage, not a model.
MAX_INPUT_ELEMENTS = 2**28
# ModelProto.SerializeToString (what onnx.checker does with a proto) fails past protobuf's 2 GiB limit.
_PROTO_LIMIT = 2**31 - 1
_RE_EXPORT = "the file is damaged or was not written by a working exporter; export it again"
# What the ONNX checker complains of that runtimes and exporters accept, so a model is not refused for it:
# a graph input or output of unknown rank (a value info with a type but no shape).
_TOLERATED = ("Field 'shape' of 'type' is required but missing",)


def check_onnx_model(proto: Any, source: str, path: Any = None) -> None:
    """Refuse an ONNX model that is malformed, cyclic, or declares absurd sizes, with one clear line."""
    _check_names(proto, source)
    _check_opset(proto, source)
    _check_checker(proto, source, path)
    for graph in all_graphs(proto.graph):
        for name, tensor in weight_tensors_of(graph):
            _check_tensor(name, tensor, source)
    for value in proto.graph.input:
        _check_input(value, source)


def all_graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph (If branches, Loop / Scan bodies), outermost first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from all_graphs(attr.g)
            for sub in attr.graphs:
                yield from all_graphs(sub)


def weight_tensors_of(graph: Any) -> Iterator[tuple[str, Any]]:
    """One graph's weights: initializers and Constant nodes' tensors (Paddle exports keep weights that way)."""
    for tensor in graph.initializer:
        yield _text(tensor.name), tensor
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.HasField("t"):  # a Constant's tensor is usually unnamed: it goes by its output's name
                    yield _text(attr.t.name or (node.output[0] if node.output else node.name)), attr.t


def _check_names(proto: Any, source: str) -> None:
    """Every name and op type must be text: protobuf hands back bytes for a string field that is not UTF-8."""
    for graph in all_graphs(proto.graph):
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            if not isinstance(value.name, str):
                raise SlimkitError(f"{source} is not a valid ONNX model (a value name is not UTF-8 text: "
                                   f"{value.name[:40]!r})", _RE_EXPORT)
        for node in graph.node:
            for text in (node.name, node.op_type, node.domain, *node.input, *node.output):
                if not isinstance(text, str):
                    raise SlimkitError(f"{source} is not a valid ONNX model (node '{_text(node.name)}' has a "
                                       f"name that is not UTF-8 text: {text[:40]!r})", _RE_EXPORT)


def _check_opset(proto: Any, source: str) -> None:
    """The model must say once which ai.onnx opset its standard ops follow (ONNX requires it; ONNX Runtime
    guesses without it or takes either, its quantizer raises)."""
    domains = [o.domain or "ai.onnx" for o in proto.opset_import]
    if "ai.onnx" not in domains:
        raise SlimkitError(f"{source} is not a valid ONNX model (it declares no ai.onnx opset)", _RE_EXPORT)
    twice = sorted({d for d in domains if domains.count(d) > 1})
    if twice:
        raise SlimkitError(f"{source} is not a valid ONNX model (it declares the {twice[0]} opset more than once)",
                           _RE_EXPORT)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _check_checker(proto: Any, source: str, path: Any) -> None:
    import onnx

    try:
        if proto.ByteSize() > _PROTO_LIMIT and path is not None:
            onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(proto)
    except Exception as exc:  # onnx.checker.ValidationError, or ValueError from its C++ side
        if any(text in str(exc) for text in _TOLERATED):
            return
        said = first_line(exc, 200)
        raise SlimkitError(f"{source} is not a valid ONNX model (the ONNX checker says: {said})", _RE_EXPORT) from exc


def _element_size(data_type: int) -> int | None:
    """Bytes per element of an ONNX tensor type, or None for types without a fixed size (strings)."""
    from onnx import TensorProto, helper

    if data_type == TensorProto.STRING:
        return None
    try:
        np_type = helper.tensor_dtype_to_np_dtype(data_type)
    except Exception:
        return None
    return np.dtype(np_type).itemsize


def _check_tensor(name: str, tensor: Any, source: str) -> None:
    from onnx import TensorProto

    name = name or "(unnamed)"
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise SlimkitError(f"{source}: weight '{name}' has a negative dim {dims}", _RE_EXPORT)
    count = _product(dims)
    if count > MAX_ELEMENTS:
        raise SlimkitError(f"{source}: weight '{name}' declares dims {dims} ({count:.3g} elements)",
                           _RE_EXPORT)
    if tensor.data_location == TensorProto.EXTERNAL:
        return
    if tensor.data_type not in _KNOWN_TYPES:
        raise SlimkitError(f"{source}: weight '{name}' has data type {tensor.data_type}, which ONNX does not "
                           "define", _RE_EXPORT)
    size = _element_size(tensor.data_type)
    if tensor.HasField("raw_data") and size is not None:
        want = (count + 1) // 2 if tensor.data_type in _PACKED else count * size
        if len(tensor.raw_data) != want:
            raise SlimkitError(f"{source}: weight '{name}' has {len(tensor.raw_data)} bytes of data for dims "
                               f"{dims} ({want} expected)", _RE_EXPORT)


def _product(dims: list[int]) -> int:
    count = 1
    for d in dims:
        count *= int(d)
    return count


def _check_input(value: Any, source: str) -> None:
    """A graph input's declared fixed dims must not be so large that no data for it can exist. (A negative dim
    is not refused: paddle2onnx writes -1 for a dynamic batch, and runtimes read it so.)"""
    if not value.type.HasField("tensor_type"):
        return
    dims = value.type.tensor_type.shape.dim
    fixed = [d.dim_value for d in dims if d.HasField("dim_value") and d.dim_value > 0]
    if _product(fixed) > MAX_INPUT_ELEMENTS:
        raise SlimkitError(f"{source}: input '{value.name}' declares dims {fixed} ({_product(fixed):.3g} "
                           f"elements at batch 1, over the {MAX_INPUT_ELEMENTS:.3g} slimkit allocates)", _RE_EXPORT)


def _known_types() -> frozenset[int]:
    from onnx import TensorProto

    return frozenset(v for k, v in TensorProto.DataType.items() if k != "UNDEFINED")


def _packed_types() -> frozenset[int]:
    from onnx import TensorProto

    names = ("INT4", "UINT4", "FLOAT4E2M1")
    return frozenset(getattr(TensorProto, n) for n in names if hasattr(TensorProto, n))


_KNOWN_TYPES = _known_types()
_PACKED = _packed_types()


def nonfinite_weights(proto: Any, limit: int = 5, only: Collection[str] | None = None) -> dict[str, Any] | None:
    """NaN / Inf in a model's float weights (those named in `only`, when given): {"tensors": how many hold
    any, "values": how many values, "names": the first `limit` such tensors' names}; None when all are finite."""
    from onnx import numpy_helper

    tensors, values, names = 0, 0, []
    for graph in all_graphs(proto.graph):
        for name, tensor in weight_tensors_of(graph):
            if tensor.data_type not in _FLOAT_TYPES or tensor.data_location == 1:
                continue
            if only is not None and name not in only:
                continue
            try:
                array = numpy_helper.to_array(tensor)
            except Exception:  # unreadable weights are refused at load; nothing to count here
                continue
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                tensors += 1
                values += bad
                if len(names) < limit:
                    names.append(name)
    return {"tensors": tensors, "values": values, "names": names} if tensors else None


def refuse_nonfinite_weights(proto: Any, what: str, only: Collection[str] | None = None) -> None:
    """Refuse to `what` (e.g. "quantize") weights holding NaN or Inf: a scale computed from them is NaN, and
    ONNX Runtime's quantizer stops on an assertion ("scale issue") rather than saying which weight."""
    found = nonfinite_weights(proto, only=only)
    if found:
        raise SlimkitError(f"cannot {what}: {found['tensors']} weight tensor(s) hold NaN or Inf values "
                           f"({', '.join(found['names'])})", "fix or retrain the model; slimkit inspect lists them")


def _float_types() -> frozenset[int]:
    from onnx import TensorProto

    return frozenset((TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16))


_FLOAT_TYPES = _float_types()
