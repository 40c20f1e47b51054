"""Low-rank factorization: `W ≈ A·B` (truncated SVD, or NMF for non-negative weights), only where rank r
makes the layer cheaper (r·(m+n) < m·n).

ONNX: MatMul/Gemm with a constant weight -> two MatMuls; Conv (group 1) -> Conv (k×k, r filters) +
Conv 1×1. PyTorch: nn.Linear -> two Linears; nn.Conv2d -> Conv2d (k×k, r) + Conv2d (1×1), which
covers Hugging Face Transformers projections.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper
from pydantic import Field, model_validator

from slimkit.algorithms.lowrank import (
    max_useful_rank,
    nmf,
    rank_for_energy,
    rank_for_output_cosine,
    rank_for_ratio,
    singular_values,
)
from slimkit.algorithms.lowrank import truncated_svd as svd_factors
from slimkit.config import Alpha, AtLeastOne, ConfigError, Cosine, NonNegative, Temperature, searchable
from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, OnnxModel, TorchModel, WorkingModel
from slimkit.models.onnx_graph import attribute, copy_model, gemm_to_matmul, weight_layers
from slimkit.models.onnx_surgery import split_layers
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.outcome import Outcome
from slimkit.passes.recovery import refuse_onnx_training
from slimkit.passes.select import select_names
from slimkit.train import TrainConfig


class FactorizeConfig(PassConfig):
    method: Literal["svd", "nmf"] = "svd"
    energy: float | None = Field(None, json_schema_extra=searchable(choices=[0.9, 0.95, 0.98, 0.99]))  # keep this fraction of Σs² per layer
    ratio: float | None = None  # parameters of the factorized layer relative to the original
    rank: AtLeastOne | None = None  # a fixed rank for every layer
    # Data-aware sensitivity search: per layer, the smallest rank keeping the layer's output cosine on
    # the pass's data (--data) at this value; layers that cannot meet it stay dense.
    min_cosine: Cosine | None = None
    samples: AtLeastOne = 64
    min_params: NonNegative = 4096
    include: list[str] = []
    exclude: list[str] = []
    # PyTorch: fine-tune the factors against the original model (recovery distillation).
    train: TrainConfig | None = None
    alpha: Alpha = None
    temperature: Temperature = 4.0

    @model_validator(mode="after")
    def _one_way_to_choose_ranks(self) -> FactorizeConfig:
        given = [k for k in ("energy", "ratio", "rank", "min_cosine") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(given[1], f"{', '.join(given)} are given: they are alternatives",
                              "give only one of energy, ratio, rank, min_cosine, e.g. ratio: 0.5")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ConfigError("energy", f"energy={self.energy} is not in (0, 1]", "e.g. energy: 0.95")
        if self.ratio is not None and not 0 < self.ratio < 1:
            raise ConfigError("ratio", f"ratio={self.ratio} is not in (0, 1)", "e.g. ratio: 0.5")
        return self


def choose_rank(w2d: np.ndarray, cfg: FactorizeConfig, inputs: np.ndarray | None = None) -> int:
    """Rank for one layer. `w2d` is [out, in] (torch) or [in, out] (ONNX MatMul); `inputs` match its rows."""
    m, n = w2d.shape
    limit = max_useful_rank(m, n)
    if cfg.min_cosine is not None:
        return rank_for_output_cosine(w2d, inputs, cfg.min_cosine)
    if cfg.rank is not None:
        if cfg.rank > limit:
            raise SlimkitError(f"factorize: rank {cfg.rank} is too large for a {m}x{n} weight",
                               f"it only saves work below rank {limit}")
        return cfg.rank
    if cfg.ratio is not None:
        return min(limit, rank_for_ratio(m, n, cfg.ratio))
    return min(limit, rank_for_energy(singular_values(w2d), cfg.energy if cfg.energy is not None else 0.95))


def factor(w2d: np.ndarray, rank: int, method: str, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    try:
        if method == "nmf":
            return nmf(w2d, rank)
        return svd_factors(w2d, rank)
    except ValueError as exc:
        raise SlimkitError(f"factorize: layer '{name}': {exc}",
                           "use method: svd, or exclude the layer with exclude: [...]") from exc


@register
class Factorize(Pass):
    name = "factorize"
    accepts = frozenset({ModelKind.ONNX, ModelKind.TORCH})
    returns = None  # the kind it was given
    Config = FactorizeConfig
    description = "low-rank SVD / NMF of Linear/MatMul/Gemm and Conv weights"
    search_stage = "factorize"
    search_config = {"method": "svd"}

    def data_use(self) -> frozenset[str]:
        use = {"train"} if self.config.train is not None else set()
        return frozenset(use | ({"select"} if self.config.min_cosine is not None else set()))

    def relaxed(self) -> dict[str, Any] | None:
        """Keep more of each layer: half the discarded energy, or 1.3x the parameter ratio (below 1)."""
        cfg = self.config
        if cfg.energy is not None:
            energy = round(1.0 - (1.0 - cfg.energy) / 2, 6)
            return {"energy": energy} if energy < 0.9999 else None
        if cfg.ratio is not None:
            ratio = round(cfg.ratio * 1.3, 4)
            return {"ratio": ratio} if ratio < 1.0 else None
        if cfg.rank is not None:
            return {"rank": cfg.rank * 2}
        return None

    def check_input(self, kind: ModelKind) -> None:
        if kind == ModelKind.ONNX:
            refuse_onnx_training(self.name, self.config.train, "the factors")

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        self.check_input(model.kind)
        if isinstance(model, TorchModel):
            return self._run_torch(model, ctx)
        assert isinstance(model, OnnxModel)
        return self._run_onnx(model, ctx)

    # ---- ONNX ----

    def _run_onnx(self, model: OnnxModel, ctx: Context) -> PassResult:
        proto = copy_model(model.proto)
        gemm_to_matmul(proto)
        inits = {t.name: t for t in proto.graph.initializer}
        users: dict[str, int] = {}
        for node in proto.graph.node:
            for i in node.input:
                users[i] = users.get(i, 0) + 1
        candidates = {}
        for layer in weight_layers(proto, {"MatMul", "Conv"}):
            node, dims = proto.graph.node[layer.position], list(layer.shape)
            if users.get(layer.weight, 0) != 1 or layer.data_type != onnx.TensorProto.FLOAT:
                continue  # a shared weight cannot be swapped for one layer's factors
            if (node.op_type == "MatMul" and len(dims) == 2) or (
                    node.op_type == "Conv" and len(dims) == 4 and attribute(node, "group", 1) == 1):
                candidates[node.name or layer.weight] = (node, dims)
        names = select_names([(k, int(np.prod(d))) for k, (_, d) in candidates.items()], include=self.config.include,
                             exclude=self.config.exclude, min_params=self.config.min_params, what="layer")
        layers: list[dict] = []
        skipped: list[str] = []
        factors: list[tuple[onnx.NodeProto, np.ndarray, np.ndarray]] = []
        inputs = self._onnx_layer_inputs(model, [candidates[n][0] for n in names], ctx)
        for name in names:
            node, dims = candidates[name]
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            w2d = weight if node.op_type == "MatMul" else weight.reshape(weight.shape[0], -1)
            if self.config.method == "nmf" and w2d.min() < 0:
                skipped.append(name)  # NMF only fits non-negative weights
                continue
            if self.config.min_cosine is not None and node.op_type != "MatMul":
                skipped.append(name)  # data-aware ranks are computed for MatMul/Linear layers only
                continue
            rank = choose_rank(w2d, self.config, inputs.get(node.input[0]))
            if rank <= 0 or rank >= max_useful_rank(*w2d.shape) + 1:
                continue
            a, b = factor(w2d, rank, self.config.method, name)
            factors.append((node, a, b))
            m, n = w2d.shape
            err = float(np.linalg.norm(w2d - a @ b) / max(np.linalg.norm(w2d), 1e-12))
            layers.append({"layer": name, "op": node.op_type, "shape": list(dims), "rank": rank,
                           "params_before": m * n, "params_after": rank * (m + n), "rel_error": err})
        if not layers:
            why = ("no weight matrix is non-negative, which NMF needs (use method: svd)" if skipped
                   else "no layer gets cheaper at the requested rank")
            return PassResult(model, {"layers": 0, "skipped_negative": skipped}, Outcome.skipped(why))
        split_layers(proto, factors)
        result = OnnxModel.from_proto(proto, like=model)
        result.ensure_file(ctx.scratch(self.name))
        return PassResult(result, _summary(layers, self.config))

    def _onnx_layer_inputs(self, model: OnnxModel, nodes: list, ctx: Context) -> dict[str, np.ndarray]:
        """The activations entering each MatMul on the pass's data (for data-aware ranks), as [rows, in]."""
        if self.config.min_cosine is None:
            return {}
        from slimkit.data_sources import load_data
        from slimkit.formats.onnx import OrtRunner

        data = _calibration(ctx)
        probe = copy_model(model.proto)
        wanted = sorted({n.input[0] for n in nodes if n.op_type == "MatMul"})
        existing = {o.name for o in probe.graph.output}
        probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                                  for name in wanted if name not in existing)
        runner = OrtRunner(OnnxModel.from_proto(probe), ctx.threads)
        names = [o.name for o in runner.session.get_outputs()]
        collected: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
        for batch in load_data(data, model, batch_size=8, seq_len=ctx.seq_len, shapes=ctx.shapes,
                               max_samples=self.config.samples):
            for name, value in zip(names, runner.session.run(None, batch.feed), strict=True):
                if name in collected:
                    collected[name].append(value.reshape(-1, value.shape[-1]))
        return {name: np.concatenate(parts) for name, parts in collected.items() if parts}

    # ---- PyTorch ----

    def _run_torch(self, model: TorchModel, ctx: Context) -> PassResult:
        import copy

        import torch
        from torch import nn

        module = copy.deepcopy(model.module)
        targets = {n: m for n, m in module.named_modules()
                   if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)}
        skipped: list[str] = []
        names = select_names([(n, m.weight.numel()) for n, m in targets.items()], include=self.config.include,
                             exclude=self.config.exclude, min_params=self.config.min_params, what="layer")
        layers = []
        inputs = self._torch_layer_inputs(model, module, {n: targets[n] for n in names}, ctx)
        for name in names:
            layer = targets[name]
            weight = layer.weight.detach().cpu().numpy()
            w2d = weight.reshape(weight.shape[0], -1)  # [out, in*kh*kw]: Linear / Conv both compute W @ x
            if self.config.method == "nmf" and w2d.min() < 0:
                skipped.append(name)  # NMF only fits non-negative weights
                continue
            if self.config.min_cosine is not None:
                if name not in inputs:
                    skipped.append(name)  # data-aware ranks are computed for MatMul/Linear layers only
                    continue
                rank = rank_for_output_cosine(w2d.T, inputs[name], self.config.min_cosine)
            else:
                rank = choose_rank(w2d, self.config)
            if rank <= 0:
                continue
            a, b = factor(w2d, rank, self.config.method, name)  # w2d ≈ a @ b: first apply b, then a
            replacement = _torch_pair(layer, a.astype(np.float32), b.astype(np.float32), torch, nn)
            _set_submodule(module, name, replacement)
            m, n = w2d.shape
            layers.append({"layer": name, "op": type(layer).__name__, "shape": list(weight.shape), "rank": rank,
                           "params_before": m * n, "params_after": rank * (m + n),
                           "rel_error": float(np.linalg.norm(w2d - a @ b) / max(np.linalg.norm(w2d), 1e-12))})
        result = model.with_module(module)
        stats = {**_summary(layers, self.config), "skipped_negative": skipped}
        if self.config.train is not None:
            from slimkit.passes.recovery import teacher_for, train_student

            stats["training"] = train_student(module, like=result, teacher=teacher_for(model, ctx), ctx=ctx,
                                              train_config=self.config.train, pass_name=self.name,
                                              alpha=self.config.alpha, temperature=self.config.temperature)
            module.eval()
        return PassResult(result, stats)


    def _torch_layer_inputs(self, model: TorchModel, module, layers: dict, ctx: Context) -> dict[str, np.ndarray]:
        """Inputs of each Linear on the pass's data, captured with forward pre-hooks, as [rows, in]."""
        if self.config.min_cosine is None:
            return {}
        import torch
        from torch import nn

        from slimkit.data_sources import load_data

        data = _calibration(ctx)
        collected: dict[str, list[np.ndarray]] = {}
        hooks = []
        for name, layer in layers.items():
            if isinstance(layer, nn.Linear):
                def grab(_mod, args, name=name):
                    collected.setdefault(name, []).append(args[0].detach().reshape(-1, args[0].shape[-1]).numpy())
                hooks.append(layer.register_forward_pre_hook(grab))
        try:
            with torch.inference_mode():
                for batch in load_data(data, model, batch_size=8, seq_len=ctx.seq_len, shapes=ctx.shapes,
                                       max_samples=self.config.samples):
                    module(**{k: torch.from_numpy(v) for k, v in batch.feed.items()})
        finally:
            for hook in hooks:
                hook.remove()
        return {name: np.concatenate(parts) for name, parts in collected.items()}


def _calibration(ctx: Context):
    if ctx.data is None:
        raise SlimkitError("factorize: min_cosine ranks need data", "pass --data with representative samples")
    return ctx.data


def _summary(layers: list[dict], cfg: FactorizeConfig) -> dict:
    before = sum(x["params_before"] for x in layers)
    after = sum(x["params_after"] for x in layers)
    return {"method": cfg.method, "layers": len(layers), "params_before": before, "params_after": after,
            "flop_ratio": after / before if before else 1.0, "per_layer": layers}


def _torch_pair(layer, a, b, torch, nn):
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, b.shape[0], bias=False)
        second = nn.Linear(b.shape[0], layer.out_features, bias=layer.bias is not None)
        first.weight.data = torch.from_numpy(b)
        second.weight.data = torch.from_numpy(a)
    else:
        rank = b.shape[0]
        first = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                          dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)
        first.weight.data = torch.from_numpy(b.reshape(rank, layer.in_channels, *layer.kernel_size))
        second.weight.data = torch.from_numpy(a.reshape(layer.out_channels, rank, 1, 1))
    if layer.bias is not None:
        second.bias.data = layer.bias.detach().clone()
    return nn.Sequential(first, second)


def _set_submodule(root, dotted: str, new) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
