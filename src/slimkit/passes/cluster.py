"""Weight sharing: each selected weight tensor replaced by the nearest of K shared values.

ONNX: a clustered initializer is stored as uint8 indices (or two 4-bit indices per byte when
K <= 16) plus a float codebook, and rebuilt in the graph (unpack -> Gather from the codebook ->
Reshape). Every input of that subgraph is constant, so ONNX Runtime and OpenVINO fold it once at
session start: the file shrinks and inference costs nothing extra.
PyTorch: weights are replaced by their centroids in place of a copy of the module.
"""

from __future__ import annotations

import gzip
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import Field, field_validator

from slimkit.algorithms.kmeans1d import kmeans1d, kmeans1d_per_channel
from slimkit.config import Alpha, ConfigError, NonNegative, Temperature, searchable
from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, OnnxModel, TorchModel, WorkingModel
from slimkit.models.onnx_graph import copy_model, weight_layers
from slimkit.models.onnx_surgery import CODEBOOK_OPSET, insert_rebuild_nodes, replace_by_codebook
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.recovery import refuse_onnx_training
from slimkit.passes.select import select_names
from slimkit.train import TrainConfig

MAX_K = 256  # indices are stored in 8 bits (4 bits when k <= 16)


class ClusterConfig(PassConfig):
    k: int = Field(256, json_schema_extra=searchable(choices=[16, 32, 64, 256]))
    init: Literal["optimal", "linear", "density", "kmeans++"] = "optimal"
    min_params: NonNegative = 4096
    # One codebook per output channel (K floats each): finer sharing, worth it for small K.
    per_channel: bool = False
    include: list[str] = []
    exclude: list[str] = []
    # Exact zeros (pruned weights) stay zero and are not clustered, as in Deep Compression.
    keep_zeros: bool = True
    # PyTorch: also share the biases of clustered layers (k values each): they matter once weights are tiny.
    biases: bool = False
    # PyTorch: fine-tune the centroids with assignments fixed (Deep Compression's shared-gradient update).
    train: TrainConfig | None = None
    alpha: Alpha = None
    temperature: Temperature = 4.0

    @field_validator("k")
    @classmethod
    def _k_fits_the_indices(cls, k: int) -> int:
        if k > MAX_K:
            raise ConfigError("k", f"k={k} needs more than the 8-bit indices allow ({MAX_K})",
                              f"choose k between 2 and {MAX_K}")
        if k < 2:
            raise ConfigError("k", f"k={k} leaves nothing to share", f"choose k between 2 and {MAX_K}")
        return k


def cluster_tensor(name: str, values: np.ndarray, k: int, init: str, per_channel: bool, keep_zeros: bool):
    """(centroids, labels, inertia); with keep_zeros and some exact zeros, 0.0 is the last codebook entry and
    only the nonzeros are clustered (into k - 1 values), so pruned weights stay exactly zero."""
    zeros = values == 0
    if not keep_zeros or per_channel or not zeros.any():
        return cluster_values(name, values, k, init, per_channel)
    nonzero = values[~zeros]
    if nonzero.size == 0:
        return np.zeros(1, np.float32), np.zeros(values.size, np.int64), 0.0
    centroids, labels_nz, inertia = cluster_values(name, nonzero, min(k - 1, len(np.unique(nonzero))), init)
    labels = np.full(values.size, len(centroids), np.int64)
    labels[~zeros.reshape(-1)] = labels_nz
    return np.append(centroids, 0.0).astype(np.float32), labels, inertia


def cluster_values(name: str, values: np.ndarray, k: int, init: str, per_channel: bool = False):
    """kmeans1d (per tensor, or per row of a [channels, ...] array) with its ValueErrors turned into one line."""
    try:
        if per_channel:
            return kmeans1d_per_channel(values.reshape(values.shape[0], -1), k, axis=0, init=init)
        return kmeans1d(values.reshape(-1), k, init=init)
    except ValueError as exc:
        raise SlimkitError(f"cluster: weight '{name}': {exc}", "exclude it with exclude: [...] or lower k") from exc


@register
class Cluster(Pass):
    name = "cluster"
    accepts = frozenset({ModelKind.ONNX, ModelKind.TORCH})
    returns = None  # the kind it was given
    Config = ClusterConfig
    description = "k-means weight sharing (codebook + 8/4-bit indices in the file)"
    search_stage = "share"

    def data_use(self) -> frozenset[str]:
        return frozenset({"train"}) if self.config.train is not None else frozenset()

    def relaxed(self) -> dict[str, Any] | None:
        """Twice the shared values (16 -> 32 -> ... -> 256)."""
        return {"k": self.config.k * 2} if self.config.k * 2 <= MAX_K else None

    def check_input(self, kind: ModelKind) -> None:
        if kind == ModelKind.ONNX:
            refuse_onnx_training(self.name, self.config.train, "the centroids")

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        self.check_input(model.kind)
        if isinstance(model, TorchModel):
            return self._run_torch(model, ctx)
        assert isinstance(model, OnnxModel)
        return self._run_onnx(model, ctx)

    def _run_onnx(self, model: OnnxModel, ctx: Context) -> PassResult:
        proto = copy_model(model.proto)
        inits = {t.name: t for t in proto.graph.initializer}
        consumers = {}  # weight -> its (last) reader, whose layout says where the output channels are
        for layer in weight_layers(proto):
            consumers[layer.weight] = layer
        candidates = [(n, layer.params) for n, layer in consumers.items()
                      if layer.data_type == onnx.TensorProto.FLOAT]
        names = select_names(candidates, include=self.config.include, exclude=self.config.exclude,
                             min_params=self.config.min_params, what="weight")
        before = model.proto.SerializeToString()
        layers, new_nodes = [], []
        for name in names:
            weight = numpy_helper.to_array(inits[name])
            axis = consumers[name].channel_axis if self.config.per_channel else 0
            moved = np.moveaxis(weight, axis, 0)
            centroids, labels, inertia = cluster_tensor(name, moved, self.config.k, self.config.init,
                                                        self.config.per_channel, self.config.keep_zeros)
            new_nodes += replace_by_codebook(proto, name, centroids, labels,
                                             channel_axis=axis if self.config.per_channel else None)
            layers.append({"weight": name, "params": int(weight.size), "op": consumers[name].op_type,
                           "mse": float(inertia / weight.size)})
        insert_rebuild_nodes(proto, new_nodes, CODEBOOK_OPSET)
        result = OnnxModel.from_proto(proto, like=model)
        result.ensure_file(ctx.scratch(self.name))
        after = proto.SerializeToString()
        return PassResult(result, {
            "k": self.config.k, "index_bits": 4 if self.config.k <= 16 else 8, "layers": len(layers),
            "per_channel": self.config.per_channel,
            "params_clustered": sum(x["params"] for x in layers),
            "file_bytes_before": len(before), "file_bytes_after": len(after),
            "gzip_bytes_before": len(gzip.compress(before, 6)), "gzip_bytes_after": len(gzip.compress(after, 6)),
            "per_layer": layers,
        })

    def _run_torch(self, model: TorchModel, ctx: Context) -> PassResult:
        import copy

        import torch

        cfg = self.config
        module = copy.deepcopy(model.module)
        params = {n: p for n, p in module.named_parameters() if n.endswith(("weight", "kernel")) and p.dim() >= 2}
        names = select_names([(n, p.numel()) for n, p in params.items()], include=self.config.include,
                             exclude=self.config.exclude, min_params=self.config.min_params, what="parameter")
        if cfg.biases:
            all_params = dict(module.named_parameters())
            params.update({n[:-len("weight")] + "bias": all_params[n[:-len("weight")] + "bias"] for n in names
                           if n[:-len("weight")] + "bias" in all_params})
            names += [n[:-len("weight")] + "bias" for n in list(names) if n[:-len("weight")] + "bias" in params]
        layers = []
        assignments: dict[str, torch.Tensor] = {}  # cluster id of every weight, one id space per tensor
        with torch.no_grad():
            for name in names:
                w = params[name].detach().cpu().numpy()  # [out, in, ...]: axis 0 is the output channel
                k = min(cfg.k, len(np.unique(w))) if w.ndim == 1 else cfg.k  # a 10-class bias has 10 values
                centroids, labels, inertia = cluster_tensor(name, w, k, cfg.init, cfg.per_channel and w.ndim > 1,
                                                            cfg.keep_zeros)
                labels = labels.astype(np.int64)
                if cfg.per_channel:
                    shared = np.take_along_axis(centroids, labels, axis=1)
                    ids = labels + np.arange(centroids.shape[0])[:, None] * centroids.shape[1]
                else:
                    shared = centroids[labels]
                    ids = labels
                shared = shared.reshape(w.shape).astype(np.float32)
                params[name].copy_(torch.from_numpy(shared))
                assignments[name] = torch.from_numpy(ids.reshape(-1))
                layers.append({"weight": name, "params": int(w.size), "mse": float(inertia / w.size)})
        stats: dict = {}
        if cfg.train is not None:
            stats["training"] = self._finetune(model, module, {n: params[n] for n in names}, assignments, ctx)
        result = model.with_module(module)
        distinct = max((len(torch.unique(params[n])) for n in names), default=0)
        return PassResult(result, {"k": self.config.k, "layers": len(layers), "max_distinct_values": distinct,
                                   "params_clustered": sum(x["params"] for x in layers), "per_layer": layers,
                                   **stats})

    def _finetune(self, model: TorchModel, module, params: dict, assignments: dict, ctx: Context) -> dict:
        """Train the centroids, assignments fixed: every weight of a cluster gets the cluster's summed
        gradient, so members stay equal under any optimizer; after each step they are snapped to their mean
        to remove float drift. Zeros kept by keep_zeros are one more cluster, held at exactly zero."""
        import torch

        from slimkit.passes.recovery import teacher_for, train_student

        zero_ids = {n: assignments[n][params[n].detach().reshape(-1) == 0].unique() for n in params}

        def shared_sum(name: str, flat: torch.Tensor) -> torch.Tensor:
            ids = assignments[name]
            sums = torch.zeros(int(ids.max()) + 1, dtype=flat.dtype).index_add_(0, ids, flat)
            return sums, ids

        def before_step(_module) -> None:
            for name, p in params.items():
                if p.grad is not None:
                    sums, ids = shared_sum(name, p.grad.reshape(-1))
                    if self.config.keep_zeros:
                        sums[zero_ids[name]] = 0.0
                    p.grad.copy_(sums[ids].view_as(p.grad))

        def after_step(_module, _step: int) -> None:
            with torch.no_grad():
                for name, p in params.items():
                    sums, ids = shared_sum(name, p.detach().reshape(-1))
                    counts = torch.bincount(ids, minlength=len(sums)).clamp(min=1).to(sums.dtype)
                    means = sums / counts
                    if self.config.keep_zeros:
                        means[zero_ids[name]] = 0.0
                    p.copy_(means[ids].view_as(p))

        stats = train_student(module, like=model.with_module(module), teacher=teacher_for(model, ctx), ctx=ctx,
                              train_config=self.config.train, pass_name=self.name, alpha=self.config.alpha,
                              temperature=self.config.temperature, before_step=before_step, after_step=after_step)
        module.eval()
        return stats
