"""`int8-auto`: accuracy-aware mixed precision on top of int8-dynamic.

1. Quantize the whole model; if it meets the target (`min_cosine` against the float model, or
   `max_drop` in accuracy when the data has labels), keep it.
2. Otherwise, sensitivity analysis: quantize one weight layer at a time and measure the loss.
3. Keep the most sensitive layers in float: bisection over how many, each candidate measured on
   the data, and the fastest configuration meeting the target wins.
If nothing meets the target, the best configuration found is still returned, its outcome `missed` with
the shortfall; the CLI then exits with code 3 after saving it.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from slimkit.config import AtLeastOne, Cosine, require_a_target
from slimkit.data_sources import Dataset, generate_data, load_data
from slimkit.errors import SlimkitError
from slimkit.evaluate.fidelity import accuracy, compare_outputs
from slimkit.evaluate.latency import time_calls
from slimkit.formats.onnx import OrtRunner
from slimkit.models.base import ModelKind, OnnxModel, WorkingModel
from slimkit.models.onnx_graph import gemm_to_matmul, weight_layers
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.outcome import Outcome
from slimkit.passes.quantize import (
    DynamicConfig,
    prepared_copy,
    quantize_dynamic_proto,
    refuse_quantized,
    resolve_reduce_range,
)


class AutoConfig(PassConfig):
    min_cosine: Cosine | None = 0.99
    max_drop: float | None = Field(None, lt=1)  # accuracy drop allowed (0.01 = one point), needs labels
    per_channel: bool = True
    op_types: list[str] = ["MatMul", "Attention", "Gather"]
    eval_samples: AtLeastOne = 64
    sensitivity_samples: AtLeastOne = 32

    @model_validator(mode="after")
    def _has_a_target(self) -> AutoConfig:
        require_a_target(self.min_cosine, self.max_drop, "int8-auto")
        return self


class _Judge:
    """Measures a candidate model on fixed data against the float model's outputs."""

    def __init__(self, model: OnnxModel, data: Dataset, timing_feed: dict, threads: int, config: AutoConfig):
        self.data, self.timing_feed, self.threads, self.config = data, timing_feed, threads, config
        float_runner = OrtRunner(model, threads)
        self.reference = [float_runner.run(b.feed)[0] for b in data]
        self.labels = [b.labels for b in data] if data.has_labels else None
        self.float_accuracy = accuracy(self.reference, self.labels) if self.labels else None
        self.float_p50 = self.p50(float_runner)

    def p50(self, runner: OrtRunner) -> float:
        times = time_calls(lambda: runner.run(self.timing_feed), warmup=3, runs=15, min_seconds=0.3)
        return float(np.median(times))

    def score(self, model: OnnxModel, *, batches: int | None = None, timed: bool = True) -> dict:
        runner = OrtRunner(model, self.threads)
        chosen = self.data.batches[:batches] if batches else self.data.batches
        outputs = [runner.run(b.feed)[0] for b in chosen]
        fid = compare_outputs(self.reference[: len(chosen)], outputs)
        result = {"cosine_mean": fid["cosine_mean"], "cosine_min": fid["cosine_min"]}
        if self.labels:
            acc = accuracy(outputs, self.labels[: len(chosen)])
            result["accuracy"] = acc
            result["accuracy_drop"] = (self.float_accuracy - acc) if acc is not None else None
        if timed:
            result["p50_ms"] = self.p50(runner)
            result["latency_ratio"] = result["p50_ms"] / self.float_p50
        result["size_bytes"] = model.proto.ByteSize()
        return result

    def meets(self, score: dict) -> bool:
        return meets_target(score, self.config)

    def loss(self, score: dict) -> float:
        return target_loss(score, self.config)


@register
class Int8Auto(Pass):
    name = "int8-auto"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = AutoConfig
    description = "int8 with the most sensitive layers kept in float until --min-cosine / --max-drop holds"
    search_stage = "quantize"  # its target is the search's floor
    search_needs = ("transformer-fusion",)
    quantizes = True
    needs_float = True

    def data_use(self) -> frozenset[str]:
        return frozenset({"select"})

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, OnnxModel)
        refuse_quantized(model, self.name)
        cfg = self.config
        base = prepared_copy(model)
        gemm_to_matmul(base)
        float_model = OnnxModel.from_proto(base, like=model)
        data = self._data(float_model, ctx)
        if cfg.max_drop is not None and not data.has_labels:
            raise SlimkitError("--max-drop needs labelled data", "pass --data with a 'labels' array, or use --min-cosine")
        timing = generate_data(float_model.input_specs, batch_size=ctx.batch_size, seq_len=ctx.seq_len,
                               shapes=ctx.shapes).batches[0].feed
        judge = _Judge(float_model, data, timing, ctx.threads, cfg)
        reduce_range, why = resolve_reduce_range("auto")
        layers = [layer.node for layer in weight_layers(base, set(cfg.op_types))]

        def build(exclude: list[str], only: list[str] | None = None) -> OnnxModel:
            dyn = DynamicConfig(per_channel=cfg.per_channel, op_types=cfg.op_types, exclude=exclude)
            return OnnxModel.from_proto(quantize_dynamic_proto(base, dyn, reduce_range, nodes_to_quantize=only),
                                        like=model)

        tried = []
        ctx.progress("int8-auto: whole model")
        full = build([])
        full_score = judge.score(full)
        tried.append({"kept_float": 0, **full_score, "meets": judge.meets(full_score)})
        sensitivity: list[dict] = []
        chosen_model, chosen = full, tried[0]
        if not tried[0]["meets"]:
            sensitivity = self._sensitivity(build, judge, layers, base, ctx)
            order = [row["layer"] for row in sensitivity]
            chosen_model, chosen = self._search(build, judge, order, tried, ctx)
        chosen_model.ensure_file(ctx.scratch(self.name))
        target = {"min_cosine": cfg.min_cosine, "max_drop": cfg.max_drop}
        stats = {
            "target": target, "chosen": chosen, "tried": tried,
            "sensitivity": sensitivity, "float_p50_ms": judge.float_p50, "reduce_range": reduce_range,
            "reduce_range_reason": why, "eval_samples": data.num_samples, "layers": len(layers),
        }
        return PassResult(chosen_model, stats, target_outcome(chosen, cfg))

    def _data(self, model: OnnxModel, ctx: Context) -> Dataset:
        data = load_data(ctx.data, model, batch_size=8, seq_len=ctx.seq_len, shapes=ctx.shapes,
                         max_samples=self.config.eval_samples, generated_samples=16)
        return data

    def _sensitivity(self, build, judge: _Judge, layers: list[str], base, ctx: Context) -> list[dict]:
        info = {layer.node: layer for layer in weight_layers(base, set(self.config.op_types))}
        batches = max(1, self.config.sensitivity_samples // 8)
        rows = []
        for i, name in enumerate(layers):
            ctx.progress(f"int8-auto: sensitivity {i + 1}/{len(layers)}")
            score = judge.score(build([], only=[name]), batches=batches, timed=False)
            rows.append({"layer": name, "op_type": info[name].op_type, "params": info[name].params,
                         "loss": judge.loss(score), "cosine_mean": score["cosine_mean"]})
        rows.sort(key=lambda r: -r["loss"])
        return rows

    def _search(self, build, judge: _Judge, order: list[str], tried: list[dict], ctx: Context):
        """Smallest number of most-sensitive layers kept float that meets the target (bisection)."""
        lo, hi = 0, len(order)  # tried[0] is k=0 and failed; k=len(order) is all float
        best_model, best = None, None
        fallback_model, fallback = None, tried[0]
        while hi - lo > 1:
            k = (lo + hi) // 2
            ctx.progress(f"int8-auto: keeping {k} layers in float")
            candidate = build(order[:k])
            score = {"kept_float": k, "kept_float_layers": order[:k], **judge.score(candidate)}
            score["meets"] = judge.meets(score)
            tried.append(score)
            if score["meets"]:
                hi, best_model, best = k, candidate, score
            else:
                lo = k
                if score["cosine_mean"] > fallback["cosine_mean"]:
                    fallback_model, fallback = candidate, score
        if best is not None:
            return best_model, best
        return (fallback_model or build([])), fallback


def meets_target(score: dict, cfg) -> bool:
    """Whether a scored candidate holds `cfg`'s min_cosine and (labelled data) max_drop."""
    ok = True
    if cfg.min_cosine is not None:
        ok &= score["cosine_mean"] >= cfg.min_cosine
    if cfg.max_drop is not None:
        ok &= score.get("accuracy_drop") is not None and score["accuracy_drop"] <= cfg.max_drop
    return bool(ok)


def target_loss(score: dict, cfg) -> float:
    """What sensitivity ranks by: accuracy drop when judged by accuracy (cosine breaks ties), else 1 - cosine."""
    if cfg.max_drop is not None and score.get("accuracy_drop") is not None:
        return float(score["accuracy_drop"]) + (1.0 - score["cosine_mean"]) * 1e-3
    return 1.0 - score["cosine_mean"]


def target_outcome(chosen: dict, cfg: AutoConfig) -> Outcome:
    """Met or missed, judged on accuracy drop when that is the target, else on mean cosine."""
    parts = []
    if cfg.min_cosine is not None and chosen["cosine_mean"] < cfg.min_cosine:
        parts.append(f"mean cosine {chosen['cosine_mean']:.4f} < {cfg.min_cosine}")
    if cfg.max_drop is not None and (chosen.get("accuracy_drop") or 0) > cfg.max_drop:
        parts.append(f"accuracy drop {chosen['accuracy_drop']:.4f} > {cfg.max_drop}")
    if cfg.max_drop is not None:
        metric, measured, target = "accuracy_drop", chosen.get("accuracy_drop"), cfg.max_drop
    else:
        metric, measured, target = "cosine_mean", chosen["cosine_mean"], cfg.min_cosine
    return Outcome.judged(bool(chosen["meets"]), metric=metric, measured=measured, target=target,
                          reason="; ".join(parts) or None)
