"""OpenVINO quantization with NNCF, the field's library for it: int8 post-training quantization (SmoothQuant and
bias correction as NNCF applies them), accuracy-controlled int8, and int8/int4 weight compression.

Each pass reads an OpenVINO IR, hands it to NNCF, and writes a new IR that keeps the source's inference
precision (see `to-openvino`). `slimkit optimize --recipe int8-static --to openvino` lands here (see
`pipeline.retarget`), so the quantization recipes work on OpenVINO instead of failing on ONNX Runtime-only ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from slimkit.config import ConfigError, is_power_of_two, require_a_target, searchable
from slimkit.errors import SlimkitError, require
from slimkit.models.base import ModelKind, OpenVinoModel, WorkingModel
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.outcome import Outcome
from slimkit.passes.quantize import MIN_CALIBRATION_SAMPLES, calibration_data
from slimkit.quiet import quiet_native


def _nncf():
    from slimkit.hardware import import_openvino

    import_openvino()  # telemetry off before NNCF imports OpenVINO
    return require("nncf", "openvino")


def _read(model: OpenVinoModel):
    from slimkit.hardware import import_openvino

    return import_openvino().Core().read_model(str(model.path))


def _write(ov_model, source, model: OpenVinoModel, ctx: Context, name: str) -> OpenVinoModel:
    """Save NNCF's result as a new IR carrying the source's precision setting."""
    from slimkit.hardware import import_openvino

    ov = import_openvino()
    from slimkit.formats.openvino import PRECISION_RT_KEY, stored_precision

    precision = stored_precision(source)
    if precision:
        ov_model.set_rt_info(precision, PRECISION_RT_KEY)
    xml = ctx.scratch(name) / "model.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    result = OpenVinoModel(path=xml, precision=model.precision)
    result.carry_over(model)
    return result


def is_transformer(ov_model) -> bool:
    """Attention inside (Softmax after MatMul, or a fused SDPA): NNCF's transformer model type applies then
    (SmoothQuant, attention-aware quantizer placement)."""
    ops = {op.get_type_name() for op in ov_model.get_ops()}
    return "ScaledDotProductAttention" in ops or ({"Softmax", "MatMul"} <= ops)


def _samples(model: OpenVinoModel, ctx: Context, limit: int, what: str) -> tuple[list[dict], np.ndarray | None]:
    """Up to `limit` single-sample feeds from ctx.data (the calibration / selection set), and their labels."""
    data = calibration_data(model, ctx, limit, batch_size=1, what=what)
    labels = data.arrays()[1] if data.has_labels else None
    return [b.feed for b in data.batches], labels


def _ops_count(ov_model, types: set[str]) -> int:
    return sum(1 for op in ov_model.get_ops() if op.get_type_name() in types)


class OvInt8Config(PassConfig):
    # NNCF's presets: performance = symmetric weights and activations; mixed = asymmetric activations.
    # None: NNCF's default (mixed for transformers, performance otherwise).
    preset: Literal["performance", "mixed"] | None = None
    model_type: Literal["auto", "transformer", "other"] = "auto"
    subset_size: int = Field(300, ge=MIN_CALIBRATION_SAMPLES)
    fast_bias_correction: bool = True


def _quantize_args(nncf, config, ov_model) -> dict[str, Any]:
    transformer = config.model_type == "transformer" or (config.model_type == "auto" and is_transformer(ov_model))
    args: dict[str, Any] = {"subset_size": config.subset_size, "fast_bias_correction": config.fast_bias_correction}
    if transformer:
        args["model_type"] = nncf.ModelType.TRANSFORMER
    if config.preset:
        args["preset"] = nncf.QuantizationPreset.PERFORMANCE if config.preset == "performance" \
            else nncf.QuantizationPreset.MIXED
    return args


@register
class OvInt8(Pass):
    """int8 weights and activations for OpenVINO, calibrated on --data by `nncf.quantize` (its defaults)."""

    name = "ov-int8"
    accepts = frozenset({ModelKind.OPENVINO})
    returns = ModelKind.OPENVINO
    Config = OvInt8Config
    description = "OpenVINO int8 post-training quantization with NNCF, calibrated on --data"
    search_stage = "quantize"
    quantizes = True
    needs_float = True

    def data_use(self) -> frozenset[str]:
        return frozenset({"calibrate"})

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, OpenVinoModel)
        nncf = _nncf()
        source = _read(model)
        _refuse_quantized(source, self.name)
        feeds, _labels = _samples(model, ctx, self.config.subset_size, self.name)
        args = _quantize_args(nncf, self.config, source)
        with quiet_native("NNCF"):  # its progress bars and INFO tables would break --json and drown the log
            quantized = nncf.quantize(source.clone(), nncf.Dataset(feeds), **args)
        result = _write(quantized, source, model, ctx, self.name)
        return PassResult(result, {
            "quantizer": f"nncf {nncf.__version__} quantize", "calibration_samples": len(feeds),
            "model_type": "transformer" if "model_type" in args else "default",
            "preset": self.config.preset or "nncf default",
            "fake_quantize_nodes": _ops_count(quantized, {"FakeQuantize"}),
        })


class OvInt8AutoConfig(OvInt8Config):
    # The target: keep the mean output cosine to the float model at or above min_cosine, or (labelled data)
    # lose at most max_drop accuracy; NNCF reverts the most harmful layers to float until it holds.
    min_cosine: float | None = Field(0.99, gt=0, le=1)
    max_drop: float | None = Field(None, ge=0, lt=1)
    max_reverted: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_target(self) -> OvInt8AutoConfig:
        require_a_target(self.min_cosine, self.max_drop, "ov-int8-auto",
                         "give min_cosine (e.g. 0.99) or max_drop (e.g. 0.01)")
        return self


@register
class OvInt8Auto(Pass):
    """Accuracy-controlled int8 for OpenVINO: `nncf.quantize_with_accuracy_control` on --data."""

    name = "ov-int8-auto"
    accepts = frozenset({ModelKind.OPENVINO})
    returns = ModelKind.OPENVINO
    Config = OvInt8AutoConfig
    description = "OpenVINO int8 with NNCF's accuracy control: sensitive layers back to float until the target holds"
    search_stage = "quantize"  # its target is the search's floor
    quantizes = True
    needs_float = True

    def data_use(self) -> frozenset[str]:
        return frozenset({"calibrate", "select"})

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, OpenVinoModel)
        nncf = _nncf()
        from slimkit.hardware import import_openvino

        source = _read(model)
        _refuse_quantized(source, self.name)
        feeds, labels = _samples(model, ctx, self.config.subset_size, self.name)
        use_accuracy = self.config.max_drop is not None and labels is not None
        if use_accuracy:
            targets: list[Any] = [int(v) for v in labels]
            max_drop, metric = float(self.config.max_drop), "accuracy"
        else:  # fidelity: cosine of each output to the float model's own output on the same sample
            compiled = import_openvino().Core().compile_model(source, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            targets = [np.asarray(compiled(feed)[0]).ravel() for feed in feeds]
            max_drop, metric = 1.0 - float(self.config.min_cosine or 0.99), "cosine"
        items = list(zip(feeds, targets, strict=True))

        def validate(compiled_model, data_items) -> tuple[float, list[float]]:
            scores = []
            for feed, target in data_items:
                out = np.asarray(compiled_model(feed)[0])
                if use_accuracy:
                    scores.append(float(int(out.reshape(-1, out.shape[-1]).argmax(-1)[0]) == target))
                else:
                    flat = out.ravel().astype(np.float64)
                    denom = np.linalg.norm(flat) * np.linalg.norm(target) or 1.0
                    scores.append(float(flat @ target / denom))
            return float(np.mean(scores)), scores

        args = _quantize_args(nncf, self.config, source)
        restorer = {}
        if self.config.max_reverted is not None:
            restorer["advanced_accuracy_restorer_parameters"] = nncf.AdvancedAccuracyRestorerParameters(
                max_num_iterations=self.config.max_reverted)
        with quiet_native("NNCF"):
            quantized = nncf.quantize_with_accuracy_control(
                source.clone(), nncf.Dataset(feeds), nncf.Dataset(items, lambda item: item[0]), validate,
                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **args, **restorer)
        final, _ = validate(import_openvino().Core().compile_model(quantized, "CPU"), items)
        base, _ = validate(import_openvino().Core().compile_model(source, "CPU"), items)
        result = _write(quantized, source, model, ctx, self.name)
        met = base - final <= max_drop + 1e-9
        stats = {
            "quantizer": f"nncf {nncf.__version__} quantize_with_accuracy_control", "metric": metric,
            "calibration_samples": len(feeds), "float_score": round(base, 6), "int8_score": round(final, 6),
            "max_drop": round(max_drop, 6), "fake_quantize_nodes": _ops_count(quantized, {"FakeQuantize"}),
        }
        fell = f"{metric} fell {base - final:.4f}, more than the {max_drop:.4f} allowed"
        outcome = Outcome.judged(met, metric=f"{metric}_drop", measured=base - final, target=max_drop,
                                 reason=fell)
        return PassResult(result, stats, outcome)


class OvWeightsConfig(PassConfig):
    bits: Literal[4, 8] = Field(4, json_schema_extra=searchable(choices=[8, 4]))
    # Weights per scale: 32-128 for int4 (smaller groups are more faithful, larger ones faster); -1 = per channel.
    group_size: int = 128
    symmetric: bool = False
    # Share of the eligible layers in int4 (the rest int8, the most sensitive by NNCF's data-free criterion).
    ratio: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _group(self) -> OvWeightsConfig:
        if self.group_size != -1 and (self.group_size < 16 or not is_power_of_two(self.group_size)):
            raise ConfigError("group_size", f"group_size={self.group_size} is neither -1 nor a power of two "
                              ">= 16", "use -1 (per channel), 32, 64 or 128")
        if self.bits == 8 and self.ratio != 1.0:
            raise ConfigError("ratio", f"ratio={self.ratio} applies to int4 only, and bits=8",
                              "drop ratio, or set bits: 4")
        return self


@register
class OvWeights(Pass):
    """Weight-only compression for OpenVINO (`nncf.compress_weights`): int8 or int4 weights, float activations
    (OpenVINO's CPU plugin may quantize activations on the fly for the matmuls)."""

    name = "ov-weights"
    accepts = frozenset({ModelKind.OPENVINO})
    returns = ModelKind.OPENVINO
    Config = OvWeightsConfig
    description = "OpenVINO int8 / int4 weight compression with NNCF (data-free)"
    search_stage = "quantize"
    quantizes = True
    needs_float = True

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, OpenVinoModel)
        nncf = _nncf()
        source = _read(model)
        _refuse_quantized(source, self.name)
        mode_name = f"INT{self.config.bits}_{'SYM' if self.config.symmetric else 'ASYM'}"
        mode = getattr(nncf.CompressWeightsMode, mode_name)
        args: dict[str, Any] = {"mode": mode}
        if self.config.bits == 4:
            from nncf.quantization.advanced_parameters import GroupSizeFallbackMode

            # A layer whose input size the group does not divide (300 = 4 x 75) gets the largest power-of-two
            # group >= 16 that does, or stays int8: NNCF's ADJUST, rather than failing the whole model.
            args.update(group_size=self.config.group_size, ratio=self.config.ratio,
                        advanced_parameters=nncf.AdvancedCompressionParameters(
                            group_size_fallback_mode=GroupSizeFallbackMode.ADJUST, min_adjusted_group_size=16))
        with quiet_native("NNCF"):
            compressed = nncf.compress_weights(source.clone(), **args)
        result = _write(compressed, source, model, ctx, self.name)
        before, after = Path(model.path).with_suffix(".bin"), result.path.with_suffix(".bin")
        return PassResult(result, {
            "compressor": f"nncf {nncf.__version__} compress_weights", "mode": mode_name.lower(),
            "group_size": self.config.group_size if self.config.bits == 4 else None,
            "ratio": self.config.ratio if self.config.bits == 4 else None,
            "weights_bytes_before": before.stat().st_size if before.exists() else None,
            "weights_bytes_after": after.stat().st_size,
        })


def _refuse_quantized(ov_model, pass_name: str) -> None:
    """FakeQuantize nodes (int8 PTQ) or low-bit constants (weight compression) mean it was quantized already."""
    from slimkit.formats.openvino import low_bit_form

    if low_bit_form(ov_model):
        raise SlimkitError(f"{pass_name}: the OpenVINO model is already quantized",
                           "start from the float model; quantizing twice only adds error")
