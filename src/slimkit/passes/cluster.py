"""Weight sharing: each selected weight tensor replaced by the nearest of K shared values.

ONNX: a clustered initializer is stored as uint8 indices (or two 4-bit indices per byte when
K <= 16) plus a float codebook, and rebuilt in the graph (unpack -> Gather from the codebook ->
Reshape). Every input of that subgraph is constant, so ONNX Runtime and OpenVINO fold it once at
session start: the file shrinks and inference costs nothing extra.
PyTorch: weights are replaced by their centroids in place of a copy of the module.
"""

from __future__ import annotations

import gzip
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slimkit.algorithms.kmeans1d import kmeans1d, kmeans1d_per_channel
from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, OnnxModel, TorchModel, WorkingModel
from slimkit.models.onnx_graph import copy_model, remove_unused_initializers
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.select import select_names

_WEIGHT_OPS = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0, "Attention": 1, "ConvTranspose": 1}


class ClusterConfig(PassConfig):
    k: int = 256
    init: Literal["optimal", "linear", "density", "kmeans++"] = "optimal"
    min_params: int = 4096
    # One codebook per output channel (K floats each): finer sharing, worth it for small K.
    per_channel: bool = False
    include: list[str] = []
    exclude: list[str] = []


def cluster_values(name: str, values: np.ndarray, k: int, init: str, per_channel: bool = False):
    """kmeans1d (per tensor, or per row of a [channels, ...] array) with its ValueErrors turned into one line."""
    try:
        if per_channel:
            return kmeans1d_per_channel(values.reshape(values.shape[0], -1), k, axis=0, init=init)
        return kmeans1d(values.reshape(-1), k, init=init)
    except ValueError as exc:
        raise SlimkitError(f"cluster: weight '{name}': {exc}", "exclude it with exclude: [...] or lower k") from exc


def _check_k(k: int) -> None:
    if not 2 <= k <= 256:
        raise SlimkitError(f"cluster: k={k} is out of range", "choose k between 2 and 256 (8-bit indices)")


@register
class Cluster(Pass):
    name = "cluster"
    accepts = frozenset({ModelKind.ONNX, ModelKind.TORCH})
    returns = None  # the kind it was given
    Config = ClusterConfig
    description = "k-means weight sharing (codebook + 8/4-bit indices in the file)"

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        _check_k(self.config.k)
        if isinstance(model, TorchModel):
            return self._run_torch(model)
        assert isinstance(model, OnnxModel)
        return self._run_onnx(model, ctx)

    def _run_onnx(self, model: OnnxModel, ctx: Context) -> PassResult:
        proto = copy_model(model.proto)
        inits = {t.name: t for t in proto.graph.initializer}
        consumers = {}
        for node in proto.graph.node:
            index = _WEIGHT_OPS.get(node.op_type)
            if index is not None and len(node.input) > index and node.input[index] in inits:
                consumers[node.input[index]] = node
        candidates = [(n, int(np.prod(inits[n].dims))) for n in consumers
                      if inits[n].data_type == onnx.TensorProto.FLOAT and len(inits[n].dims) >= 2]
        names = select_names(candidates, include=self.config.include, exclude=self.config.exclude,
                             min_params=self.config.min_params, what="weight")
        before = model.proto.SerializeToString()
        layers, new_nodes = [], []
        for name in names:
            weight = numpy_helper.to_array(inits[name])
            axis = output_channel_axis(consumers[name]) if self.config.per_channel else 0
            moved = np.moveaxis(weight, axis, 0)
            centroids, labels, inertia = cluster_values(name, moved, self.config.k, self.config.init,
                                                        self.config.per_channel)
            new_nodes += codebook_subgraph(proto, name, weight.shape, centroids.astype(np.float32), labels,
                                           channel_axis=axis if self.config.per_channel else None)
            proto.graph.initializer.remove(inits[name])
            layers.append({"weight": name, "params": int(weight.size), "op": consumers[name].op_type,
                           "mse": float(inertia / weight.size)})
        for node in reversed(new_nodes):
            proto.graph.node.insert(0, node)
        _ensure_opset(proto, 11)
        remove_unused_initializers(proto)
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

    def _run_torch(self, model: TorchModel) -> PassResult:
        import copy

        import torch

        module = copy.deepcopy(model.module)
        params = {n: p for n, p in module.named_parameters() if n.endswith("weight") and p.dim() >= 2}
        names = select_names([(n, p.numel()) for n, p in params.items()], include=self.config.include,
                             exclude=self.config.exclude, min_params=self.config.min_params, what="parameter")
        layers = []
        with torch.no_grad():
            for name in names:
                w = params[name].detach().cpu().numpy()  # [out, in, ...]: axis 0 is the output channel
                centroids, labels, inertia = cluster_values(name, w, self.config.k, self.config.init,
                                                            self.config.per_channel)
                if self.config.per_channel:
                    shared = np.take_along_axis(centroids, labels.astype(np.int64), axis=1)
                else:
                    shared = centroids[labels.astype(np.int64)]
                shared = shared.reshape(w.shape).astype(np.float32)
                params[name].copy_(torch.from_numpy(shared))
                layers.append({"weight": name, "params": int(w.size), "mse": float(inertia / w.size)})
        result = TorchModel(module=module, input_specs=model.input_specs, example_inputs=model.example_inputs,
                            output_names=model.output_names)
        result.carry_over(model)
        result.metadata["clustered"] = {"k": self.config.k, "weights": names}
        return PassResult(result, {"k": self.config.k, "layers": len(layers),
                                   "params_clustered": sum(x["params"] for x in layers), "per_layer": layers})


def output_channel_axis(node: onnx.NodeProto) -> int:
    """Where a stored weight's output channels are: MatMul (and Gemm without transB) weights are [in, out]."""
    if node.op_type == "MatMul":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0


def codebook_subgraph(proto: onnx.ModelProto, name: str, shape: tuple[int, ...], centroids: np.ndarray,
                      labels: np.ndarray, channel_axis: int | None = None) -> list[onnx.NodeProto]:
    """Add codebook + index initializers for `name` and return the nodes that rebuild it.

    K <= 16: two 4-bit indices per byte (first index in the high nibble); otherwise one uint8 per index.
    Per-channel (`channel_axis` set): `centroids` is [C, K] and `labels` follow the weight with that axis
    moved first; the values come from GatherElements and are moved back with a Transpose.
    """
    n = int(np.prod(shape))
    labels = labels.reshape(-1).astype(np.uint8)
    k = len(centroids)
    nodes = []
    book = f"{name}__codebook"
    proto.graph.initializer.append(numpy_helper.from_array(centroids, book))
    if k <= 16:
        padded = np.concatenate([labels, np.zeros(n % 2, np.uint8)])
        packed = (padded[0::2] << 4) | padded[1::2]
        proto.graph.initializer.extend([
            numpy_helper.from_array(packed.astype(np.uint8), f"{name}__packed4"),
            numpy_helper.from_array(np.array([16], np.int32), f"{name}__sixteen"),
            numpy_helper.from_array(np.array([-1, 1], np.int64), f"{name}__col"),
            numpy_helper.from_array(np.array([-1], np.int64), f"{name}__flat"),
            numpy_helper.from_array(np.array([0], np.int64), f"{name}__start"),
            numpy_helper.from_array(np.array([n], np.int64), f"{name}__end"),
        ])
        p = f"{name}__"
        # Unpacked with integer Div/Mul/Sub on int32: every runtime implements these (OpenVINO's BitShift
        # on uint8 gave wrong values).
        nodes += [
            helper.make_node("Cast", [p + "packed4"], [p + "packed32"], to=onnx.TensorProto.INT32),
            helper.make_node("Div", [p + "packed32", p + "sixteen"], [p + "hi"]),
            helper.make_node("Mul", [p + "hi", p + "sixteen"], [p + "hi16"]),
            helper.make_node("Sub", [p + "packed32", p + "hi16"], [p + "lo"]),
            helper.make_node("Reshape", [p + "hi", p + "col"], [p + "hi_col"]),
            helper.make_node("Reshape", [p + "lo", p + "col"], [p + "lo_col"]),
            helper.make_node("Concat", [p + "hi_col", p + "lo_col"], [p + "pairs"], axis=1),
            helper.make_node("Reshape", [p + "pairs", p + "flat"], [p + "all"]),
            helper.make_node("Slice", [p + "all", p + "start", p + "end"], [p + "idx32"]),
        ]
        index = p + "idx32"
    else:
        proto.graph.initializer.append(numpy_helper.from_array(labels, f"{name}__indices"))
        nodes.append(helper.make_node("Cast", [f"{name}__indices"], [f"{name}__idx32"], to=onnx.TensorProto.INT32))
        index = f"{name}__idx32"
    if channel_axis is None:
        shape_name = f"{name}__shape"
        proto.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), shape_name))
        nodes += [
            helper.make_node("Gather", [book, index], [f"{name}__values"], axis=0),
            helper.make_node("Reshape", [f"{name}__values", shape_name], [name]),
        ]
    else:
        moved = (shape[channel_axis],) + tuple(d for i, d in enumerate(shape) if i != channel_axis)
        perm = list(range(1, len(shape)))
        perm.insert(channel_axis, 0)  # inverse of moving channel_axis to the front
        proto.graph.initializer.extend([
            numpy_helper.from_array(np.array([moved[0], -1], np.int64), f"{name}__rows"),
            numpy_helper.from_array(np.array(moved, np.int64), f"{name}__moved"),
        ])
        nodes += [
            helper.make_node("Reshape", [index, f"{name}__rows"], [f"{name}__idx2d"]),
            helper.make_node("GatherElements", [book, f"{name}__idx2d"], [f"{name}__values"], axis=1),
            helper.make_node("Reshape", [f"{name}__values", f"{name}__moved"], [f"{name}__moved_w"]),
            helper.make_node("Transpose", [f"{name}__moved_w"], [name], perm=perm),
        ]
    for i, node in enumerate(nodes):
        node.name = f"{name}__cluster_{i}"
    return nodes


def _ensure_opset(proto: onnx.ModelProto, minimum: int) -> None:
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < minimum:
            opset.version = minimum
