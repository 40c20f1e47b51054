"""What a TFLite flatbuffer holds and how LiteRT runs it: its ops, which of them XNNPACK took, and which are
quantized.

Why a model is slow on LiteRT is usually visible here: an op XNNPACK does not take (a dynamic-range depthwise
convolution, an int16-activation op, a weight DEQUANTIZE) runs on LiteRT's own reference kernels, and one such op
can cost more than the whole delegated rest. The quantization passes and the report read these facts instead of
guessing them from the file size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimkit.errors import require
from slimkit.quiet import quiet_native

# Integer tensor types that carry quantized values (int32 is also a bias or index type, judged by scale).
_LOW_BIT = {"int8", "uint8", "int16", "int4"}


@dataclass(frozen=True)
class Op:
    """One operator of the main subgraph: its builtin name, index and tensors (by name)."""

    index: int
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def scope(self) -> str:
        """ai-edge-quantizer's name for the op: its output names joined by ';', with a trailing ';'."""
        return ";".join(self.outputs) + ";" if self.outputs else ";".join(self.inputs)


def _interpreter(path: Path, *, delegated: bool, threads: int = 1):
    with quiet_native("LiteRT"):
        litert = require("ai_edge_litert.interpreter", "tflite")
        kwargs = {} if delegated else {
            "experimental_op_resolver_type": litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        interpreter = litert.Interpreter(model_path=str(path), num_threads=threads, **kwargs)
        if delegated:
            interpreter.allocate_tensors()  # XNNPACK is applied here
    return interpreter


def ops_of(path: Path) -> tuple[list[Op], dict[str, dict]]:
    """The model's ops in execution order, and its tensors' details by name (dtype, shape, quantization, and
    `constant`: neither a graph input nor any op's output, i.e. a weight)."""
    interpreter = _interpreter(path, delegated=False)
    tensors = {d["index"]: dict(d) for d in interpreter.get_tensor_details()}
    ops = [Op(o["index"], o["op_name"], tuple(tensors[i]["name"] for i in o["inputs"] if i >= 0 and i in tensors),
              tuple(tensors[i]["name"] for i in o["outputs"] if i in tensors))
           for o in interpreter._get_ops_details()]
    produced = {t for op in ops for t in op.outputs} | {d["name"] for d in interpreter.get_input_details()}
    for detail in tensors.values():
        detail["constant"] = detail["name"] not in produced
    return ops, {d["name"]: d for d in tensors.values()}


def delegation(path: Path, threads: int = 1) -> dict:
    """Which ops XNNPACK runs and which fall back to LiteRT's built-in kernels, with counts by op type.

    After XNNPACK is applied, each DELEGATE node stands for a partition of the original ops: walking back from
    its outputs through their producers, until its own inputs, finds them. Every other op runs on the built-in
    kernels (the reference or optimized CPU kernels, one op at a time).
    """
    return delegation_of(_interpreter(path, delegated=True, threads=threads))


def delegation_of(interpreter) -> dict:
    """`delegation` for an interpreter already allocated with its default delegate (a runner's own)."""
    native = interpreter._interpreter
    names, inputs, outputs = [], [], []
    for node in range(native.NumNodes()):
        names.append(native.NodeName(node))
        inputs.append([int(i) for i in native.NodeInputs(node)])
        outputs.append([int(i) for i in native.NodeOutputs(node)])
    originals = [i for i, name in enumerate(names) if name != "DELEGATE"]
    producer = {t: i for i in originals for t in outputs[i]}
    taken: set[int] = set()
    for node, name in enumerate(names):
        if name != "DELEGATE":
            continue
        boundary = set(inputs[node])
        stack = [t for t in outputs[node]]
        while stack:
            tensor = stack.pop()
            op = producer.get(tensor)
            if op is None or op in taken or tensor in boundary:
                continue
            taken.add(op)
            stack.extend(t for t in inputs[op] if t >= 0 and t not in boundary)
    fallback = [i for i in originals if i not in taken]
    return {
        "delegate": "XNNPACK",
        "ops": len(originals),
        "delegated": len(taken),
        "delegated_by_type": dict(Counter(names[i] for i in sorted(taken))),
        "fallback": len(fallback),
        "fallback_by_type": dict(Counter(names[i] for i in fallback)),
    }


def is_low_bit(detail: dict) -> bool:
    """A tensor holding quantized values: int8/int16/int4 data, or int32 with a quantization scale (a bias)."""
    dtype = np.dtype(detail["dtype"]).name if not isinstance(detail["dtype"], str) else detail["dtype"]
    if dtype in _LOW_BIT:
        return True
    params = detail.get("quantization_parameters") or {}
    return dtype == "int32" and len(params.get("scales", [])) > 0


def float_weights(path: Path) -> bool:
    """Whether any constant weight (a tensor no op produces, with 2+ dims) is float32: a float model."""
    _ops, tensors = ops_of(path)
    for detail in tensors.values():
        if not detail["constant"] or len(detail["shape"]) < 2:
            continue
        if np.dtype(detail["dtype"]) in (np.float16,) or is_low_bit(detail):
            return False
    return True


def precision_by_op(path: Path) -> dict[str, dict[str, int]]:
    """Op type -> {'quantized': n, 'float': m}: an op is quantized when any of its tensors holds low-bit values
    (int8 activations, int8/int4 weights, also behind a weight's DEQUANTIZE); an op fed by a dequantized
    activation computes in float."""
    ops, tensors = ops_of(path)
    # Weight-only models dequantize their int8/int4 weights in the graph: a DEQUANTIZE output stands for its input.
    source = {op.outputs[0]: op.inputs[0] for op in ops if op.name == "DEQUANTIZE" and op.inputs and op.outputs
              and tensors[op.inputs[0]]["constant"]}
    table: dict[str, dict[str, int]] = {}
    for op in ops:
        if op.name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        quantized = any(is_low_bit(tensors[source.get(t, t)]) for t in op.inputs + op.outputs
                        if source.get(t, t) in tensors)
        row = table.setdefault(op.name, {"quantized": 0, "float": 0})
        row["quantized" if quantized else "float"] += 1
    return table


def describe(path: Path) -> dict:
    """What `slimkit inspect` shows of a TFLite file: op histogram, weights (constant tensors) with their
    dtypes (shape and index constants left out), which ops are quantized, and which XNNPACK runs at one
    thread."""
    ops, tensors = ops_of(path)
    weights = [(name, [int(x) for x in d["shape"]], int(np.prod(d["shape"])) if len(d["shape"]) else 1,
                np.dtype(d["dtype"]).name) for name, d in tensors.items()
               if d["constant"] and len(d["shape"]) >= 1 and (np.dtype(d["dtype"]).kind == "f" or is_low_bit(d))]
    execution = delegation(path)
    return {
        "ops": dict(Counter(op.name for op in ops).most_common()),
        "op_precision": precision_by_op(path),
        "delegated_by_type": execution["delegated_by_type"],
        "execution": execution,
        "weights": weights,
    }
