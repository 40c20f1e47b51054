"""OpenVINO IR (`model.xml` + `model.bin`): converted from ONNX by OpenVINO's converter, run by its CPU plugin
at the inference precision the artifact records (see `slimkit.hardware`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from slimkit.errors import SlimkitError, first_line
from slimkit.formats.registry import Format, LoadOptions, Retarget, Runner
from slimkit.hardware import import_openvino, resolve_openvino_precision
from slimkit.models.base import InputSpec, ModelKind, OnnxModel, OpenVinoModel, WorkingModel
from slimkit.models.sidecar import apply_sidecar

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


class OpenVinoRunner(Runner):
    runtime = "openvino"

    def __init__(self, model: OpenVinoModel, threads: int) -> None:
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
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for files and graphs it cannot take
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
        try:
            result = self.request.infer(feed, share_inputs=True, share_outputs=True)
        except RuntimeError as exc:
            raise SlimkitError(f"OpenVINO failed on this input: {first_line(exc)}",
                               "check the data's array names, shapes and types against `slimkit inspect`") from exc
        return [np.array(result[port]) for port in self.compiled.outputs]


def _ov_dtype(element_type) -> str:
    name = element_type.get_type_name()
    return {"f32": "float32", "f16": "float16", "i64": "int64", "i32": "int32", "u8": "uint8",
            "i8": "int8", "boolean": "bool"}.get(name, "float32")


def _load(path: Path, options: LoadOptions) -> WorkingModel:
    return apply_sidecar(OpenVinoModel(path=path, source=str(path), task=options.task), path)


def write_openvino(model: WorkingModel, target: Path) -> None:
    assert isinstance(model, OpenVinoModel) and model.path is not None
    shutil.copyfile(model.path, target)
    shutil.copyfile(model.path.with_suffix(".bin"), target.with_suffix(".bin"))


# ONNX Runtime quantization passes and what does their job on OpenVINO (NNCF), with the config carried over.
_EQUIVALENTS = {
    "int8-static": lambda cfg: ("ov-int8", {}),
    "int8-auto": lambda cfg: ("ov-int8-auto", {k: cfg[k] for k in ("min_cosine", "max_drop") if k in cfg}),
    "weight-only": lambda cfg: ("ov-weights", {"bits": cfg.get("bits", 4),
                                               "group_size": cfg.get("block_size", 128),
                                               "symmetric": cfg.get("symmetric", False)}),
    # OpenVINO has no dynamic-quantization graph; int8 weights with activations quantized by its CPU plugin
    # at run time is the same idea.
    "int8-dynamic": lambda cfg: ("ov-weights", {"bits": 8}),
}

def run_onnx_on_openvino(model: WorkingModel) -> WorkingModel:
    """An ONNX model handed to OpenVINO as it is (OpenVINO reads ONNX files), at the CPU's fastest precision."""
    assert isinstance(model, OnnxModel)
    on_openvino = OpenVinoModel(path=model.ensure_file(), precision="auto")
    on_openvino.carry_over(model)
    return on_openvino


FORMAT = Format(
    name="openvino", label="OpenVINO", kind=ModelKind.OPENVINO, suffixes=(".xml",), load=_load, runner=OpenVinoRunner,
    runtime="openvino", filename="model.xml", write=write_openvino, converter="to-openvino",
    plain_recipe="openvino", output=True, run_onnx=run_onnx_on_openvino, description="OpenVINO IR, run with OpenVINO's CPU plugin",
    # transformer-fusion's fused ops (com.microsoft) exist only in ONNX Runtime
    retarget=Retarget(equivalents=_EQUIVALENTS, dropped=("transformer-fusion",)),
)
