"""TFLite quantization with ai-edge-quantizer, the quantizer made for LiteRT: dynamic-range, weight-only and
full-integer static int8 (int16 activations for sensitive models), int4 weights (block-wise where LiteRT has the
kernels), and an accuracy-aware int8 that keeps the most sensitive ops in float.

ai-edge-quantizer does the quantization; slimkit chooses the recipe, feeds it calibration data from --data, names
the ops it left in float, and measures what the result costs on LiteRT (see `formats/tflite_graph.py`): a smaller
TFLite file is often a slower one, because its ops leave XNNPACK for the reference kernels.
`slimkit optimize --recipe int8-static --to tflite` lands here (see `formats/tflite.py`'s retarget rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from slimkit.config import AtLeastOne, ConfigError, Cosine, require_a_target, searchable
from slimkit.errors import SlimkitError, first_line, require
from slimkit.evaluate.fidelity import accuracy, compare_outputs
from slimkit.evaluate.latency import interleaved_p50
from slimkit.formats.tflite import KIND as TFLITE_KIND
from slimkit.formats.tflite import TfliteModel, TfliteRunner, to_input
from slimkit.formats.tflite_graph import float_weights, ops_of, precision_by_op
from slimkit.models.base import WorkingModel
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.mixed_precision import meets_target, target_loss, target_outcome
from slimkit.passes.quantize import MIN_CALIBRATION_SAMPLES, calibration_data
from slimkit.quiet import quiet_native

BLOCK_SIZES = (0, 32, 64, 128, 256)  # 0: one scale per output channel
# Ops whose weight tensor a weight scheme quantizes (an ADD of a constant bias is not one of them).
WEIGHT_OPS = frozenset({"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "BATCH_MATMUL",
                        "EMBEDDING_LOOKUP", "GATHER"})


def _aeq():
    """ai-edge-quantizer's modules (the `tflite` extra)."""
    with quiet_native("ai-edge-quantizer"):
        require("ai_edge_quantizer", "tflite")
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    return quantizer, qtyping, algorithm_manager


@dataclass(frozen=True)
class Scheme:
    """One ai-edge-quantizer recipe: `mode` dynamic (int weights, activations quantized on the fly by the
    kernel), weight_only (int weights dequantized in the graph, float compute) or static (int weights and
    calibrated int activations); `keep_float` holds op scopes left in float."""

    mode: Literal["dynamic", "weight_only", "static"]
    weight_bits: int = 8
    activation_bits: int = 8
    per_channel: bool = True
    block_size: int = 0
    keep_float: tuple[str, ...] = ()

    def describe(self) -> str:
        weights = f"int{self.weight_bits} weights " + (
            f"block {self.block_size}" if self.block_size else "per channel" if self.per_channel else "per tensor")
        if self.mode == "static":
            return f"{weights}, int{self.activation_bits} activations (calibrated)"
        return weights + (", float compute" if self.mode == "weight_only" else ", activations quantized at run time")


def _quantizer(source: Path, scheme: Scheme):
    quantizer, qtyping, algorithm_manager = _aeq()
    granularity = (getattr(qtyping.QuantGranularity, f"BLOCKWISE_{scheme.block_size}") if scheme.block_size
                   else qtyping.QuantGranularity.CHANNELWISE if scheme.per_channel
                   else qtyping.QuantGranularity.TENSORWISE)
    every = qtyping.TFLOperationName.ALL_SUPPORTED
    q = quantizer.Quantizer(str(source))
    if scheme.mode == "dynamic":
        q.add_dynamic_config(".*", every, scheme.weight_bits, granularity)
    elif scheme.mode == "weight_only":
        q.add_weight_only_config(".*", every, scheme.weight_bits, granularity)
    else:
        q.add_static_config(".*", every, scheme.activation_bits, scheme.weight_bits, granularity)
    for scope in scheme.keep_float:  # a later recipe entry wins over ".*" for the ops it matches
        q.update_quantization_recipe(regex="^" + re.escape(scope) + "$", operation_name=every,
                                     algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    return q


def quantize_tflite(source: Path, target: Path, scheme: Scheme, *, calibration: dict | None = None,
                    qsvs: dict | None = None, threads: int = 1) -> dict | None:
    """Write `source` quantized by `scheme` to `target`; returns the calibration statistics (reusable for another
    scheme over the same model). A static scheme needs `calibration` (signature -> feeds) or earlier `qsvs`."""
    q = _quantizer(source, scheme)
    if q.need_calibration and qsvs is None and calibration is None:
        raise SlimkitError("static TFLite quantization needs calibration data",
                           f"pass --data with at least {MIN_CALIBRATION_SAMPLES} representative samples")
    failure: Exception | None = None
    with quiet_native("ai-edge-quantizer"):
        try:
            if q.need_calibration and qsvs is None:
                qsvs = q.calibrate(calibration, num_threads=threads)
            q.quantize(qsvs if q.need_calibration else None, enable_progress_report=False).export_model(
                str(target), overwrite=True)
        except Exception as exc:  # the quantizer's failures are not typed
            failure = exc
    if failure is not None:  # raised outside, so the message stays one line without the quantizer's log
        raise SlimkitError(f"ai-edge-quantizer cannot quantize this TFLite model ({scheme.describe()}): "
                           f"{first_line(failure, 200)}", "try another recipe (int8-dynamic, fp16) or --to onnx"
                           ) from failure
    return qsvs


def signature_feeds(model: TfliteModel, feeds: list[dict[str, np.ndarray]]) -> dict[str, list[dict]]:
    """Feeds keyed by slimkit's input names, as ai-edge-quantizer wants them: by signature input name, in the
    tensor's dtype (token ids as int32)."""
    with quiet_native("LiteRT"):
        interpreter = require("ai_edge_litert.interpreter", "tflite").Interpreter(model_path=str(model.path))
    key = next(iter(interpreter.get_signature_list()))
    by_index = {d["index"]: name for name, d in interpreter.get_signature_runner(key).get_input_details().items()}
    details = interpreter.get_input_details()
    names = model.input_names or [d["name"] for d in details]
    return {key: [{by_index[d["index"]]: to_input(feed[n], d) for n, d in zip(names, details, strict=False)}
                  for feed in feeds]}


def _model_batch(model: TfliteModel, threads: int) -> int:
    specs = TfliteRunner(model, threads).input_specs
    return int(specs[0].shape[0]) if specs and specs[0].shape else 1


def _full_batches(model: TfliteModel, ctx: Context, limit: int, what: str):
    """ctx.data in batches of the model's fixed batch size (a TFLite model is converted at one shape);
    a last partial batch is dropped."""
    batch = _model_batch(model, ctx.threads)
    data = calibration_data(model, ctx, max(limit, batch), batch_size=batch, what=what)
    full = [b for b in data.batches if b.size == batch]
    if not full:
        raise SlimkitError(f"{what} needs at least {batch} samples (the TFLite model's batch size), got "
                           f"{data.num_samples}", "pass more --data, or convert at a smaller --batch-size")
    return full, data


def _refuse_quantized(model: TfliteModel, name: str) -> None:
    if not float_weights(model.path):
        raise SlimkitError(f"{name}: the TFLite model is already quantized or stores fp16 weights",
                           "start from the fp32 TFLite (to-tflite with precision fp32); quantizing twice only "
                           "adds error")


def _report(source: Path, result: Path, scheme: Scheme) -> dict[str, Any]:
    """What ai-edge-quantizer did, by op type; ops it left in float are named (weight ops for weight schemes,
    every op for static ones)."""
    by_type = precision_by_op(result)
    ops, tensors = ops_of(source)
    weighted = {op.name for op in ops if op.name in WEIGHT_OPS
                and any(tensors[t]["constant"] and len(tensors[t]["shape"]) >= 2 and "float" in np.dtype(
                    tensors[t]["dtype"]).name for t in op.inputs if t in tensors)}
    kept = {name: row["float"] for name, row in by_type.items() if row["float"]
            and (scheme.mode == "static" or name in weighted)}
    return {
        "mode": scheme.mode,
        "scheme": scheme.describe(),
        "quantized_ops": {name: row["quantized"] for name, row in by_type.items() if row["quantized"]},
        "kept_float_ops": kept,
        "bytes_before": source.stat().st_size,
        "bytes_after": result.stat().st_size,
    }


def _finish(model: TfliteModel, ctx: Context, name: str, scheme: Scheme, *, calibration: dict | None = None,
            qsvs: dict | None = None) -> tuple[TfliteModel, dict]:
    target = ctx.scratch(name) / "model.tflite"
    quantize_tflite(model.path, target, scheme, calibration=calibration, qsvs=qsvs, threads=ctx.threads)
    result = TfliteModel(path=target, input_names=model.input_names)
    result.carry_over(model)
    stats = {"quantizer": f"ai-edge-quantizer {_version()}", **_report(model.path, target, scheme)}
    if stats["kept_float_ops"]:
        ctx.progress(f"{name}: kept in float by ai-edge-quantizer: "
                     + ", ".join(f"{k} x{v}" for k, v in stats["kept_float_ops"].items()))
    return result, stats


def _version() -> str:
    from importlib import metadata

    return metadata.version("ai-edge-quantizer")


class TfliteQuantPass(Pass):
    accepts = frozenset({TFLITE_KIND})
    returns = TFLITE_KIND
    quantizes = True
    needs_float = True
    search_stage = "quantize"
    search_fixes = {"to-tflite": {"precision": "fp32"}}  # quantized from the fp32 flatbuffer, never fp16

    def scheme(self) -> Scheme:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, TfliteModel) and model.path is not None
        _refuse_quantized(model, self.name)
        result, stats = _finish(model, ctx, self.name, self.scheme())
        return PassResult(result, stats)


class DynamicConfig(PassConfig):
    # int8 weights with activations quantized by the kernel at run time (the TFLite converter's
    # `optimizations = [tf.lite.Optimize.DEFAULT]` without a representative dataset); bits 4 with a block size
    # is LiteRT's block-wise int4 for FULLY_CONNECTED.
    bits: Literal[4, 8] = Field(8, json_schema_extra=searchable(choices=[8, 4]))
    per_channel: bool = True
    block_size: int = 0

    @model_validator(mode="after")
    def _granularity(self) -> DynamicConfig:
        _check_block(self.block_size, self.bits, self.per_channel)
        return self


def _check_block(block: int, bits: int, per_channel: bool) -> None:
    if block not in BLOCK_SIZES:
        raise ConfigError("block_size", f"block_size={block} is not one of {BLOCK_SIZES}",
                          "use 0 (per channel), 32, 64, 128 or 256")
    if block and bits != 4:
        raise ConfigError("block_size", f"block_size={block} with bits={bits}: LiteRT has block-wise kernels "
                          "for int4 weights only", "set bits: 4, or block_size: 0")
    if block and not per_channel:
        raise ConfigError("per_channel", "per_channel=false and a block size both set", "choose one")


@register
class TfliteDynamic(TfliteQuantPass):
    """Dynamic-range quantization: int8 (or int4) weights; LiteRT quantizes activations per call."""

    name = "tflite-dynamic"
    Config = DynamicConfig
    description = "TFLite dynamic-range int8/int4 weights (ai-edge-quantizer); no data needed"

    def scheme(self) -> Scheme:
        cfg = self.config
        return Scheme("dynamic", cfg.bits, per_channel=cfg.per_channel, block_size=cfg.block_size)


class WeightOnlyConfig(PassConfig):
    bits: Literal[4, 8] = Field(8, json_schema_extra=searchable(choices=[8, 4]))
    per_channel: bool = True


@register
class TfliteWeightOnly(TfliteQuantPass):
    """Weight-only quantization: int8/int4 weights stored, dequantized in the graph, float compute."""

    name = "tflite-weight-only"
    Config = WeightOnlyConfig
    description = "TFLite int8/int4 weights dequantized in the graph, float compute (ai-edge-quantizer)"

    def scheme(self) -> Scheme:
        return Scheme("weight_only", self.config.bits, per_channel=self.config.per_channel)


class StaticConfig(PassConfig):
    # Full-integer: int8 weights and int8 activations calibrated on --data (the TFLite converter with a
    # `representative_dataset`); 16 = int16 activations, for models int8 activations hurt.
    activation_bits: Literal[8, 16] = Field(8, json_schema_extra=searchable(choices=[8, 16]))
    per_channel: bool = True
    samples: int = Field(200, ge=MIN_CALIBRATION_SAMPLES)  # calibration samples read from --data
    # Op types (SOFTMAX) or op names (an output tensor name, as kept_float_by_choice lists them) kept in float.
    keep_float: list[str] = []


def _keep_float_scopes(model: TfliteModel, wanted: list[str]) -> tuple[str, ...]:
    if not wanted:
        return ()
    ops, _ = ops_of(model.path)
    scopes = tuple(op.scope for op in ops if op.name in wanted or op.scope in wanted or any(
        w in op.outputs for w in wanted))
    unknown = [w for w in wanted if not any(w == op.name or w == op.scope or w in op.outputs for op in ops)]
    if unknown:
        raise ConfigError("keep_float", f"keep_float names {unknown}, which no op of this model matches",
                          "give op types (" + ", ".join(sorted({op.name for op in ops})[:8]) + ", ...) or op names")
    return scopes


@register
class TfliteStatic(TfliteQuantPass):
    """Full-integer static quantization, calibrated on --data: XNNPACK's int8 kernels end to end."""

    name = "tflite-static"
    Config = StaticConfig
    description = "TFLite full-integer int8 (or int16-activation) quantization calibrated on --data"

    def data_use(self) -> frozenset[str]:
        return frozenset({"calibrate"})

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, TfliteModel) and model.path is not None
        _refuse_quantized(model, self.name)
        cfg = self.config
        batches, _data = _full_batches(model, ctx, cfg.samples, self.name)
        scheme = Scheme("static", 8, cfg.activation_bits, cfg.per_channel,
                        keep_float=_keep_float_scopes(model, cfg.keep_float))
        result, stats = _finish(model, ctx, self.name, scheme,
                                calibration=signature_feeds(model, [b.feed for b in batches]))
        stats["calibration_samples"] = sum(b.size for b in batches)
        return PassResult(result, stats)


class AutoConfig(StaticConfig):
    min_cosine: Cosine | None = 0.99
    max_drop: float | None = Field(None, ge=0, lt=1)  # accuracy drop allowed, needs labelled --data
    eval_samples: AtLeastOne = 64
    sensitivity_samples: AtLeastOne = 8
    # Graphs with more ops than this are ranked by op type (all SOFTMAX ops as one unit), not op by op.
    max_units: AtLeastOne = 48
    # Also try these int8 variants (no activation calibration: dynamic-range quantizes activations per call,
    # weight-only computes in float) and keep whichever variant meeting the target is faster here.
    also_try: list[Literal["dynamic", "weight_only"]] = ["dynamic", "weight_only"]

    @model_validator(mode="after")
    def _has_a_target(self) -> AutoConfig:
        require_a_target(self.min_cosine, self.max_drop, "tflite-int8-auto")
        return self


@register
class TfliteInt8Auto(TfliteQuantPass):
    """Accuracy-aware int8. Full-integer int8 of the whole model first; if it misses the target, each unit (an
    op, or every op of one type in a large graph) is quantized alone with the rest in float, ranking the units
    by the loss each causes; then the fewest most harmful units are kept in float (per-op recipe entries),
    found by bisection, until --min-cosine / --max-drop holds. Dynamic-range and weight-only int8 are scored
    too, and of the variants that meet the target the fastest on this machine's LiteRT is kept: int8 that is
    smaller but slower is what users of the TFLite converter often get without knowing."""

    name = "tflite-int8-auto"
    Config = AutoConfig
    description = "TFLite int8 with the most sensitive ops kept in float until --min-cosine / --max-drop holds"

    def data_use(self) -> frozenset[str]:
        return frozenset({"calibrate", "select"})

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, TfliteModel) and model.path is not None
        _refuse_quantized(model, self.name)
        cfg = self.config
        batches, data = _full_batches(model, ctx, max(cfg.samples, cfg.eval_samples), self.name)
        if cfg.max_drop is not None and not data.has_labels:
            raise SlimkitError("--max-drop needs labelled data", "pass --data with a 'labels' array, or use --min-cosine")
        calibrate = batches[: max(1, cfg.samples // batches[0].size)]
        calibration = signature_feeds(model, [b.feed for b in calibrate])
        judge = _Judge(model, batches[: max(1, cfg.eval_samples // batches[0].size)], ctx.threads, cfg)
        base = Scheme("static", 8, cfg.activation_bits, cfg.per_channel,
                      keep_float=_keep_float_scopes(model, cfg.keep_float))
        folder = ctx.scratch(self.name)
        qsvs = quantize_tflite(model.path, folder / "full.tflite", base, calibration=calibration, threads=ctx.threads)
        ctx.progress(f"{self.name}: whole model")
        tried = [{"kept_float": 0, "variant": "static", **judge.score(folder / "full.tflite")}]
        static_path, static, ranking = folder / "full.tflite", tried[0], []
        if not static["meets"]:
            ranking = self._sensitivity(model, base, qsvs, judge, folder, ctx)
            static_path, static = self._search(model, base, qsvs, ranking, judge, tried, folder, ctx)
        options = [(static_path, static)]
        for variant in dict.fromkeys(cfg.also_try):
            path = folder / f"{variant}.tflite"
            quantize_tflite(model.path, path, Scheme(variant, 8, per_channel=cfg.per_channel))
            tried.append({"kept_float": 0, "variant": variant, **judge.score(path)})
            options.append((path, tried[-1]))
        chosen_path, chosen = self._fastest(model, options, judge, ctx)
        result = TfliteModel(path=chosen_path, input_names=model.input_names)
        result.carry_over(model)
        kept_units = ranking[: chosen["kept_float"]] if chosen is static else []
        kept = tuple(base.keep_float) + tuple(scope for unit in kept_units for scope in unit["scopes"])
        stats = {"quantizer": f"ai-edge-quantizer {_version()}",
                 **_report(model.path, chosen_path, Scheme(chosen["variant"], 8, cfg.activation_bits, cfg.per_channel,
                                                           keep_float=kept)),
                 "target": {"min_cosine": cfg.min_cosine, "max_drop": cfg.max_drop},
                 "chosen": chosen, "kept_float_by_choice": [unit["layer"] for unit in kept_units], "tried": tried,
                 "sensitivity": [{k: v for k, v in unit.items() if k != "scopes"} for unit in ranking],
                 "calibration_samples": sum(b.size for b in calibrate), "eval_samples": judge.samples}
        return PassResult(result, stats, target_outcome(chosen, cfg))

    def _fastest(self, model: TfliteModel, options: list[tuple[Path, dict]], judge: _Judge,
                 ctx: Context) -> tuple[Path, dict]:
        """Of the variants meeting the target, the fastest on this machine's LiteRT (timed interleaved with the
        float model, at the converted shape); when none meets it, the most faithful."""
        meeting = [(path, score) for path, score in options if score["meets"]]
        if not meeting:
            return max(options, key=lambda option: option[1]["cosine_mean"])
        if len(meeting) == 1:
            return meeting[0]
        ctx.progress(f"{self.name}: timing {len(meeting)} variants that meet the target")
        feed = judge.batches[0].feed
        runners = {"float": TfliteRunner(model, ctx.threads)}
        runners.update({str(i): TfliteRunner(TfliteModel(path=path, input_names=model.input_names), ctx.threads)
                        for i, (path, _score) in enumerate(meeting)})
        p50 = interleaved_p50({k: (lambda r=r: r.run(feed)) for k, r in runners.items()}, rounds=5, min_seconds=0.1)
        for i, (_path, score) in enumerate(meeting):
            score["p50_ms"] = p50[str(i)]
            score["latency_ratio"] = p50[str(i)] / p50["float"]
        return min(meeting, key=lambda option: option[1]["p50_ms"])

    def _sensitivity(self, model: TfliteModel, base: Scheme, qsvs: dict | None, judge: _Judge, folder: Path,
                     ctx: Context) -> list[dict]:
        """Units by the loss each causes when it alone is quantized, worst first. A unit is one op, or every op
        of one type when the graph has more than `max_units` ops (a transformer's hundreds)."""
        ops, tensors = ops_of(model.path)
        weights = {op.scope: sum(int(np.prod(tensors[t]["shape"])) for t in op.inputs
                                 if t in tensors and tensors[t]["constant"] and len(tensors[t]["shape"]) >= 2)
                   for op in ops}
        candidates = [op for op in ops if op.scope not in base.keep_float and op.name not in ("QUANTIZE", "DEQUANTIZE")]
        if len(candidates) <= self.config.max_units:
            units = {f"#{op.index} {op.name} {_short(op.scope, 60)}": [op] for op in candidates}
        else:
            units = {}
            for op in candidates:
                units.setdefault(op.name, []).append(op)
        every = tuple(op.scope for op in candidates)
        batches = max(1, self.config.sensitivity_samples // judge.batches[0].size)
        rows = []
        for i, (label, members) in enumerate(units.items()):
            ctx.progress(f"{self.name}: sensitivity {i + 1}/{len(units)}")
            alone = {op.scope for op in members}
            path = folder / "alone.tflite"
            quantize_tflite(model.path, path, Scheme("static", 8, base.activation_bits, base.per_channel,
                                                     keep_float=base.keep_float + tuple(s for s in every
                                                                                        if s not in alone)),
                            qsvs=qsvs, threads=ctx.threads)
            score = judge.score(path, batches=batches)
            rows.append({"layer": label, "op_type": members[0].name, "ops": len(members),
                         "params": sum(weights.get(op.scope, 0) for op in members),
                         "loss": round(judge.loss(score), 6), "cosine_mean": score["cosine_mean"],
                         "scopes": [op.scope for op in members]})
        rows.sort(key=lambda r: -r["loss"])
        return rows

    def _search(self, model: TfliteModel, base: Scheme, qsvs: dict | None, ranking: list[dict], judge: _Judge,
                tried: list[dict], folder: Path, ctx: Context) -> tuple[Path, dict]:
        """Fewest most-harmful units kept in float that meet the target (bisection); else the best found."""
        lo, hi = 0, len(ranking) + 1
        best: tuple[Path, dict] | None = None
        fallback = (folder / "full.tflite", tried[0])
        while hi - lo > 1:
            k = min((lo + hi) // 2, len(ranking))
            ctx.progress(f"{self.name}: keeping {k} of {len(ranking)} in float")
            path = folder / f"keep-{k}.tflite"
            kept = tuple(scope for unit in ranking[:k] for scope in unit["scopes"])
            quantize_tflite(model.path, path, Scheme("static", 8, base.activation_bits, base.per_channel,
                                                     keep_float=base.keep_float + kept),
                            qsvs=qsvs, threads=ctx.threads)
            score = {"kept_float": k, "variant": "static", **judge.score(path)}
            tried.append(score)
            if score["meets"]:
                hi, best = k, (path, score)
            else:
                lo = k
                if score["cosine_mean"] > fallback[1]["cosine_mean"]:
                    fallback = (path, score)
            if k == len(ranking):
                break
        return best or fallback


def _short(scope: str, limit: int = 90) -> str:
    """An op scope cut to its last name (litert-torch names are module paths joined by ';')."""
    last = [part for part in scope.split(";") if part][-1] if scope.strip(";") else scope
    return last if len(last) <= limit else "..." + last[-(limit - 3):]


class _Judge:
    """Scores a TFLite candidate on fixed batches against the float TFLite model's outputs (and labels)."""

    def __init__(self, model: TfliteModel, batches: list, threads: int, config: AutoConfig) -> None:
        self.batches, self.threads, self.config = batches, threads, config
        self.samples = sum(b.size for b in batches)
        self.names = model.input_names
        runner = TfliteRunner(model, threads)
        self.reference = [runner.run(b.feed)[0] for b in batches]
        self.labels = [b.labels for b in batches] if all(b.labels is not None for b in batches) else None

    def score(self, path: Path, *, batches: int | None = None) -> dict:
        runner = TfliteRunner(TfliteModel(path=path, input_names=self.names), self.threads)
        chosen = self.batches[:batches] if batches else self.batches
        outputs = [runner.run(b.feed)[0] for b in chosen]
        fid = compare_outputs(self.reference[: len(chosen)], outputs)
        result: dict[str, Any] = {"cosine_mean": fid["cosine_mean"], "cosine_min": fid["cosine_min"]}
        if self.labels:
            acc = accuracy(outputs, self.labels[: len(chosen)])
            base = accuracy(self.reference[: len(chosen)], self.labels[: len(chosen)])
            result["accuracy"] = acc
            result["accuracy_drop"] = (base - acc) if acc is not None and base is not None else None
        result["size_bytes"] = path.stat().st_size
        result["meets"] = meets_target(result, self.config)
        return result

    def loss(self, score: dict) -> float:
        return target_loss(score, self.config)
