"""TFLite: a flatbuffer converted from PyTorch by litert-torch and run by LiteRT's interpreter (XNNPACK).

Everything slimkit knows about the format is here: its model class, loader, runner, writer, the conversion
the `to-tflite` pass calls, and how a recipe is retargeted to end in it (`--to tflite`). The rest of slimkit
reads this module's `FORMAT` from the registry.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
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
        # A full-integer model takes int8/int16 inputs and gives int8/int16 outputs: feeds are quantized and
        # outputs dequantized with the tensor's own scale and zero point, as an app does around the call.
        self.input_specs = [
            InputSpec(n, "float32" if _quantized(d) else np.dtype(d["dtype"]).name, tuple(int(x) for x in d["shape"]))
            for n, d in zip(names, details, strict=False)
        ]
        self._inputs = details
        self._indices = [d["index"] for d in details]

    def execution(self) -> dict:
        """Which ops XNNPACK runs and which fall back to LiteRT's built-in kernels (see `tflite_graph`), read
        from this runner's own interpreter."""
        from slimkit.formats.tflite_graph import delegation_of

        return delegation_of(self.interpreter)

    def run(self, feed):
        short = self._short_batch(feed)
        if short:  # a last partial batch: padded to the converted batch, as an app with a fixed-batch model does
            batch = self.input_specs[0].shape[0]
            padded = {k: np.concatenate([v, np.repeat(v[-1:], batch - short, axis=0)]) for k, v in feed.items()}
            return [o[:short] if o.ndim and o.shape[0] == batch else o for o in self._run(padded)]
        return self._run(feed)

    def _short_batch(self, feed) -> int:
        """The feed's batch when it is smaller than the converted one and every other dim matches, else 0."""
        sizes = set()
        for spec in self.input_specs:
            value = feed[spec.name]
            if not spec.shape or value.ndim != len(spec.shape) or tuple(value.shape[1:]) != spec.shape[1:]:
                return 0
            sizes.add(value.shape[0])
        size = sizes.pop() if len(sizes) == 1 else 0
        return size if 0 < size < self.input_specs[0].shape[0] else 0

    def _run(self, feed):
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
                                   f"it was converted with fixed shapes {fixed}; convert it at that shape "
                                   "(--batch-size, --seq-len or --shape) or measure it at the converted one") from exc
        for spec, detail in zip(self.input_specs, self._inputs, strict=True):
            interp.set_tensor(detail["index"], to_input(feed[spec.name], detail))
        interp.invoke()
        return [_from_output(interp.get_tensor(d["index"]), d) for d in interp.get_output_details()]


def _quantized(detail: dict) -> bool:
    scale, _zero = detail.get("quantization", (0.0, 0))
    return bool(scale) and np.issubdtype(np.dtype(detail["dtype"]), np.integer)


def to_input(value: np.ndarray, detail: dict) -> np.ndarray:
    """A feed in the tensor's dtype: float quantized with the input's scale/zero point, int64 ids as int32."""
    dtype = np.dtype(detail["dtype"])
    if _quantized(detail) and not np.issubdtype(value.dtype, np.integer):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / scale + zero), info.min, info.max)
    return np.ascontiguousarray(value, dtype=dtype)


def _from_output(value: np.ndarray, detail: dict) -> np.ndarray:
    if _quantized(detail):
        scale, zero = detail["quantization"]
        return ((value.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)
    return np.array(value)


def _load(path: Path, options: LoadOptions) -> WorkingModel:
    model = apply_sidecar(TfliteModel(path=path, source=str(path), task=options.task), path)
    names = (sidecar_for(path) or {}).get("input_names")
    model.input_names = list(names) if names else None
    return model


def write_tflite(model: WorkingModel, target: Path) -> None:
    assert isinstance(model, TfliteModel) and model.path is not None
    shutil.copyfile(model.path, target)


def convert_from_torch(model: TorchModel, folder: Path, *, input_shapes: Mapping[str, Sequence[int]],
                       precision: str) -> tuple[TfliteModel, dict]:
    """PyTorch -> TFLite with litert-torch at `input_shapes`, the shapes the model is measured and deployed at
    (TFLite shapes are fixed at conversion); each example input is tiled or cut to its shape.
    `precision='fp16'` stores float weights as float16."""
    names = model.input_names
    sample = tuple(_fit(model.example_inputs[n], tuple(input_shapes[n])) for n in names)
    path = folder / "model.tflite"
    # litert-torch, torchao, absl and TensorFlow-style native logs stay out of the terminal (--verbose shows them)
    failure: Exception | None = None
    with quiet_native("litert-torch"):
        litert_torch = require("litert_torch", "tflite")
        try:
            edge = litert_torch.convert(model.module.eval(), sample)
        except Exception as exc:  # litert-torch fails in many ways (export, lowering, legalization)
            failure = exc
        else:
            edge.export(str(path))
    if failure is not None:  # raised outside: its one line names the op, without the converter's log
        raise conversion_error(failure) from failure
    stats = {"input_shapes": {n: list(t.shape) for n, t in zip(names, sample, strict=True)},
             "precision": precision, "fp32_bytes": path.stat().st_size}
    if precision == "fp16":
        fp32_path, path = path, folder / "model-fp16.tflite"
        fp16_weights(fp32_path, path)
        fp32_path.unlink()
    result = TfliteModel(path=path, input_names=list(names))
    result.carry_over(model)
    return result, stats


_NO_LOWERING = re.compile(r"Lowering not found: (?:aten\.)?([\w.]+?)(?:\.default)?\b\s")
_NOT_LEGAL = re.compile(r"failed to legalize operation '([^']+)'")
_SOURCE = re.compile(r'File "([^"]+)", line (\d+), in \w+\s*\n\s*(.+)')


def conversion_error(exc: BaseException) -> SlimkitError:
    """litert-torch's failure as one line: the op it has no TFLite lowering for and the model line that uses it,
    when its message says so; otherwise its first line."""
    text = str(exc)
    op = _NO_LOWERING.search(text + " ") or _NOT_LEGAL.search(text)
    if op is None:
        return SlimkitError(f"litert-torch cannot convert this model: {first_line(exc, 200)}",
                            "TFLite needs static shapes and ops LiteRT supports; --to onnx or --to openvino take "
                            "more ops")
    where = _SOURCE.search(text)
    at = f" (used at {Path(where.group(1)).name}:{where.group(2)}: {where.group(3).strip()})" if where else ""
    return SlimkitError(f"litert-torch cannot convert op {op.group(1)} to TFLite{at}",
                        "TFLite has no kernel for it: replace that op in the model, or use --to onnx or --to openvino")


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


def _fit(tensor, shape: tuple[int, ...]):
    """The example input repeated (or cut) along each axis to `shape`: its values (token ids, a mask of ones)
    keep their meaning, only the extent changes."""
    if tuple(tensor.shape) == tuple(shape) or tensor.dim() != len(shape):
        return tensor
    reps = [-(-want // max(have, 1)) for have, want in zip(tensor.shape, shape, strict=True)]
    return tensor.repeat(*reps)[tuple(slice(0, want) for want in shape)].contiguous()


def _weight_only(cfg: dict) -> tuple[str, dict]:
    """ONNX weight-only int4 is block-wise MatMulNBits computing in int8: on LiteRT that is dynamic-range int4
    with the same block size (LiteRT has no block-wise kernel for float compute); int8 stays weight-only."""
    if cfg.get("bits", 4) == 4:
        return "tflite-dynamic", {"bits": 4, "block_size": cfg.get("block_size", 32)}
    return "tflite-weight-only", {"bits": 8}


# ONNX Runtime quantization passes and what does their job on LiteRT (ai-edge-quantizer), config carried over.
_EQUIVALENTS = {
    "int8-dynamic": lambda cfg: ("tflite-dynamic", {"per_channel": cfg.get("per_channel", True)}),
    "int8-static": lambda cfg: ("tflite-static", {}),
    "int8-auto": lambda cfg: ("tflite-int8-auto", {k: cfg[k] for k in ("min_cosine", "max_drop") if k in cfg}),
    "weight-only": _weight_only,
}


FORMAT = Format(
    name="tflite", label="TFLite", kind=KIND, suffixes=(".tflite",), load=_load, runner=TfliteRunner, runtime="litert",
    filename="model.tflite", write=write_tflite, converter="to-tflite", plain_recipe="tflite", output=True,
    description="TFLite, run with LiteRT (converted from PyTorch)",
    retarget=Retarget(
        # TFLite is converted from the PyTorch model: the ONNX export steps and ONNX Runtime's fused ops have no
        # place, and ONNX fp16 becomes fp16 weights in the flatbuffer, as the TFLite converter's
        # `supported_types = [tf.float16]` does.
        dropped=("to-onnx", "onnx-cleanup", "transformer-fusion"),
        merge_into_converter={"fp16": lambda cfg: {"precision": "fp16"}},
        equivalents=_EQUIVALENTS,
    ),
)
