"""Model envelopes: a model plus what passes, runners and reports need to know about it.

`TorchModel` and `OnnxModel` are the working kinds that passes transform. `OpenVinoModel` and
the formats in `slimkit.formats` (TFLite's `TfliteModel`) are deployment artifacts: conversion passes produce them, runners measure them.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import SlimkitError


class ModelKind(enum.StrEnum):
    TORCH = "torch"
    ONNX = "onnx"
    OPENVINO = "openvino"
    SLIM = "slim"


Dim = int | str | None  # a fixed size, a symbolic name ("batch", "sequence"), or unknown


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, numpy dtype name and shape (symbolic dims allowed)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)

    def describe(self) -> str:
        dims = "x".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass
class WorkingModel:
    """Fields every kind has. `task` is 'classification', 'embedding' or None (unknown)."""

    source: str = ""
    task: str | None = None
    tokenizer_dir: Path | None = None
    # Tokens a text model takes at most (learned position embeddings); None when unknown or unlimited.
    max_positions: int | None = None

    # A ModelKind for the built-in kinds; a format module may add its own kind as a plain string (formats/tflite.py).
    kind: str = ModelKind.TORCH  # overridden by subclasses

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # @dataclass would give every subclass a field-by-field repr (whole example tensors, ONNX protos);
        # one it finds already set is kept, so each kind gets the short one below unless it defines its own.
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = WorkingModel.__repr__

    def __repr__(self) -> str:
        """One short line: kind, source, task, inputs (name: dtype[shape]), parameters, file; never tensor values."""
        parts = [f"source={_clip(self.source, 48)!r}", f"task={self.task!r}"]
        for name, value in _repr_details(self):
            parts.append(f"{name}={value}")
        text = f"{type(self).__name__}({', '.join(parts)})"
        return text if len(text) <= 300 else text[:296] + "...)"

    def files(self) -> list[Path]:
        return []

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files() if p.exists())

    def carry_over(self, other: WorkingModel) -> None:
        """Copy the kind-independent facts (task, tokenizer, source, position limit) onto a converted model."""
        self.source = other.source
        self.task = other.task
        self.tokenizer_dir = other.tokenizer_dir
        self.max_positions = other.max_positions


@dataclass
class TorchModel(WorkingModel):
    """An `nn.Module` with named inputs and example inputs (used for export and sample data)."""

    module: Any = None
    input_specs: list[InputSpec] = field(default_factory=list)
    example_inputs: dict[str, Any] = field(default_factory=dict)
    output_names: list[str] = field(default_factory=lambda: ["output"])
    source_files: list[Path] = field(default_factory=list)
    # Set by the Keras loader: the module wraps a Keras model (torch backend), whose layers are not torch
    # Conv/Linear modules. The version of Keras that loaded it.
    keras_version: str | None = None
    # Set by to-keras: the .keras file holding exactly this module's weights, shipped beside the artifact.
    keras_file: Path | None = None
    kind: ModelKind = ModelKind.TORCH

    def files(self) -> list[Path]:
        return list(self.source_files)

    def size_bytes(self) -> int:
        """Bytes of parameters and buffers: what the weights weigh, however the module was stored."""
        total = 0
        for tensor in list(self.module.parameters()) + list(self.module.buffers()):
            total += tensor.numel() * tensor.element_size()
        return total

    def param_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def with_module(self, module: Any) -> TorchModel:
        """This model's signature (inputs, examples, outputs, task, tokenizer, source, Keras origin) around
        another module: what a pass that edits a copy of the module returns. Source files and the
        written .keras file start empty: they described the old weights."""
        result = TorchModel(module=module, input_specs=self.input_specs, example_inputs=self.example_inputs,
                            output_names=self.output_names, keras_version=self.keras_version)
        result.carry_over(self)
        return result

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.input_specs]


@dataclass
class OnnxModel(WorkingModel):
    """An ONNX model held as a file (weights may live in external data files beside it) or a proto.

    Passes hand protos to each other; `ensure_file` writes one out when a runtime needs a path.
    """

    path: Path | None = None
    _proto: Any = None
    kind: ModelKind = ModelKind.ONNX

    @property
    def proto(self):
        if self._proto is None:
            import onnx

            if self.path is None:
                raise SlimkitError("ONNX model has neither a file nor a proto")
            self._proto = onnx.load(str(self.path), load_external_data=True)
        return self._proto

    @classmethod
    def from_proto(cls, proto, like: WorkingModel | None = None) -> OnnxModel:
        model = cls(_proto=proto)
        if like is not None:
            model.carry_over(like)
        return model

    def ensure_file(self, workdir: Path | None = None) -> Path:
        """Return a path ONNX Runtime can load, writing the proto to a scratch folder if needed."""
        if self.path is not None and self.path.exists():
            return self.path
        if workdir:
            folder = Path(workdir)
        else:  # removed at interpreter exit, or by the next run if this process is killed
            from slimkit.scratch import make_scratch

            folder = make_scratch("slimkit-onnx-")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "model.onnx"
        save_onnx(self.proto, target)
        self.path = target
        return target

    def files(self) -> list[Path]:
        if self.path is None:
            return []
        return onnx_files(self.path)

    def size_bytes(self) -> int:
        if self.path is None or not self.path.exists():
            return self.proto.ByteSize()
        return super().size_bytes()

    def param_count(self) -> int:
        from onnx import numpy_helper

        return int(sum(np.prod(numpy_helper.to_array(t).shape) for t in self.proto.graph.initializer))

    @property
    def input_specs(self) -> list[InputSpec]:
        return onnx_input_specs(self.proto)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.proto.graph.output]


@dataclass
class OpenVinoModel(WorkingModel):
    """An OpenVINO IR artifact: `model.xml` with its weights in `model.bin` beside it (or an ONNX file, which
    OpenVINO reads directly: `bench --runtime openvino`).

    `precision` is the inference precision it is measured and deployed at ('f32', 'bf16', 'f16'); 'auto'
    resolves from the CPU (see `slimkit.hardware`). to-openvino stores it in the IR's runtime info
    (`runtime_options/INFERENCE_PRECISION_HINT`), which OpenVINO applies when it compiles the model.
    """

    path: Path | None = None
    precision: str = "auto"
    kind: ModelKind = ModelKind.OPENVINO

    def files(self) -> list[Path]:
        if self.path is None:
            return []
        if self.path.suffix == ".onnx":
            return [self.path, *sorted(self.path.parent.glob(self.path.name + ".data"))]
        return [self.path, self.path.with_suffix(".bin")]


@dataclass
class SlimModel(WorkingModel):
    """A `.slim` Deep Compression archive: measured by restoring the ONNX model it holds, bit-exactly."""

    path: Path | None = None
    kind: ModelKind = ModelKind.SLIM

    def files(self) -> list[Path]:
        return [self.path] if self.path else []

    def restore(self) -> OnnxModel:
        from slimkit.archive.onnx_io import load_onnx_archive

        restored = OnnxModel.from_proto(load_onnx_archive(self.path))
        restored.carry_over(self)
        return restored


# ---- Short reprs (WorkingModel.__repr__) ----


def _clip(text: Any, limit: int) -> str:
    """`text` as a string of at most `limit` characters, keeping its tail (a path's telling part)."""
    text = str(text)
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _repr_details(model: WorkingModel) -> list[tuple[str, str]]:
    """The repr's kind-specific fields, each left out when it cannot be read cheaply: no file is loaded."""
    details: list[tuple[str, str]] = []
    proto = model.__dict__.get("_proto")  # an OnnxModel's proto, only when already in memory
    try:
        specs = onnx_input_specs(proto) if proto is not None else model.__dict__.get("input_specs")
    except Exception:  # a repr must not raise
        specs = None
    if specs is not None:
        shown = [_clip(f"{s.name}: {s.dtype}[{' x '.join('?' if d is None else str(d) for d in s.shape)}]", 36)
                 for s in specs[:3]]
        details.append(("inputs", "[" + ", ".join(shown + ([f"+{len(specs) - 3} more"] if len(specs) > 3 else []))
                        + "]"))
    try:
        if proto is not None:
            params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
        elif model.__dict__.get("module") is not None:
            params = sum(int(p.numel()) for p in model.module.parameters())
        else:
            params = None
    except Exception:
        params = None
    if params is not None:
        details.append(("params", f"{params:,}"))
    if model.__dict__.get("path") is not None:
        details.append(("path", repr(_clip(model.path, 48))))
    return details


# ---- ONNX file helpers (shared by loaders, passes and runners) ----

_ONNX_ELEM_TO_NUMPY = {
    1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
}


def onnx_input_specs(proto) -> list[InputSpec]:
    """Graph inputs that are real inputs (not initializers), with symbolic dims kept by name."""
    initializers = {t.name for t in proto.graph.initializer}
    specs = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        ttype = value.type.tensor_type
        dims: list[Dim] = []
        for d in ttype.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        dtype = _ONNX_ELEM_TO_NUMPY.get(ttype.elem_type, f"onnx-type-{ttype.elem_type}")
        specs.append(InputSpec(value.name, dtype, tuple(dims)))
    return specs


def onnx_files(path: Path) -> list[Path]:
    """The model file plus every external data file it references."""
    import onnx

    files = [path]
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # a broken file has no external data we can list
        return files
    seen: set[str] = set()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in seen:
                    seen.add(entry.value)
                    files.append(path.parent / entry.value)
    return files


_EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf's hard limit is 2 GiB


def save_onnx(proto, target: Path) -> Path:
    """Write an ONNX model; weights go to `<name>.data` beside it when the file would pass 2 GiB."""
    import onnx

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if proto.ByteSize() > _EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(
            proto,
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=target.name + ".data",
            size_threshold=1024,
        )
    else:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        onnx.save_model(proto, str(tmp))
        os.replace(tmp, target)
    return target
