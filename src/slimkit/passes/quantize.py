"""ONNX quantization passes, wrapping ONNX Runtime's quantization tooling and handling its pitfalls.

- `int8-dynamic`: int8 weights, activations quantized at run time (MatMulInteger / QAttention).
  Gemm is rewritten as MatMul first (ONNX Runtime has no integer Gemm); Conv is left in float by
  default because ConvInteger is far slower than float Conv on CPUs; `reduce_range` (7-bit
  weights) is chosen from the CPU: needed without VNNI to avoid u8*s8 saturation, not with it.
- `int8-static`: QDQ format, activations calibrated on user data (minmax, percentile, entropy),
  per-channel weights, after ONNX Runtime's pre-processing (shape inference, fusion).
- `weight-only`: block-wise int4 / int8 weights for MatMul (MatMulNBits) and embeddings
  (GatherBlockQuantized); activations stay float.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Literal

import onnx
from pydantic import Field, field_validator

from slimkit.config import ConfigError, is_power_of_two, searchable
from slimkit.errors import SlimkitError, describe, raised_by_library
from slimkit.models.base import ModelKind, OnnxModel, WorkingModel, save_onnx
from slimkit.models.onnx_checks import refuse_nonfinite_weights
from slimkit.models.onnx_graph import copy_model, ensure_node_names, gemm_to_matmul, quantized_ops
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.quiet import quiet_native
from slimkit.scratch import scratch_dir

MIN_CALIBRATION_SAMPLES = 16


def cpu_has_vnni() -> bool:
    """VNNI (AVX512-VNNI, AVX-VNNI or AMX) multiplies u8*s8 without the 16-bit saturation of AVX2."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_vnni", " avx_vnni", " amx_int8"))


def resolve_reduce_range(setting: bool | Literal["auto"]) -> tuple[bool, str]:
    if setting != "auto":
        return bool(setting), "set in the recipe"
    if cpu_has_vnni():
        return False, "CPU has VNNI: full 8-bit weights do not saturate"
    return True, "CPU has no VNNI: 7-bit weights avoid u8*s8 saturation in AVX2 kernels"


def refuse_quantized(model: OnnxModel, pass_name: str) -> None:
    found = quantized_ops(model.proto)
    if found:
        raise SlimkitError(f"{pass_name}: the model is already quantized (it has {', '.join(found)})",
                           "start from the float model; quantizing twice only adds error")


def _inputs_of(proto: onnx.ModelProto, op_types) -> set[str]:
    """Names the main graph's nodes of `op_types` read: the weights a quantizer would quantize among them."""
    return {name for node in proto.graph.node if node.op_type in set(op_types) for name in node.input}


@contextlib.contextmanager
def quiet_quantizer():
    """Run ONNX Runtime's quantizer quietly and away from the user's files; the caller's state comes back.

    It logs pre-processing advice on every call (through the root logger, hence its level), its internal
    sessions print "[E:onnxruntime:...]" / "[W:onnxruntime:...]" lines to the process's stderr (caught by
    `quiet_native`, whose tail a failure then carries), and for large models it can leave external-data
    files named `<uuid>.data` in the current directory; so it runs with a scratch folder as cwd. The working
    directory and the root logger's level are restored on the way out, also when the quantizer raises.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    previous = os.getcwd()
    try:
        with scratch_dir("slimkit-ort-quant-") as scratch:
            os.chdir(scratch)
            try:
                with quiet_native("ONNX Runtime's quantizer"):
                    yield
            finally:
                os.chdir(previous)
    finally:
        root.setLevel(level)


# ONNX Runtime's quantization tooling and what it calls; an exception raised inside them is the tooling
# refusing this model, not a slimkit bug (those, and errors of our own calibration reader, propagate).
QUANTIZER_LIBRARIES = ("onnxruntime", "onnx")


@contextlib.contextmanager
def quantizer_failures(tool: str):
    """ONNX Runtime's `tool` failing on this model becomes one SlimkitError that quotes the real reason."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, SlimkitError) or not raised_by_library(exc, QUANTIZER_LIBRARIES):
            raise
        raise SlimkitError(f"ONNX Runtime's {tool} failed on this model: {describe(exc)}",
                           "try another recipe (e.g. int8-weight or fp16), or keep the node it names in float "
                           "with `exclude:` in the recipe") from exc


def prepared_copy(model: OnnxModel) -> onnx.ModelProto:
    proto = copy_model(model.proto)
    ensure_node_names(proto)
    return proto


def float_ops_left(proto: onnx.ModelProto, quantizable: set[str]) -> list[str]:
    """Weight-carrying op types still computing in float after quantization (reported, not hidden)."""
    inits = {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    left = {n.op_type for n in proto.graph.node if n.op_type in quantizable | {"Conv", "Gemm", "MatMul", "Attention"}
            and any(i in inits for i in n.input[1:2])}
    return sorted(left)


class DynamicConfig(PassConfig):
    per_channel: bool = Field(True, json_schema_extra=searchable(choices=[True, False]))
    reduce_range: bool | Literal["auto"] = "auto"
    op_types: list[str] = ["MatMul", "Attention", "Gather"]
    exclude: list[str] = []  # node names kept in float
    gemm_to_matmul: bool = True


@register
class Int8Dynamic(Pass):
    name = "int8-dynamic"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = DynamicConfig
    description = "int8 weights, activations quantized at run time (ONNX Runtime)"
    search_stage = "quantize"
    search_needs = ("transformer-fusion",)
    quantizes = True
    needs_float = True

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, OnnxModel)
        refuse_quantized(model, self.name)
        proto = prepared_copy(model)
        rewritten = gemm_to_matmul(proto) if self.config.gemm_to_matmul else 0
        refuse_nonfinite_weights(proto, f"quantize ({self.name})", _inputs_of(proto, self.config.op_types))
        reduce_range, why = resolve_reduce_range(self.config.reduce_range)
        quantized = quantize_dynamic_proto(proto, self.config, reduce_range)
        result = OnnxModel.from_proto(quantized, like=model)
        result.ensure_file(ctx.scratch(self.name))
        return PassResult(result, {
            "per_channel": self.config.per_channel, "reduce_range": reduce_range, "reduce_range_reason": why,
            "op_types": self.config.op_types, "gemm_rewritten_as_matmul": rewritten,
            "excluded_nodes": list(self.config.exclude),
            "float_weight_ops_left": float_ops_left(quantized, set(self.config.op_types)),
        })


def quantize_dynamic_proto(proto: onnx.ModelProto, config: DynamicConfig, reduce_range: bool,
                           nodes_to_quantize: list[str] | None = None) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with scratch_dir("slimkit-q-") as tmp, quiet_quantizer(), quantizer_failures("quantize_dynamic"):
        out = Path(tmp) / "q.onnx"
        src = save_onnx(proto, Path(tmp) / "in.onnx")
        quantize_dynamic(
            str(src), str(out), op_types_to_quantize=list(config.op_types), per_channel=config.per_channel,
            reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=list(config.exclude),
            nodes_to_quantize=nodes_to_quantize or [],
            extra_options={"MatMulConstBOnly": True},
        )
        return onnx.load(str(out))


class StaticConfig(PassConfig):
    calibration: Literal["minmax", "percentile", "entropy"] = Field("minmax", json_schema_extra=searchable(choices=["minmax", "percentile", "entropy"]))
    percentile: float = Field(99.999, gt=50, le=100)  # of |activations|, for calibration: percentile
    # auto: per-channel for Conv weights, per-tensor for Gemm/MatMul (ONNX Runtime only fuses a QDQ Gemm
    # into QGemm with per-tensor weights; per-channel ones leave a float Gemm behind DequantizeLinear).
    per_channel: bool | Literal["auto"] = "auto"
    reduce_range: bool | Literal["auto"] = "auto"
    samples: int = Field(256, ge=MIN_CALIBRATION_SAMPLES)  # calibration samples used at most
    op_types: list[str] | None = None  # None: every op ONNX Runtime can quantize in QDQ form
    exclude: list[str] = []
    preprocess: bool = True


@register
class Int8Static(Pass):
    name = "int8-static"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = StaticConfig
    description = "int8 QDQ with activations calibrated on --data"
    search_stage = "quantize"
    quantizes = True
    needs_float = True

    def data_use(self) -> frozenset[str]:
        return frozenset({"calibrate"})

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        assert isinstance(model, OnnxModel)
        refuse_quantized(model, self.name)
        reader = calibration_reader(model, ctx, self.config.samples)
        proto = prepared_copy(model)  # Gemm stays: QDQ Gemm becomes QGemm, which fuses the bias
        refuse_nonfinite_weights(proto, f"quantize ({self.name})",
                                 _inputs_of(proto, self.config.op_types) if self.config.op_types else None)
        preprocessed, preprocess_note = _preprocess(proto) if self.config.preprocess else (None, None)
        if preprocessed is not None:
            proto = preprocessed
            ensure_node_names(proto)
        reduce_range, why = resolve_reduce_range(self.config.reduce_range)
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[self.config.calibration]
        extra: dict = {"CalibPercentile": self.config.percentile} if self.config.calibration == "percentile" else {}
        per_channel = self.config.per_channel
        if per_channel == "auto":
            per_channel = False
            conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv" and len(n.input) > 1}
            inits = {t.name for t in proto.graph.initializer}
            extra["TensorQuantOverrides"] = {w: [{"axis": 0}] for w in conv_weights & inits}
        with scratch_dir("slimkit-q-") as tmp, quiet_quantizer(), quantizer_failures("quantize_static"):
            out = Path(tmp) / "q.onnx"
            src = save_onnx(proto, Path(tmp) / "in.onnx")
            quantize_static(
                str(src), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=method, op_types_to_quantize=self.config.op_types,
                nodes_to_exclude=list(self.config.exclude), extra_options=extra,
            )
            quantized = onnx.load(str(out))
        result = OnnxModel.from_proto(quantized, like=model)
        result.ensure_file(ctx.scratch(self.name))
        stats = {
            "calibration": self.config.calibration, "calibration_samples": reader.samples,
            "per_channel": self.config.per_channel, "per_channel_tensors": len(extra.get("TensorQuantOverrides", {})),
            "reduce_range": reduce_range, "reduce_range_reason": why, "preprocessed": preprocessed is not None,
            "format": "QDQ",
            "float_weight_ops_left": float_ops_left(quantized, set(self.config.op_types or ["MatMul", "Conv"])),
        }
        if preprocess_note:
            stats["preprocess_note"] = preprocess_note
        return PassResult(result, stats)


def _preprocess(proto: onnx.ModelProto) -> tuple[onnx.ModelProto | None, str | None]:
    """ONNX Runtime's quantization pre-processing (symbolic shape inference + graph optimization).

    Best effort: when symbolic shape inference fails (e.g. "Incomplete symbolic shape inference" on dims it
    cannot merge) it runs again without it, and when that fails too quantization goes on without
    pre-processing. Returns (the pre-processed model or None, a note saying what was skipped and why);
    only ONNX Runtime's tooling failing is absorbed, an error of slimkit's own propagates.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with scratch_dir("slimkit-pre-") as tmp, quiet_quantizer():
        src = save_onnx(proto, Path(tmp) / "in.onnx")
        out = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
        except Exception as exc:
            if not raised_by_library(exc, QUANTIZER_LIBRARIES):
                raise
            symbolic = describe(exc, 160)
        else:
            return onnx.load(str(out)), None
        try:
            quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
        except Exception as exc:
            if not raised_by_library(exc, QUANTIZER_LIBRARIES):
                raise
            return None, f"skipped: {describe(exc, 160)} (with symbolic shape inference: {symbolic})"
        return onnx.load(str(out)), f"done without symbolic shape inference, which failed: {symbolic}"


class _Reader:
    """ONNX Runtime CalibrationDataReader over slimkit's data (one feed dict per call)."""

    def __init__(self, feeds: list[dict]) -> None:
        self.feeds = feeds
        self.samples = sum(next(iter(f.values())).shape[0] for f in feeds) if feeds else 0
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)


def calibration_data(model: WorkingModel, ctx: Context, max_samples: int, *, batch_size: int = 8,
                     what: str = "int8-static"):
    """ctx.data as calibration batches, refused when absent, generated or under MIN_CALIBRATION_SAMPLES."""
    from slimkit.data_sources import load_data

    if ctx.data is None:
        raise SlimkitError(f"{what} needs calibration data",
                           f"pass --data with at least {MIN_CALIBRATION_SAMPLES} representative samples")
    data = load_data(ctx.data, model, batch_size=batch_size, seq_len=ctx.seq_len, shapes=ctx.shapes,
                     max_samples=max_samples)
    if data.generated or data.num_samples < MIN_CALIBRATION_SAMPLES:
        raise SlimkitError(
            f"too few calibration samples: {data.num_samples}",
            f"give at least {MIN_CALIBRATION_SAMPLES} (a few hundred representative samples is better)",
        )
    return data


def calibration_reader(model: OnnxModel, ctx: Context, max_samples: int) -> _Reader:
    return _Reader([b.feed for b in calibration_data(model, ctx, max_samples).batches])


class WeightOnlyConfig(PassConfig):
    bits: Literal[4, 8] = Field(4, json_schema_extra=searchable(choices=[8, 4]))
    block_size: int = Field(32, json_schema_extra=searchable(choices=[32, 128]))  # weights per scale: a power of two >= 16
    symmetric: bool = True
    # 4 = int8 compute for MatMulNBits (faster on CPU), 0 = unset (fp32 compute).
    accuracy_level: Literal[0, 1, 2, 3, 4] = 4
    embeddings: bool = True
    exclude: list[str] = []

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, block: int) -> int:
        if block < 16 or not is_power_of_two(block):
            raise ConfigError("block_size", f"block_size={block} is not a power of two >= 16",
                              "use 16, 32, 64 or 128")
        return block


@register
class WeightOnly(Pass):
    name = "weight-only"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = WeightOnlyConfig
    description = "block-wise int4/int8 weights for MatMul (MatMulNBits) and embeddings"
    search_stage = "quantize"
    quantizes = True
    needs_float = True

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        assert isinstance(model, OnnxModel)
        refuse_quantized(model, self.name)
        block = self.config.block_size
        proto = prepared_copy(model)
        gemm_to_matmul(proto)
        # ONNX Runtime's GatherBlockQuantized (quantized embeddings) exists for 4 bits only.
        embeddings = self.config.embeddings and self.config.bits == 4
        op_types = ("MatMul", "Gather") if embeddings else ("MatMul",)
        algo = DefaultWeightOnlyQuantConfig(
            block_size=block, is_symmetric=self.config.symmetric, bits=self.config.bits,
            accuracy_level=self.config.accuracy_level or None, quant_format=QuantFormat.QOperator,
            op_types_to_quantize=op_types, quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        with quiet_quantizer(), quantizer_failures("MatMulNBits quantizer"):
            quantizer = MatMulNBitsQuantizer(
                proto, bits=self.config.bits, block_size=block, is_symmetric=self.config.symmetric,
                accuracy_level=self.config.accuracy_level or None, nodes_to_exclude=list(self.config.exclude),
                algo_config=algo, op_types_to_quantize=op_types,
            )
            quantizer.process()
        quantized = quantizer.model.model
        result = OnnxModel.from_proto(quantized, like=model)
        result.ensure_file(ctx.scratch(self.name))
        counts = {op: sum(n.op_type == op for n in quantized.graph.node) for op in ("MatMulNBits", "GatherBlockQuantized")}
        return PassResult(result, {"bits": self.config.bits, "block_size": block, "symmetric": self.config.symmetric,
                                   "accuracy_level": self.config.accuracy_level, "quantized_nodes": counts,
                                   "embeddings": "quantized" if embeddings else "float",
                                   "float_weight_ops_left": float_ops_left(quantized, {"MatMul"})})
