"""Transformer graph fusion for ONNX Runtime: Attention, SkipLayerNormalization, BiasGelu.

Uses onnxscript's ORT fusions, which match graphs from torch's dynamo exporter (ONNX Runtime's
own BERT optimizer finds no attention in them). One rewrite is slimkit's own: the fused
`Attention` receives the padding mask as an additive `attention_bias`, which ONNX Runtime's
quantizer silently drops when it builds `QAttention`. We feed the raw 0/1 mask as `mask_index`
instead, so the mask survives quantization. The fused graph is kept only if it matches the
original on padded inputs and is not slower.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import onnx
from onnx import helper
from pydantic import Field

from slimkit.config import Cosine
from slimkit.data_sources import generate_data
from slimkit.errors import SlimkitError, describe, raised_by_library
from slimkit.evaluate.fidelity import rowwise_cosine
from slimkit.evaluate.latency import interleaved_p50
from slimkit.formats.onnx import OrtRunner
from slimkit.models.base import ModelKind, OnnxModel, WorkingModel
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.quiet import loggers_at

MASK_INPUT = "attention_mask"
# What fuse_transformer calls; an exception raised inside them means "this graph cannot be fused".
FUSION_LIBRARIES = ("onnxscript", "onnx_ir", "onnx", "onnxslim")


class FusedGraphRejected(Exception):
    """ONNX Runtime cannot load or run the fused graph (the original runs): keep the original, say why."""


class FusionConfig(PassConfig):
    # Keep the fused graph only when it is at least this fast relative to the original (p50 ratio).
    max_latency_ratio: float = Field(1.02, gt=0)
    min_cosine: Cosine = 0.9999


@register
class TransformerFusion(Pass):
    name = "transformer-fusion"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = FusionConfig
    description = "fuse attention / layer norm / GELU for ONNX Runtime (kept only if faithful and faster)"

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, OnnxModel)
        try:
            fused, counts = fuse_transformer(model.proto)
        except Exception as exc:  # the fusion libraries rejecting this graph is not fatal; our own bugs are
            if not raised_by_library(exc, FUSION_LIBRARIES):
                raise
            return PassResult(model, {"kept": False, "reason": f"fusion failed: {describe(exc, 160)}"})
        if sum(counts.values()) == 0:
            return PassResult(model, {"kept": False, "reason": "no transformer pattern found"})
        candidate = OnnxModel.from_proto(fused, like=model)
        candidate.ensure_file(ctx.scratch("transformer-fusion"))
        try:
            cosine, ratio = compare_fused(model, candidate, ctx)
        except FusedGraphRejected as exc:
            return PassResult(model, {"fusions": {k: v for k, v in counts.items() if v}, "kept": False,
                                      "reason": str(exc)})
        stats = {"fusions": {k: v for k, v in counts.items() if v}, "cosine_min_padded": cosine,
                 "latency_ratio": ratio}
        if cosine < self.config.min_cosine:
            return PassResult(model, {**stats, "kept": False, "reason": "fused graph is not faithful on padded inputs"})
        if ratio > self.config.max_latency_ratio:
            return PassResult(model, {**stats, "kept": False, "reason": "fused graph is not faster"})
        return PassResult(candidate, {**stats, "kept": True})


def fuse_transformer(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """onnxscript's ORT fusions, then the raw-mask rewrite on fused Attention nodes."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            loggers_at(logging.ERROR, ("onnxscript", "onnx_ir")):
        warnings.simplefilter("ignore")
        model = ir.from_proto(proto)
        model, counts = optimize_for_ort(model)
        fused = ir.to_proto(model)
    if not fused.metadata_props:
        fused.metadata_props.extend(proto.metadata_props)
    counts = dict(counts)
    counts["raw_mask_attention"] = use_raw_mask(fused)
    return fold_constants(fused), counts


def fold_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constant subgraphs (e.g. the Concat of Q, K, V weights the fusion creates) into initializers,
    so quantizers see constant weights instead of quantizing them again at every run."""
    import onnxslim

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return onnxslim.slim(proto)


def use_raw_mask(proto: onnx.ModelProto) -> int:
    """Feed Attention the raw [batch, seq] 0/1 mask as `mask_index` instead of an additive bias.

    Only done when the graph has an `attention_mask` input and the Attention's q/k/v sizes are equal
    (then `qkv_hidden_sizes` can go, which is what lets ONNX Runtime build QAttention).
    """
    graph_inputs = {i.name for i in proto.graph.input}
    if MASK_INPUT not in graph_inputs:
        return 0
    cast_out = f"{MASK_INPUT}_int32"
    rewritten = 0
    for node in proto.graph.node:
        if node.op_type != "Attention" or len(node.input) < 6 or not node.input[5]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        sizes = attrs.get("qkv_hidden_sizes")
        if sizes is not None and len(set(sizes)) != 1:
            continue
        inputs = list(node.input)
        inputs[3], inputs[5] = cast_out, ""
        while inputs and not inputs[-1]:
            inputs.pop()
        del node.input[:]
        node.input.extend(inputs)
        kept = [a for a in node.attribute if a.name != "qkv_hidden_sizes"]
        del node.attribute[:]
        node.attribute.extend(kept)
        rewritten += 1
    if rewritten:
        proto.graph.node.insert(0, helper.make_node("Cast", [MASK_INPUT], [cast_out], to=onnx.TensorProto.INT32,
                                                    name="slimkit_mask_to_int32"))
        _remove_dead_nodes(proto)
    return rewritten


def _remove_dead_nodes(proto: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody uses (the old additive-mask computation)."""
    from slimkit.models.onnx_graph import remove_unused_initializers

    while True:
        used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
        alive = [n for n in proto.graph.node if any(o in used for o in n.output)]
        if len(alive) == len(proto.graph.node):
            break
        del proto.graph.node[:]
        proto.graph.node.extend(alive)
    remove_unused_initializers(proto)


def padded_inputs(model: OnnxModel, ctx: Context, seq_len: int = 32) -> list[dict[str, np.ndarray]]:
    """Two random sequences, the second padded: what reveals a dropped or misapplied mask."""
    data = generate_data(model.input_specs, batch_size=2, seq_len=seq_len, shapes=ctx.shapes, seed=ctx.seed)
    feed = data.batches[0].feed
    if MASK_INPUT in feed:
        feed[MASK_INPUT] = feed[MASK_INPUT].copy()
        feed[MASK_INPUT][1, seq_len // 3:] = 0
    return [feed]


def compare_fused(original: OnnxModel, fused: OnnxModel, ctx: Context) -> tuple[float, float]:
    """(min cosine on padded inputs, p50 latency ratio fused/original at the context's sequence length).

    Raises FusedGraphRejected when ONNX Runtime cannot load or run the fused graph; a failure of the
    original graph is not the fusion's to hide and propagates.
    """
    ref = OrtRunner(original, ctx.threads)
    cand = _fused_step("load", lambda: OrtRunner(fused, ctx.threads))
    cosine = 1.0
    for feed in padded_inputs(original, ctx):
        expected = ref.run(feed)[0]
        got = _fused_step("run", lambda feed=feed: cand.run(feed)[0])
        cosine = min(cosine, float(rowwise_cosine(expected, got).min()))
    timing = generate_data(original.input_specs, batch_size=ctx.batch_size, seq_len=ctx.seq_len, shapes=ctx.shapes)
    feed = timing.batches[0].feed
    _fused_step("run", lambda: cand.run(feed))
    p50 = interleaved_p50({"ref": lambda: ref.run(feed), "cand": lambda: cand.run(feed)}, rounds=2,
                          min_seconds=0.2, warmup=2)
    return cosine, p50["cand"] / p50["ref"]


def _fused_step(what: str, step):
    """Run one step on the fused graph; ONNX Runtime refusing it becomes FusedGraphRejected with the real reason."""
    try:
        return step()
    except SlimkitError as exc:  # the runner's one-line error; its cause is ONNX Runtime's own exception
        reason = describe(exc.__cause__ or exc, 160)
        raise FusedGraphRejected(f"ONNX Runtime cannot {what} the fused graph: {reason}") from exc
