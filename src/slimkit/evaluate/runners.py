"""One runner per runtime, all with the same call: `run(feed) -> list of numpy outputs`.

Each runner is pinned to a thread count so latency numbers are comparable across runtimes.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from slimkit.errors import SlimkitError, first_line, require
from slimkit.models.base import (
    InputSpec,
    ModelKind,
    OnnxModel,
    OpenVinoModel,
    TfliteModel,
    TorchModel,
    WorkingModel,
)
from slimkit.models.limits import sequence_error


class Runner:
    """Runs a model on feed dicts keyed by input name. `runtime` names what actually executes it."""

    runtime = "?"
    input_specs: list[InputSpec]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError


def make_runner(model: WorkingModel, threads: int = 2) -> Runner:
    if model.kind == ModelKind.TORCH:
        return TorchRunner(model, threads)
    if model.kind == ModelKind.ONNX:
        return OrtRunner(model, threads)
    if model.kind == ModelKind.OPENVINO:
        return OpenVinoRunner(model, threads)
    if model.kind == ModelKind.TFLITE:
        return TfliteRunner(model, threads)
    if model.kind == ModelKind.SLIM:
        runner = OrtRunner(model.restore(), threads)
        runner.runtime = "onnxruntime (restored from .slim)"
        return runner
    raise SlimkitError(f"no runtime for model kind {model.kind}")


class TorchRunner(Runner):
    runtime = "pytorch-eager"

    def __init__(self, model: TorchModel, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.module = model.module.eval()
        self.input_specs = list(model.input_specs)
        self.max_positions = model.max_positions

    def run(self, feed):
        import torch

        from slimkit.models.loading import flatten_outputs

        with torch.inference_mode():
            try:
                out = self.module(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()})
            except RuntimeError as exc:  # e.g. "The expanded size of the tensor (128) must match ... (64)"
                specific = sequence_error(self.max_positions, feed)
                if specific is not None:
                    raise specific from exc
                raise
        return [t.detach().float().numpy() if t.dtype.is_floating_point else t.numpy() for t in flatten_outputs(out)]


def ort_session(model: OnnxModel, threads: int = 2, *, optimization: str = "all"):
    """An ONNX Runtime CPU session with fixed threads; failures become one clear line."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    opts.log_severity_level = 3
    try:
        if model.path is not None and model.path.exists():
            return ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
        return ort.InferenceSession(model.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SlimkitError(
            f"ONNX Runtime cannot run {model.source or 'this model'}: {first_line(exc)}",
            "the model uses an op or opset ONNX Runtime does not support; re-export it with supported ops",
        ) from exc


class OrtRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, model: OnnxModel, threads: int) -> None:
        self.session = ort_session(model, threads)
        self.input_specs = model.input_specs
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.max_positions = model.max_positions

    def run(self, feed):
        try:
            out = self.session.run(None, feed)
        except Exception as exc:
            specific = sequence_error(self.max_positions, feed)
            if specific is not None:
                raise specific from exc
            raise SlimkitError(f"ONNX Runtime failed on this input: {first_line(exc)}",
                               "check the data shapes and types") from exc
        # Non-tensor outputs (sequences of maps, e.g. sklearn's ZipMap) are skipped: nothing to compare.
        return [o for o in out if isinstance(o, np.ndarray)]


# Where an OpenVINO IR carries its inference precision; OpenVINO applies runtime_options when it compiles it.
PRECISION_RT_KEY = ["runtime_options", "INFERENCE_PRECISION_HINT"]


def low_bit_form(ov_model) -> str:
    """How an OpenVINO model is already quantized: 'int8' (FakeQuantize), 'fp8' (FakeConvert), 'w4' / 'w8'
    (compressed weight constants), or '' for a float model."""
    types = {op.get_type_name() for op in ov_model.get_ops()}
    if "FakeQuantize" in types:
        return "int8"
    if "FakeConvert" in types:
        return "fp8"
    consts = {op.get_output_element_type(0).get_type_name() for op in ov_model.get_ops()
              if op.get_type_name() == "Constant"}
    if consts & {"u4", "i4"}:
        return "w4"
    return "w8" if consts & {"u8", "i8"} else ""


def stored_precision(ov_model) -> str | None:
    """The inference precision an IR carries (to-openvino stores it), or None."""
    if not ov_model.has_rt_info(PRECISION_RT_KEY):
        return None
    return str(ov_model.get_rt_info(PRECISION_RT_KEY).astype(str))


def import_openvino():
    """Import OpenVINO with its usage telemetry switched off (it would try to reach the network)."""
    os.environ.setdefault("OPENVINO_TELEMETRY_ENABLE", "0")
    sys.modules.setdefault("openvino_telemetry", None)  # makes OpenVINO's optional import fail -> stub
    return require("openvino", "openvino")


class OpenVinoRunner(Runner):
    runtime = "openvino"

    def __init__(self, model: OpenVinoModel, threads: int) -> None:
        from slimkit.hardware import resolve_openvino_precision

        ov = import_openvino()
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        try:
            ov_model = core.read_model(str(model.path))
            # The precision the artifact carries (to-openvino stores it) is what it deploys with, so it is what
            # it is measured with; else the model's own setting, else the CPU's fastest native one.
            stored = stored_precision(ov_model)
            asked = getattr(model, "precision", "auto")  # an OnnxModel may be handed over as is: auto
            wanted = asked if asked != "auto" else (stored or "auto")
            config["INFERENCE_PRECISION_HINT"] = resolve_openvino_precision(wanted)[0]
            self.compiled = core.compile_model(ov_model, "CPU", config)
        except Exception as exc:
            raise SlimkitError(f"OpenVINO cannot load {model.path}: {first_line(exc)}",
                               "convert the model again with slimkit convert --to openvino") from exc
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(
            hint.split("'")[1] if "'" in hint else hint, hint)
        # For a quantized model the precision hint covers only its float parts: the label says both.
        form = low_bit_form(ov_model)
        self.runtime = f"openvino {form}+{self.precision}" if form else f"openvino {self.precision}"
        self.request = self.compiled.create_infer_request()
        self.input_specs = []
        for port in self.compiled.inputs:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            self.input_specs.append(InputSpec(port.get_any_name(), _ov_dtype(port.get_element_type()), shape))

    def run(self, feed):
        # share_inputs avoids one copy per call; outputs are copied because the request reuses them.
        result = self.request.infer(feed, share_inputs=True, share_outputs=True)
        return [np.array(result[port]) for port in self.compiled.outputs]


def _ov_dtype(element_type) -> str:
    name = element_type.get_type_name()
    return {"f32": "float32", "f16": "float16", "i64": "int64", "i32": "int32", "u8": "uint8",
            "i8": "int8", "boolean": "bool"}.get(name, "float32")


class TfliteRunner(Runner):
    runtime = "litert"

    def __init__(self, model: TfliteModel, threads: int) -> None:
        from slimkit.quiet import quiet_native

        with quiet_native("LiteRT"):  # e.g. "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interpreter_mod = require("ai_edge_litert.interpreter", "tflite")
            try:
                self.interpreter = interpreter_mod.Interpreter(model_path=str(model.path), num_threads=threads)
            except Exception as exc:
                raise SlimkitError(f"LiteRT cannot load {model.path}: {exc}", "convert the model again") from exc
            self.interpreter.allocate_tensors()
        details = self.interpreter.get_input_details()
        names = model.metadata.get("input_names") or [d["name"] for d in details]
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
