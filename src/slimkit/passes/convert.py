"""Conversion passes: PyTorch -> ONNX (verified), ONNX clean-up, ONNX -> OpenVINO IR, PyTorch -> TFLite.

Each format's own conversion code lives in its module in `slimkit.formats`; these passes give it a config."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Literal

import numpy as np
from pydantic import Field

from slimkit.config import searchable
from slimkit.errors import SlimkitError, first_line
from slimkit.formats.tflite import KIND as TFLITE_KIND
from slimkit.formats.tflite import convert_from_torch
from slimkit.models.base import (
    ModelKind,
    OnnxModel,
    OpenVinoModel,
    TorchModel,
    WorkingModel,
    save_onnx,
)
from slimkit.models.limits import record_in_onnx
from slimkit.models.onnx_graph import copy_model
from slimkit.models.wrappers import NamedInputs
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.outcome import Outcome
from slimkit.quiet import loggers_at

# The exporters' own loggers, raised to ERROR while exporting and restored after (they are process-wide).
EXPORT_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")


class ToOnnxConfig(PassConfig):
    exporter: Literal["auto", "dynamo", "legacy"] = "auto"
    opset: int | None = Field(None, ge=7)  # None: the exporter's default
    dynamic: bool = True
    # Export is checked against PyTorch on sample inputs; larger differences reject the exporter.
    tolerance: float = Field(1e-3, gt=0)


@register
class ToOnnx(Pass):
    """torch.onnx.export (dynamo first, TorchScript exporter as fallback), checked against PyTorch."""

    name = "to-onnx"
    accepts = frozenset({ModelKind.TORCH, ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = ToOnnxConfig
    description = "PyTorch -> ONNX with dynamic batch/sequence dims, verified in ONNX Runtime"

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        if isinstance(model, OnnxModel):
            return PassResult(model, {}, Outcome.skipped("already ONNX"))
        assert isinstance(model, TorchModel)
        exporters = ["dynamo", "legacy"] if self.config.exporter == "auto" else [self.config.exporter]
        failures = []
        for exporter in exporters:
            for dynamic in ([True, False] if self.config.dynamic else [False]):
                try:
                    proto = export_onnx(model, exporter=exporter, dynamic=dynamic, opset=self.config.opset)
                    onnx_model = OnnxModel(path=save_onnx(proto, ctx.scratch("to-onnx") / "model.onnx"), _proto=proto)
                    onnx_model.carry_over(model)
                    diff = verify_against_torch(model, onnx_model)
                except Exception as exc:  # exporter failures are many and varied; try the next one
                    failures.append(f"{exporter}{'' if dynamic else '/static'}: {first_line(exc, 200)}")
                    continue
                if diff > self.config.tolerance:
                    failures.append(f"{exporter}: outputs differ from PyTorch by {diff:.2e}")
                    continue
                # An exporter may specialize a dim it was asked to keep dynamic (then only the example was checked).
                fixed = _fixed_dims(model, onnx_model) if dynamic else {}
                stats = {"exporter": exporter, "dynamic_shapes": dynamic and not fixed,
                         "max_abs_diff_vs_torch": diff, "opset": _opset(proto), "nodes": len(proto.graph.node)}
                if fixed:
                    stats["fixed_dims"] = fixed
                return PassResult(onnx_model, stats)
        raise SlimkitError("could not export the model to ONNX: " + "; ".join(failures)[:600],
                           "check that the model is traceable (no data-dependent Python control flow)")


def export_onnx(model: TorchModel, *, exporter: str, dynamic: bool, opset: int | None):
    """Run one torch exporter and return the ModelProto, with slimkit's metadata attached."""
    import onnx
    import torch

    names = model.input_names
    example = _export_example(model)
    output_names = list(model.output_names)
    dyn_axes = {s.name: {i: str(d) for i, d in enumerate(s.shape) if not isinstance(d, int)} for s in model.input_specs}
    kwargs = {"input_names": names, "output_names": output_names}
    if opset:
        kwargs["opset_version"] = opset
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), \
            loggers_at(logging.ERROR, EXPORT_LOGGERS):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dynamic_shapes = None
            if dynamic:
                dims: dict[str, torch.export.Dim] = {}
                dynamic_shapes = {
                    n: {axis: dims.setdefault(label, torch.export.Dim(_dim_name(label))) for axis, label in ax.items()}
                    for n, ax in dyn_axes.items()
                }
            args, kw = (), example
            if isinstance(model.module, NamedInputs):  # forward(*args): torch.export sees one args group
                args, kw = tuple(example[n] for n in names), None
                if dynamic_shapes is not None:
                    dynamic_shapes = (tuple(dynamic_shapes[n] for n in names),)
            program = torch.onnx.export(model.module, args, kwargs=kw, dynamic_shapes=dynamic_shapes,
                                        dynamo=True, verbose=False, **kwargs)
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            target = model.module
            if isinstance(target, NamedInputs) and isinstance(target.inner, torch.jit.ScriptModule):
                target = target.inner  # the TorchScript exporter takes a loaded ScriptModule directly, not wrapped
            torch.onnx.export(target, tuple(example[n] for n in names), buffer, dynamo=False,
                              dynamic_axes=dyn_axes if dynamic else None, **kwargs)
            proto = onnx.load_from_string(buffer.getvalue())
    if model.task:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "slimkit.task", model.task
    record_in_onnx(proto, model.max_positions)
    return proto


def _dim_name(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label) or "dim"


def _export_example(model: TorchModel) -> dict:
    """Example inputs with batch 2: torch.export specializes dims that are 1 in the example."""
    import torch

    example = {}
    for spec in model.input_specs:
        tensor = model.example_inputs[spec.name]
        if spec.shape and not isinstance(spec.shape[0], int) and tensor.shape[0] == 1:
            tensor = torch.cat([tensor, tensor], dim=0)
        example[spec.name] = tensor
    return example


def verify_against_torch(model: TorchModel, onnx_model: OnnxModel) -> float:
    """Max abs difference between PyTorch and ONNX Runtime on the example and on a different batch size."""
    import torch

    from slimkit.formats.onnx import OrtRunner
    from slimkit.formats.torch import TorchRunner

    runner, reference = OrtRunner(onnx_model, threads=2), TorchRunner(model, threads=2)
    examples = [_export_example(model)]
    if all(not isinstance(s.shape[0], int) for s in onnx_model.input_specs if s.shape):
        examples.append({k: torch.cat([v, v[:1]], dim=0) for k, v in examples[0].items()})  # batch 3
    worst = 0.0
    for example in examples:
        feed = {k: v.numpy() for k, v in example.items()}
        for e, g in zip(reference.run(feed), runner.run(feed), strict=False):
            if e.shape != g.shape:
                return float("inf")
            worst = max(worst, float(np.abs(e - g.astype(np.float32)).max()) if e.size else 0.0)
    return worst


def _fixed_dims(model: TorchModel, onnx_model: OnnxModel) -> dict[str, dict[int, int]]:
    """Dims the PyTorch model declares dynamic that the exported ONNX inputs have fixed: {input: {axis: size}}."""
    exported = {s.name: s.shape for s in onnx_model.input_specs}
    fixed: dict[str, dict[int, int]] = {}
    for spec in model.input_specs:
        shape = exported.get(spec.name, ())
        axes = {i: shape[i] for i, d in enumerate(spec.shape)
                if not isinstance(d, int) and i < len(shape) and isinstance(shape[i], int)}
        if axes:
            fixed[spec.name] = axes
    return fixed


def _opset(proto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


class CleanupConfig(PassConfig):
    """No options: onnxslim folds constants, removes dead nodes and fuses simple patterns."""


@register
class OnnxCleanup(Pass):
    """Graph clean-up with onnxslim; the result is kept only if ONNX Runtime still loads it."""

    name = "onnx-cleanup"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = CleanupConfig
    description = "constant folding and dead-node removal (onnxslim)"

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        import onnxslim

        from slimkit.formats.onnx import ort_session

        assert isinstance(model, OnnxModel)
        before = len(model.proto.graph.node)
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slim = onnxslim.slim(copy_model(model.proto))
        except Exception as exc:
            return PassResult(model, {}, Outcome.skipped(f"onnxslim failed: {first_line(exc, 200)}"))
        cleaned = OnnxModel.from_proto(slim, like=model)
        cleaned.ensure_file(ctx.scratch("onnx-cleanup"))
        try:
            ort_session(cleaned, threads=1)
        except SlimkitError as exc:
            return PassResult(model, {}, Outcome.skipped(f"cleaned graph does not load: {exc.problem[:200]}"))
        return PassResult(cleaned, {"nodes_before": before, "nodes_after": len(slim.graph.node)})


class ToOpenVinoConfig(PassConfig):
    # fp16 weight compression halves the IR; off by default so the IR matches the ONNX numerics.
    compress_to_fp16: bool = False
    # Inference precision, stored in the IR: auto = the fastest the CPU runs natively (bf16 with AMX or
    # AVX-512 BF16, else f32; see slimkit.hardware). f32 keeps exact f32 numerics.
    precision: Literal["auto", "f32", "bf16", "f16"] = Field("auto", json_schema_extra=searchable(choices=["auto", "f32", "bf16"]))


@register
class ToOpenVino(Pass):
    """ONNX -> OpenVINO IR (`model.xml` + `model.bin`) with OpenVINO's own converter."""

    name = "to-openvino"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.OPENVINO
    Config = ToOpenVinoConfig
    description = "ONNX -> OpenVINO IR"

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        from slimkit.formats.openvino import PRECISION_RT_KEY
        from slimkit.hardware import import_openvino, resolve_openvino_precision

        assert isinstance(model, OnnxModel)
        ov = import_openvino()
        folder = ctx.scratch("to-openvino")
        source = model.ensure_file(ctx.scratch("to-openvino-src"))
        try:
            converted = ov.convert_model(str(source))
        except Exception as exc:
            raise SlimkitError(f"OpenVINO cannot convert this model: {first_line(exc, 200)}",
                               "check that every op is supported by OpenVINO's ONNX frontend") from exc
        precision, why = resolve_openvino_precision(self.config.precision)
        # OpenVINO applies runtime_options from the IR when it compiles it, so the artifact deploys as measured.
        converted.set_rt_info(precision, PRECISION_RT_KEY)
        xml = folder / "model.xml"
        ov.save_model(converted, str(xml), compress_to_fp16=self.config.compress_to_fp16)
        result = OpenVinoModel(path=xml, precision=precision)
        result.carry_over(model)
        return PassResult(result, {"openvino_version": ov.__version__, "compress_to_fp16": self.config.compress_to_fp16,
                                   "precision": precision, "precision_reason": why})


class ToTfliteConfig(PassConfig):
    # fp16: weights stored as float16 (ai-edge-quantizer's float casting, what the TFLite converter's
    # `supported_types = [tf.float16]` does); compute stays float32.
    precision: Literal["fp32", "fp16"] = Field("fp32", json_schema_extra=searchable(choices=["fp32", "fp16"]))


@register
class ToTflite(Pass):
    """PyTorch -> TFLite flatbuffer through litert-torch (static shapes, as TFLite expects)."""

    name = "to-tflite"
    accepts = frozenset({ModelKind.TORCH})
    returns = TFLITE_KIND
    Config = ToTfliteConfig
    description = "PyTorch -> TFLite (litert-torch), run with LiteRT"

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, TorchModel)
        shapes = {name: conversion_shape(spec, model.example_inputs[name], ctx)
                  for name, spec in zip(model.input_names, model.input_specs, strict=True)}
        result, stats = convert_from_torch(model, ctx.scratch("to-tflite"), input_shapes=shapes,
                                           precision=self.config.precision)
        return PassResult(result, stats)


def conversion_shape(spec, example, ctx: Context) -> tuple[int, ...]:
    """The shape an input is converted at for a fixed-shape format: the run's batch size, sequence length and
    --shape; a dynamic dim slimkit cannot name (an image's height) keeps the example input's extent."""
    from slimkit.data_sources import resolve_shape

    if ctx.shapes and spec.name in ctx.shapes:  # the user's --shape: a wrong one is their error to see
        return resolve_shape(spec, batch_size=ctx.batch_size, seq_len=ctx.seq_len, shapes=ctx.shapes)
    try:
        return resolve_shape(spec, batch_size=ctx.batch_size, seq_len=ctx.seq_len, shapes=ctx.shapes)
    except SlimkitError:
        dynamic_batch = bool(spec.shape) and not isinstance(spec.shape[0], int)
        return (ctx.batch_size if dynamic_batch else int(example.shape[0]), *map(int, example.shape[1:]))
