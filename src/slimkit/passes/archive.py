"""`to-slim`: write the model as a `.slim` Deep Compression archive (docs/slim-format.md).

Pruned zeros are stored as entropy-coded gaps, clustered values as entropy-coded codebook indices, so
pruning + weight sharing + entropy coding multiply. Loading restores the ONNX model bit-exactly.
"""

from __future__ import annotations

from slimkit.archive.onnx_io import save_onnx_archive
from slimkit.models.base import ModelKind, OnnxModel, SlimModel, WorkingModel
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register


class ToSlimConfig(PassConfig):
    pass


@register
class ToSlim(Pass):
    name = "to-slim"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.SLIM
    Config = ToSlimConfig
    description = "Deep Compression archive (.slim): sparse positions + codebook indices, entropy-coded"

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, OnnxModel)
        path = ctx.scratch(self.name) / "model.slim"
        metadata = {"task": model.task, "input_names": [s.name for s in model.input_specs]}
        stats = save_onnx_archive(model.proto, path, metadata=metadata)
        # The archive's own per-tensor counts: no second decode of every initializer.
        weights = [t for t in stats["tensors"] if t["dtype"] == "float32" and len(t["shape"]) >= 1]
        fp32_bytes = sum(t["raw_bytes"] for t in weights)
        result = SlimModel(path=path)
        result.carry_over(model)
        nonzero = sum(t["nonzeros"] for t in weights)
        total = sum(t["count"] for t in weights)
        return PassResult(result, {
            "archive_bytes": path.stat().st_size, "fp32_weight_bytes": fp32_bytes,
            "compression_vs_fp32_weights": fp32_bytes / max(path.stat().st_size, 1),
            "onnx_bytes": len(model.proto.SerializeToString()),
            "weights_nonzero": nonzero / max(total, 1),
            "per_tensor": stats["tensors"]})
