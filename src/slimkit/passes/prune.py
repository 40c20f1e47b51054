"""Unstructured magnitude pruning: `W_pruned = W * 1(|W| > tau)`.

PyTorch: one-shot, or gradual with Zhu & Gupta's cubic schedule during fine-tuning; masks are re-applied
after every optimizer step so pruned weights stay zero. ONNX: one-shot, then sparse storage so the file
shrinks. Zeros do not make dense kernels faster: the report says the win is size, not speed (channel
pruning, `prune-structured`, is the one that speeds up).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import field_validator, model_validator

from slimkit.algorithms.sparsity import (
    cubic_sparsity,
    global_threshold,
    magnitude_mask,
    sparsity_of,
    threshold_mask,
)
from slimkit.config import Alpha, AtLeastOne, ConfigError, NonNegative, Temperature
from slimkit.models.base import ModelKind, OnnxModel, TorchModel, WorkingModel
from slimkit.models.onnx_graph import copy_model, weight_layers
from slimkit.models.onnx_surgery import set_initializer
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.recovery import refuse_onnx_training
from slimkit.passes.select import select_names
from slimkit.passes.sparse_storage import SparseStorageConfig, store_sparse
from slimkit.train import TrainConfig

_ONNX_WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose"}
NOT_FASTER = "zeros are stored compactly but dense runtimes do not skip them: smaller, not faster"


class PruneConfig(PassConfig):
    sparsity: float = 0.5
    scope: Literal["layer", "global"] = "layer"
    schedule: Literal["one-shot", "gradual"] = "one-shot"
    include: list[str] = []
    exclude: list[str] = []
    min_params: NonNegative = 1000
    # Fine-tuning with masks kept (needed by "gradual"); the teacher is the original model.
    train: TrainConfig | None = None
    alpha: Alpha = None
    temperature: Temperature = 4.0
    begin: float = 0.0  # gradual: fraction of the training steps where pruning starts ...
    end: float = 0.7  # ... and where it reaches `sparsity`
    frequency: AtLeastOne = 10  # gradual: steps between mask updates
    store_sparse: bool = True  # ONNX: bit mask + values in the file

    @field_validator("sparsity")
    @classmethod
    def _sparsity_is_a_fraction(cls, sparsity: float) -> float:
        if not 0.0 <= sparsity < 1.0:
            raise ConfigError("sparsity", f"sparsity={sparsity} is outside [0, 1)",
                              "give the fraction of weights to zero, e.g. sparsity: 0.5")
        return sparsity

    @model_validator(mode="after")
    def _schedule(self) -> PruneConfig:
        if not 0.0 <= self.begin < self.end <= 1.0:
            raise ConfigError("begin", f"begin={self.begin}, end={self.end} are not 0 <= begin < end <= 1",
                              "they are fractions of the training steps, e.g. begin: 0.0, end: 0.7")
        if self.schedule == "gradual" and self.train is None:
            raise ConfigError("schedule", "schedule=gradual prunes during fine-tuning and needs train: {...}",
                              "add e.g. train: {epochs: 10} or use schedule: one-shot")
        return self


def masks_for(weights: dict[str, np.ndarray], sparsity: float, scope: str) -> dict[str, np.ndarray]:
    """Keep-masks at `sparsity`, per layer or under one global magnitude threshold."""
    if scope == "global":
        tau = global_threshold(list(weights.values()), sparsity)
        return {n: threshold_mask(w, tau) for n, w in weights.items()}
    return {n: magnitude_mask(w, sparsity) for n, w in weights.items()}


@register
class Prune(Pass):
    name = "prune"
    accepts = frozenset({ModelKind.TORCH, ModelKind.ONNX})
    returns = None
    Config = PruneConfig
    description = "magnitude pruning (one-shot or gradual with fine-tuning); smaller files, not faster"

    def data_use(self) -> frozenset[str]:
        return frozenset({"train"}) if self.config.train is not None else frozenset()

    def relaxed(self) -> dict[str, Any] | None:
        """Keep 1.5x as many weights (95% -> 92.5% -> 88.75% ... zeros), down to half the weights pruned."""
        sparsity = round(1.0 - (1.0 - self.config.sparsity) * 1.5, 4)
        return {"sparsity": sparsity} if sparsity >= 0.5 else None

    def check_input(self, kind: ModelKind) -> None:
        if kind == ModelKind.ONNX:
            refuse_onnx_training(self.name, self.config.train)

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        self.check_input(model.kind)
        if isinstance(model, TorchModel):
            return self._run_torch(model, ctx)
        assert isinstance(model, OnnxModel)
        return self._run_onnx(model, ctx)

    def _run_onnx(self, model: OnnxModel, ctx: Context) -> PassResult:
        cfg = self.config
        proto = copy_model(model.proto)
        inits = {t.name: t for t in proto.graph.initializer}
        params = {layer.weight: layer.params for layer in weight_layers(proto, _ONNX_WEIGHT_OPS)
                  if layer.data_type == onnx.TensorProto.FLOAT}
        names = select_names(list(params.items()), include=cfg.include, exclude=cfg.exclude,
                             min_params=cfg.min_params, what="weight")
        weights = {n: numpy_helper.to_array(inits[n]) for n in names}
        masks = masks_for(weights, cfg.sparsity, cfg.scope)
        layers = []
        for name, weight in weights.items():
            pruned = (weight * masks[name]).astype(np.float32)
            set_initializer(proto, name, pruned)
            layers.append({"weight": name, "params": int(weight.size), "sparsity": sparsity_of(pruned)})
        stats = _summary(layers)
        if cfg.store_sparse:
            stats["storage"] = store_sparse(proto, SparseStorageConfig(min_params=cfg.min_params))
        result = OnnxModel.from_proto(proto, like=model)
        result.ensure_file(ctx.scratch(self.name))
        return PassResult(result, stats)

    def _run_torch(self, model: TorchModel, ctx: Context) -> PassResult:
        import torch
        from torch import nn

        cfg = self.config
        module = copy.deepcopy(model.module)
        prunable = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
        params = {f"{n}.weight": m.weight for n, m in module.named_modules() if isinstance(m, prunable)}
        # Keras 3 layers (torch backend) keep their weights as `...kernel` Parameters, not nn.Linear/ConvNd.
        params.update({n: p for n, p in module.named_parameters() if n.endswith("kernel") and p.dim() >= 2})
        names = select_names([(n, p.numel()) for n, p in params.items()], include=cfg.include,
                             exclude=cfg.exclude, min_params=cfg.min_params, what="weight")
        chosen = {n: params[n] for n in names}
        masks: dict[str, torch.Tensor] = {}

        def update_masks(sparsity: float) -> None:
            current = {n: p.detach().cpu().numpy() for n, p in chosen.items()}
            for n, keep in masks_for(current, sparsity, cfg.scope).items():
                masks[n] = torch.from_numpy(keep).to(chosen[n].dtype)

        def apply_masks() -> None:
            with torch.no_grad():
                for n, p in chosen.items():
                    p.mul_(masks[n])

        result = model.with_module(module)
        training = None
        if cfg.schedule == "one-shot" or cfg.train is None:
            update_masks(cfg.sparsity)
            apply_masks()
        if cfg.train is not None:
            from slimkit.passes.recovery import teacher_for, train_student

            if cfg.schedule == "gradual":
                with torch.no_grad():
                    masks.update({n: (p != 0).to(p.dtype) for n, p in chosen.items()})
            progress = {"step": 0, "begin": 0, "end": 1}

            def schedule_on(train_data) -> None:
                """Fix the ramp once the training set (hence the number of steps) is known."""
                per_epoch = -(-train_data.num_samples // cfg.train.batch_size)
                total = per_epoch * cfg.train.epochs
                total = min(total, cfg.train.max_steps) if cfg.train.max_steps else total
                progress["begin"] = int(cfg.begin * total)
                progress["end"] = max(int(cfg.end * total), progress["begin"] + 1)

            def after_step(_module, step: int) -> None:
                progress["step"] = step
                end = progress["end"]
                if cfg.schedule == "gradual" and (step % cfg.frequency == 0 or step == end):
                    update_masks(cubic_sparsity(step, final=cfg.sparsity, begin_step=progress["begin"], end_step=end))
                apply_masks()

            def before_step(_module) -> None:
                for n, p in chosen.items():
                    if p.grad is not None:
                        p.grad.mul_(masks[n])

            training = train_student(module, like=result, teacher=teacher_for(model, ctx), ctx=ctx,
                                     train_config=cfg.train, pass_name=self.name, alpha=cfg.alpha,
                                     temperature=cfg.temperature, before_step=before_step, after_step=after_step,
                                     ready=lambda: cfg.schedule != "gradual" or progress["step"] >= progress["end"],
                                     on_train_data=schedule_on)
            if cfg.schedule == "gradual":
                update_masks(cfg.sparsity)  # the schedule ends at the target; make sure of it exactly
            apply_masks()
        module.eval()
        layers = [{"weight": n, "params": int(p.numel()), "sparsity": float((p == 0).float().mean())}
                  for n, p in chosen.items()]
        stats = _summary(layers)
        if training is not None:
            stats["training"] = training
        return PassResult(result, stats)


def _summary(layers: list[dict]) -> dict:
    total = sum(x["params"] for x in layers)
    zeros = sum(x["params"] * x["sparsity"] for x in layers)
    return {"layers": len(layers), "params_pruned_layers": total, "sparsity": zeros / total if total else 0.0,
            "speed_note": NOT_FASTER, "per_layer": layers}
