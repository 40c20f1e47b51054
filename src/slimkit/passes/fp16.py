"""fp32 -> fp16 for ONNX: weights and compute in fp16, inputs and outputs stay fp32.

Uses ONNX Runtime's converter (the maintained successor of onnxconverter-common's), whose default
block list keeps ops that are unsafe or unsupported in fp16 (e.g. Range, Resize, TopK) in fp32.
"""

from __future__ import annotations

import warnings

from slimkit.models.base import ModelKind, OnnxModel, WorkingModel
from slimkit.models.onnx_graph import copy_model, sort_topologically
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.quantize import refuse_quantized


class Fp16Config(PassConfig):
    keep_io_types: bool = True
    # Extra op types to keep in fp32, on top of ONNX Runtime's default block list.
    op_block_list: list[str] = []


@register
class Fp16(Pass):
    name = "fp16"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = Fp16Config
    description = "fp32 -> fp16 weights and compute, fp32 I/O kept"
    search_stage = "quantize"
    needs_float = True

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        assert isinstance(model, OnnxModel)
        refuse_quantized(model, self.name)  # fp16 over int8 kernels only adds error, like quantizing twice
        block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(self.config.op_block_list))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert_float_to_float16(
                copy_model(model.proto), keep_io_types=self.config.keep_io_types, op_block_list=block,
                disable_shape_infer=False,
            )
        sort_topologically(converted.graph)  # the converter appends its input casts after their readers
        result = OnnxModel.from_proto(converted, like=model)
        result.ensure_file(ctx.scratch("fp16"))
        kept = sorted({n.op_type for n in converted.graph.node if n.op_type in block})
        return PassResult(result, {"kept_fp32_ops": kept, "keep_io_types": self.config.keep_io_types})
