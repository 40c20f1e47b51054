"""TFLite: a flatbuffer converted from PyTorch by litert-torch and run by LiteRT's interpreter (XNNPACK).

Everything slimkit knows about the format is here: its model class, loader, runner, writer, the conversion
the `to-tflite` pass calls, and how a recipe is retargeted to end in it (`--to tflite`). The rest of slimkit
reads this module's `FORMAT` from the registry.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimkit.errors import SlimkitError, first_line, require
from slimkit.formats.registry import Format, LoadOptions, Retarget, Runner
from slimkit.models.base import InputSpec, TorchModel, WorkingModel
from slimkit.models.sidecar import apply_sidecar, sidecar_for
from slimkit.quiet import quiet_native

KIND = "tflite"


@dataclass(repr=False)
class TfliteModel(WorkingModel):
    """A TFLite flatbuffer, run with LiteRT's interpreter. `input_names` are the PyTorch model's (the flatbuffer
    names its inputs after the converter's placeholders)."""

    path: Path | None = None
    input_names: list[str] | None = None
    kind: str = KIND

    def files(self) -> list[Path]:
        return [self.path] if self.path else []


class TfliteRunner(Runner):
    runtime = "litert"

    def __init__(self, model: TfliteModel, threads: int) -> None:
        with quiet_native("LiteRT"):  # e.g. "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interpreter_mod = require("ai_edge_litert.interpreter", "tflite")
            try:
                self.interpreter = interpreter_mod.Interpreter(model_path=str(model.path), num_threads=threads)
            except (ValueError, RuntimeError) as exc:  # LiteRT's errors for files it cannot read
                raise SlimkitError(f"LiteRT cannot load {model.path}: {first_line(exc)}",
                                   "convert the model again") from exc
            self.interpreter.allocate_tensors()
        details = self.interpreter.get_input_details()
        names = model.input_names or [d["name"] for d in details]
        self.input_specs = [
            InputSpec(n, np.dtype(d["dtype"]).name, tuple(int(x) for x in d["shape"]))
            for n, d in zip(names, details, strict=False)
        ]
        self._indices = [d["index"] for d in details]

    def run(self, feed):
        interp = self.interpreter
        resized = False
        for spec, index in zip(self.input_specs, self._indices, strict=True):
            value = feed[spec.name]
            current = interp.get_input_details()[self._indices.index(index)]["shape"]
            if tuple(current) != value.shape:
                interp.resize_tensor_input(index, value.shape)
                resized = True
        if resized:
            try:
                interp.allocate_tensors()
            except RuntimeError as exc:  # e.g. a Reshape baked with the converted batch size
                fixed = ", ".join(f"{s.name}={'x'.join(map(str, s.shape))}" for s in self.input_specs)
                got = ", ".join(f"{n}={'x'.join(map(str, v.shape))}" for n, v in feed.items())
                raise SlimkitError(f"LiteRT cannot resize this TFLite model to {got}: {first_line(exc, 200)}",
                                   f"it was converted with fixed shapes {fixed}; measure it at that batch size") from exc
        for spec, index in zip(self.input_specs, self._indices, strict=True):
            interp.set_tensor(index, np.ascontiguousarray(feed[spec.name]))
        interp.invoke()
        return [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]


def _load(path: Path, options: LoadOptions) -> WorkingModel:
    model = apply_sidecar(TfliteModel(path=path, source=str(path), task=options.task), path)
    names = (sidecar_for(path) or {}).get("input_names")
    model.input_names = list(names) if names else None
    return model


def write_tflite(model: WorkingModel, target: Path) -> None:
    assert isinstance(model, TfliteModel) and model.path is not None
    shutil.copyfile(model.path, target)


def convert_from_torch(model: TorchModel, folder: Path, *, batch_size: int, precision: str) -> tuple[TfliteModel, dict]:
    """PyTorch -> TFLite with litert-torch at a fixed batch size (TFLite shapes are fixed at conversion);
    `precision='fp16'` stores float weights as float16."""
    names = model.input_names
    sample = tuple(_with_batch(model.example_inputs[n], batch_size, spec)
                   for n, spec in zip(names, model.input_specs, strict=True))
    path = folder / "model.tflite"
    # litert-torch, torchao, absl and TensorFlow-style native logs stay out of the terminal (--verbose shows them)
    with quiet_native("litert-torch"):
        litert_torch = require("litert_torch", "tflite")
        try:
            edge = litert_torch.convert(model.module.eval(), sample)
        except Exception as exc:  # litert-torch fails in many ways (export, lowering, legalization)
            raise SlimkitError(f"litert-torch cannot convert this model: {first_line(exc, 200)}",
                               "TFLite needs static shapes and ops LiteRT supports") from exc
        edge.export(str(path))
    stats = {"input_shapes": {n: list(t.shape) for n, t in zip(names, sample, strict=True)},
             "precision": precision, "fp32_bytes": path.stat().st_size}
    if precision == "fp16":
        fp32_path, path = path, folder / "model-fp16.tflite"
        fp16_weights(fp32_path, path)
        fp32_path.unlink()
    result = TfliteModel(path=path, input_names=list(names))
    result.carry_over(model)
    return result, stats


def fp16_weights(source: Path, target: Path) -> None:
    """Store a TFLite file's float weights as float16 (dequantized in the graph), via ai-edge-quantizer."""
    try:
        with quiet_native("ai-edge-quantizer"):
            from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    except ImportError as exc:
        raise SlimkitError("fp16 TFLite needs ai-edge-quantizer, which is not installed",
                           "install it with: pip install 'slimkit[tflite]'") from exc
    config = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
        compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
    try:
        with quiet_native("ai-edge-quantizer"):
            q = quantizer.Quantizer(str(source))
            q.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                         op_config=config,
                                         algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
            q.quantize().export_model(str(target), overwrite=True)
    except Exception as exc:  # the quantizer's failures are not typed
        raise SlimkitError(f"ai-edge-quantizer cannot cast this TFLite model to fp16: {first_line(exc, 200)}",
                           "use the fp32 tflite recipe") from exc


def _with_batch(tensor, batch_size: int, spec):
    """The example input repeated (or cut) to `batch_size` along a dynamic batch dimension."""
    import torch

    if not spec.shape or isinstance(spec.shape[0], int) or tensor.shape[0] == batch_size:
        return tensor
    reps = -(-batch_size // tensor.shape[0])
    return torch.cat([tensor] * reps, dim=0)[:batch_size]


FORMAT = Format(
    name="tflite", label="TFLite", kind=KIND, suffixes=(".tflite",), load=_load, runner=TfliteRunner, runtime="litert",
    filename="model.tflite", write=write_tflite, converter="to-tflite", plain_recipe="tflite", output=True,
    description="TFLite, run with LiteRT (converted from PyTorch)",
    retarget=Retarget(
        # TFLite is converted from the PyTorch model: the ONNX export steps have no place, and ONNX fp16 becomes
        # fp16 weights in the flatbuffer, as the TFLite converter's `supported_types = [tf.float16]` does.
        dropped=("to-onnx", "onnx-cleanup"),
        merge_into_converter={"fp16": lambda cfg: {"precision": "fp16"}},
    ),
)
