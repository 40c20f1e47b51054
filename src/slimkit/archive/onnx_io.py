"""ONNX model <-> `.slim` archive: initializers go through the tensor codec, the rest of the graph is the
structure blob (the serialized ModelProto with those initializers' data stripped).

Initializers whose ONNX type has no plain numpy dtype (bfloat16, float8, int4, strings) keep their data
inside the structure blob, as do initializers of subgraphs and Constant nodes: the archive stays exact,
they are just not compressed by the codec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimkit.archive.codec import SUPPORTED_DTYPES
from slimkit.archive.container import read_archive, write_archive
from slimkit.errors import SlimkitError

STRUCTURE_KIND = "onnx"
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                "string_data")


def _codec_dtype(tensor) -> np.dtype | None:
    from onnx import helper

    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, TypeError, ValueError):
        return None
    return dt if dt.name in SUPPORTED_DTYPES else None


def _has_data(tensor) -> bool:
    return bool(tensor.raw_data) or any(len(getattr(tensor, f)) for f in _DATA_FIELDS[1:])


def save_onnx_archive(model, path: str | Path, metadata: dict | None = None) -> dict:
    """Write `model` (an in-memory onnx.ModelProto) as a .slim archive; returns the archive statistics."""
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        raise SlimkitError(f"save_onnx_archive needs an onnx.ModelProto, got {type(model).__name__}",
                           "load the model with onnx.load(path) first")
    structure = onnx.ModelProto()
    structure.CopyFrom(model)
    tensors: dict[str, np.ndarray] = {}
    for init in structure.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise SlimkitError(
                f"initializer '{init.name}' keeps its data in an external file",
                "load the model with onnx.load(path) (which reads external data into memory) and pass that",
            )
        dt = _codec_dtype(init)
        if dt is None or init.name in tensors:
            continue
        tensors[init.name] = numpy_helper.to_array(init).astype(dt, copy=False)
        for name in _DATA_FIELDS:
            init.ClearField(name)
    return write_archive(path, tensors, structure=structure.SerializeToString(), structure_kind=STRUCTURE_KIND,
                         metadata=metadata)


def load_onnx_archive(path: str | Path):
    """Read a .slim archive written by `save_onnx_archive` back into an onnx.ModelProto, bit-exact."""
    import onnx

    archive = read_archive(path)
    if archive.structure_kind != STRUCTURE_KIND:
        raise SlimkitError(f"{path} holds a '{archive.structure_kind}' model, not an ONNX model",
                           "load it with the matching loader (load_torch_archive for PyTorch state dicts)")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(archive.structure)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise SlimkitError(f"{path} is not a valid .slim archive: its ONNX graph does not parse ({exc})",
                           "re-create the archive") from exc
    for init in model.graph.initializer:
        array = archive.tensors.get(init.name)
        if array is None or _has_data(init):
            continue
        if tuple(init.dims) != array.shape or _codec_dtype(init) != array.dtype:
            raise SlimkitError(
                f"{path} is not a valid .slim archive: tensor '{init.name}' is {array.dtype}{list(array.shape)} "
                f"but the graph expects {_codec_dtype(init)}{list(init.dims)}", "re-create the archive")
        init.raw_data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return model
