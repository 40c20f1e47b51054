"""`prune-structured`: remove whole channels / neurons / attention heads from a PyTorch model.

The pruned layers are physically smaller (torch-pruning rewrites the weights), so the exported ONNX
graph does fewer multiply-accumulates. See `slimkit.pruning.structured` for targets and importance.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field, model_validator

from slimkit.config import Alpha, AtLeastOne, ConfigError, Temperature, searchable
from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, TorchModel, WorkingModel
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.train import TrainConfig


class PruneStructuredConfig(PassConfig):
    ratio: float = Field(0.5, json_schema_extra=searchable(low=0.1, high=0.5, step=0.1))  # fraction of the units removed in every pruned layer, in [0, 1)
    target: Literal["channels", "heads", "mlp", "all"] = "channels"
    importance: Literal["l2", "l1", "activation"] = "l2"
    ignore: list[str] = []  # module-name patterns (fnmatch) never pruned
    layers: list[str] = []  # module-name patterns to prune (default: all prunable layers)
    round_to: AtLeastOne | None = None  # keep unit counts a multiple of this (GEMM-friendly shapes)
    target_flop_reduction: float | None = None  # e.g. 0.5 = half the MACs; the ratio is searched
    samples: AtLeastOne = 64  # calibration samples for importance: activation
    # Recovery: fine-tune the pruned model against the original (distillation; labels too when alpha > 0).
    train: TrainConfig | None = None
    alpha: Alpha = None
    temperature: Temperature = 4.0

    @model_validator(mode="after")
    def _amount(self) -> PruneStructuredConfig:
        if self.target_flop_reduction is None and not 0.0 <= self.ratio < 1.0:
            raise ConfigError("ratio", f"ratio={self.ratio} is outside [0, 1)",
                              "e.g. ratio: 0.5 removes half the units of every pruned layer")
        if self.target_flop_reduction is not None and not 0.0 < self.target_flop_reduction < 1.0:
            raise ConfigError("target_flop_reduction",
                              f"target_flop_reduction={self.target_flop_reduction} is outside (0, 1)",
                              "e.g. target_flop_reduction: 0.5 removes half the multiply-accumulates")
        return self


@register
class PruneStructured(Pass):
    name = "prune-structured"
    accepts = frozenset({ModelKind.TORCH})
    returns = None
    Config = PruneStructuredConfig
    description = "structured pruning (channels, FFN neurons, attention heads) with torch-pruning"
    search_stage = "structure"
    search_trains = True
    # target all: heads and FFN neurons on a transformer, channels otherwise (channels alone refuse a transformer)
    search_config = {"target": "all", "ratio": 0.3, "round_to": 8, "train": {"epochs": 5, "lr": 1e-3}}

    def data_use(self) -> frozenset[str]:
        use = {"train"} if self.config.train is not None else set()
        return frozenset(use | ({"calibrate"} if self.config.importance == "activation" else set()))

    def relaxed(self) -> dict[str, Any] | None:
        """Remove 0.7x as many units (or 0.7x the MAC reduction), until under 5%."""
        if self.config.target_flop_reduction is not None:
            reduction = round(self.config.target_flop_reduction * 0.7, 4)
            return {"target_flop_reduction": reduction} if reduction >= 0.05 else None
        ratio = round(self.config.ratio * 0.7, 4)
        return {"ratio": ratio} if ratio >= 0.05 else None

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        import torch

        from slimkit.pruning.structured import prune_structured

        assert isinstance(model, TorchModel)
        if model.keras_version is not None:
            raise SlimkitError("prune-structured: a Keras model's layers are not torch Conv/Linear modules, so "
                               "torch-pruning cannot remove their units",
                               "use prune-50 or deep-compression (both work on Keras models), or rebuild the "
                               "model in PyTorch")
        cfg = self.config
        module = copy.deepcopy(model.module)
        example = {k: torch.as_tensor(v) for k, v in model.example_inputs.items()}
        data = self._calibration(model, ctx) if cfg.importance == "activation" else None
        ctx.progress(f"prune-structured: {cfg.target}, "
                     + (f"target MAC reduction {cfg.target_flop_reduction}" if cfg.target_flop_reduction
                        else f"ratio {cfg.ratio}"))
        stats = prune_structured(module, example, ratio=cfg.ratio, target=cfg.target, importance=cfg.importance,
                                 data=data, ignore=cfg.ignore, layers=cfg.layers or None, round_to=cfg.round_to,
                                 target_flop_reduction=cfg.target_flop_reduction)
        result = model.with_module(module)
        result.source_files = list(model.source_files)
        if cfg.train is not None:
            from slimkit.passes.recovery import teacher_for, train_student

            stats["training"] = train_student(module, like=result, teacher=teacher_for(model, ctx), ctx=ctx,
                                              train_config=cfg.train, pass_name=self.name, alpha=cfg.alpha,
                                              temperature=cfg.temperature)
            module.eval()
        return PassResult(result, stats)

    def _calibration(self, model: TorchModel, ctx: Context) -> list[dict]:
        import torch

        from slimkit.data_sources import load_data

        if ctx.data is None:
            raise SlimkitError("prune-structured: importance 'activation' needs calibration data",
                               "pass --data with representative samples, or use importance: l2")
        dataset = load_data(ctx.data, model, batch_size=8, seq_len=ctx.seq_len, shapes=ctx.shapes,
                            max_samples=self.config.samples)
        batches, seen = [], 0
        for batch in dataset:
            batches.append({k: torch.from_numpy(v) for k, v in batch.feed.items()})
            seen += len(next(iter(batch.feed.values())))
            if seen >= self.config.samples:
                break
        return batches
