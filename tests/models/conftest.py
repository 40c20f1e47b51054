"""Builders for small hand-made ONNX graphs and a way to run them with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper


def build_model(nodes: list[onnx.NodeProto], initializers: dict[str, np.ndarray],
                inputs: dict[str, tuple[int, list]], outputs: dict[str, tuple[int, list]],
                opset: int = 17) -> onnx.ModelProto:
    """A checked ModelProto; inputs and outputs map a name to (onnx element type, shape)."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
        initializer=[numpy_helper.from_array(v, n) for n, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_model(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every graph output by name, computed by ONNX Runtime on the CPU."""
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


@pytest.fixture
def make_model():
    return build_model


@pytest.fixture
def run():
    return run_model
