"""`slimkit inspect`: what a model takes and returns, how big it is, what it is made of."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from slimkit.models.base import OnnxModel, OpenVinoModel, TorchModel, WorkingModel


def inspect_model(model: WorkingModel, top: int = 10, data: Any = None) -> dict[str, Any]:
    """Inputs, outputs, parameter count, size on disk, op histogram and the largest weights; the task as
    `optimize` would take it (given, from the model, or inferred from integer labels in `data`)."""
    task, task_from = model.task, "model" if model.task else None
    if task is None and data is not None:
        from slimkit.dataplan import infer_task

        task = infer_task(model, data)
        task_from = f"inferred: {data} has integer labels" if task else None
    info: dict[str, Any] = {"model": model.source, "kind": str(model.kind), "task": task, "task_from": task_from,
                            "size_bytes": model.size_bytes(), "files": [str(p) for p in model.files()]}
    if isinstance(model, OnnxModel):
        from onnx import numpy_helper

        proto = model.proto
        info["inputs"] = [s.describe() for s in model.input_specs]
        info["outputs"] = [_onnx_value(v) for v in proto.graph.output]
        info["opset"] = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        info["producer"] = f"{proto.producer_name} {proto.producer_version}".strip()
        weights = [(t.name, list(t.dims), int(np.prod(t.dims)) if t.dims else 1,
                    numpy_helper.helper.tensor_dtype_to_np_dtype(t.data_type).name)
                   for t in proto.graph.initializer]
        info["params"] = sum(w[2] for w in weights)
        info["ops"] = dict(Counter(n.op_type for n in _all_nodes(proto.graph)).most_common())
        from slimkit.models.onnx_checks import nonfinite_weights

        info["nonfinite_weights"] = nonfinite_weights(proto)
    elif isinstance(model, TorchModel):
        info["inputs"] = [s.describe() for s in model.input_specs]
        info["outputs"] = list(model.output_names)
        weights = [(n, list(p.shape), p.numel(), str(p.dtype).replace("torch.", ""))
                   for n, p in model.module.named_parameters()]
        info["params"] = sum(w[2] for w in weights)
        leaves = [type(m).__name__ for m in model.module.modules() if not list(m.children())]
        info["ops"] = dict(Counter(leaves).most_common())
        info["nonfinite_weights"] = _torch_nonfinite(model.module)
    else:
        from slimkit.formats import make_runner

        runner = make_runner(model, threads=1)
        info["inputs"] = [s.describe() for s in runner.input_specs]
        weights = []
        info["params"] = None
        info["ops"] = {}
        info["runtime"] = runner.runtime
        if str(model.kind) == "tflite":  # its ops, which are quantized, and which XNNPACK takes
            from slimkit.formats.tflite_graph import describe

            graph = describe(model.path)
            weights = graph.pop("weights")
            info["params"] = sum(w[2] for w in weights)
            info.update(graph)
    weights.sort(key=lambda w: -w[2])
    info["largest"] = [{"name": n, "shape": s, "params": c, "dtype": d} for n, s, c, d in weights[:top]]
    if isinstance(model, OpenVinoModel):
        info["outputs"] = []
    info["hardware"] = hardware_info()
    return info


def _torch_nonfinite(module, limit: int = 5) -> dict[str, Any] | None:
    """NaN / Inf in a module's parameters and buffers, in the shape of `onnx_checks.nonfinite_weights`."""
    import torch

    tensors, values, names = 0, 0, []
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor.detach())).sum())
        if bad:
            tensors, values = tensors + 1, values + bad
            if len(names) < limit:
                names.append(name)
    return {"tensors": tensors, "values": values, "names": names} if tensors else None


def nonfinite_line(found: dict[str, Any] | None) -> str | None:
    """One line for `slimkit inspect` about NaN / Inf weights, or None when all weights are finite."""
    if not found:
        return None
    more = ", ..." if found["tensors"] > len(found["names"]) else ""
    values, tensors = found["values"], found["tensors"]
    return (f"NaN/Inf weights: {values:,} value{'s' if values != 1 else ''} in {tensors} tensor"
            f"{'s' if tensors != 1 else ''} ({', '.join(found['names'])}{more}): outputs may be NaN or Inf")


# The CPU features that decide which precision runs fast, each from the /proc/cpuinfo flags that provide it.
CPU_FEATURES = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "BF16": ("avx512_bf16", "amx_bf16"),
    "AMX": ("amx_tile",),
    "FP16": ("avx512_fp16", "amx_fp16"),
}


def hardware_info() -> dict[str, Any]:
    """`slimkit.hardware.hardware_plan()` plus `features`: each of CPU_FEATURES present or not (None where the
    CPU flags cannot be read, e.g. no /proc/cpuinfo)."""
    from slimkit.hardware import hardware_plan

    plan = hardware_plan()
    flags = plan.get("cpu_flags")
    plan["features"] = (None if flags is None else
                        {name: any(flags.get(f, False) for f in sources) for name, sources in CPU_FEATURES.items()})
    return plan


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _onnx_value(value) -> str:
    ttype = value.type.tensor_type
    dims = "x".join(str(d.dim_value) if d.dim_value > 0 else (d.dim_param or "?") for d in ttype.shape.dim)
    return f"{value.name}[{dims}]" if value.type.HasField("tensor_type") else value.name
