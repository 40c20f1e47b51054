"""Conversion passes on the trained digits MLP and CNN: to-onnx, onnx-cleanup, fp16, to-openvino, to-tflite.

Every artifact is run on its own runtime and compared with PyTorch (or ONNX) on sklearn's digits test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from slimkit.bundled_data import digits_arrays
from slimkit.demo_models import trained_digits_model
from slimkit.errors import SlimkitError
from slimkit.evaluate.measure import Evaluator
from slimkit.formats import load, make_runner
from slimkit.formats.tflite import TfliteModel
from slimkit.models.base import ModelKind, OnnxModel, OpenVinoModel, TorchModel
from slimkit.passes.base import Context, PassResult, get_pass
from slimkit.settings import MeasureSettings


@dataclass
class Converted:
    name: str
    torch: TorchModel
    onnx: PassResult
    cleanup: PassResult
    fp16: PassResult
    openvino: PassResult
    tflite: PassResult


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def converted(request, digits_cache, tmp_path_factory) -> Converted:
    """Each pass run once per model; the tests below check what came out."""
    name = request.param
    ctx = Context(workdir=tmp_path_factory.mktemp(f"convert-{name}"))
    model = load(trained_digits_model(name, digits_cache))
    onnx_result = get_pass("to-onnx")().run(model, ctx)
    cleanup = get_pass("onnx-cleanup")().run(onnx_result.model, ctx)
    return Converted(
        name=name, torch=model, onnx=onnx_result, cleanup=cleanup,
        fp16=get_pass("fp16")().run(cleanup.model, ctx),
        openvino=get_pass("to-openvino")().run(onnx_result.model, ctx),
        tflite=get_pass("to-tflite")().run(model, ctx),
    )


def digits_x(name: str) -> tuple[np.ndarray, np.ndarray]:
    return digits_arrays("test", image=(name == "cnn"))


def torch_outputs(model: TorchModel, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


def measure(model, reference, batch_size: int = 50):
    evaluator = Evaluator("sklearn:digits", reference=reference, like=model, settings=MeasureSettings(batch_size=batch_size, threads=2))
    return evaluator.measure(model, latency=False)


def test_trained_torch_models_are_accurate(converted):
    x, y = digits_x(converted.name)
    assert (torch_outputs(converted.torch, x).argmax(1) == y).mean() >= 0.95


# ---- to-onnx ----


def test_to_onnx_matches_torch(converted):
    result = converted.onnx
    assert isinstance(result.model, OnnxModel) and result.model.path.exists()
    assert result.stats["max_abs_diff_vs_torch"] < 1e-4
    assert result.stats["dynamic_shapes"] is True and result.stats["exporter"] == "dynamo"
    assert result.model.task == "classification" and result.model.output_names == ["logits"]
    meta = {p.key: p.value for p in result.model.proto.metadata_props}
    assert meta["slimkit.task"] == "classification"
    m = measure(result.model, converted.torch)
    assert m.fidelity["max_abs_err"] < 1e-4 and m.fidelity["top1_agreement"] == 1.0
    assert m.metrics["accuracy"] >= 0.95 and m.runtime == "onnxruntime"


def test_to_onnx_dynamic_batch_in_onnxruntime(converted):
    spec = converted.onnx.model.input_specs[0]
    assert not isinstance(spec.shape[0], int) and all(isinstance(d, int) for d in spec.shape[1:])
    session = ort.InferenceSession(str(converted.onnx.model.path), providers=["CPUExecutionProvider"])
    x, _ = digits_x(converted.name)
    for batch in (5, 1):
        got = session.run(None, {spec.name: x[:batch]})[0]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, torch_outputs(converted.torch, x[:batch]), atol=1e-4)


def test_to_onnx_on_onnx_is_skipped(converted, tmp_path):
    result = get_pass("to-onnx")().run(converted.onnx.model, Context(workdir=tmp_path))
    assert result.model is converted.onnx.model and result.stats == {}
    assert result.outcome.is_skipped and result.outcome.reason == "already ONNX"


def test_to_onnx_legacy_exporter(digits_mlp, tmp_path):
    result = get_pass("to-onnx")({"exporter": "legacy", "opset": 17}).run(load(digits_mlp), Context(workdir=tmp_path))
    assert result.stats["exporter"] == "legacy" and result.stats["opset"] == 17
    assert result.stats["max_abs_diff_vs_torch"] < 1e-4
    x, _ = digits_arrays("test")
    np.testing.assert_allclose(make_runner(result.model, 1).run({"x": x[:7]})[0],
                               digits_mlp(torch.from_numpy(x[:7])).detach().numpy(), atol=1e-4)


# ---- onnx-cleanup ----


def test_cleanup_output_still_runs(converted):
    result = converted.cleanup
    assert not result.outcome.is_skipped
    assert result.stats["nodes_after"] <= result.stats["nodes_before"] == len(converted.onnx.model.proto.graph.node)
    assert result.model.path.exists() and result.model.path != converted.onnx.model.path
    m = measure(result.model, converted.onnx.model)
    assert m.fidelity["max_abs_err"] < 1e-4 and m.metrics["accuracy"] >= 0.95
    assert result.model.task == "classification"


# ---- fp16 ----


def test_fp16_halves_size_keeps_fp32_io_and_accuracy(converted):
    fp32, fp16 = converted.cleanup.model, converted.fp16.model
    assert fp16.size_bytes() < 0.6 * fp32.size_bytes()
    graph = fp16.proto.graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    dtypes = {t.data_type for t in graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes and onnx.TensorProto.FLOAT not in dtypes  # (int64 shapes may stay)
    assert converted.fp16.stats["keep_io_types"] is True
    fp32_m = measure(fp32, converted.torch)
    fp16_m = measure(fp16, converted.torch)
    assert fp16_m.metrics["accuracy"] >= 0.95
    assert abs(fp16_m.metrics["accuracy"] - fp32_m.metrics["accuracy"]) <= 0.01
    assert 0 < fp16_m.fidelity["max_abs_err"] < 0.05  # fp16 rounding: present, but small
    assert fp16_m.fidelity["cosine_min"] > 0.999


def test_fp16_output_dtype_at_runtime(converted):
    x, _ = digits_x(converted.name)
    out = make_runner(converted.fp16.model, 1).run({converted.fp16.model.input_specs[0].name: x[:3]})[0]
    assert out.dtype == np.float32 and out.shape == (3, 10)


# ---- to-openvino ----


def test_openvino_runs_and_matches_onnx(converted):
    result = converted.openvino
    assert isinstance(result.model, OpenVinoModel) and result.model.kind == ModelKind.OPENVINO
    xml, weights = result.model.files()
    assert xml.suffix == ".xml" and weights.suffix == ".bin" and xml.exists() and weights.exists()
    assert result.stats["compress_to_fp16"] is False
    m = measure(result.model, converted.onnx.model)
    assert m.runtime.startswith("openvino ") and m.batch_size == 50  # dynamic batch carried into the IR
    assert m.fidelity["max_abs_err"] < 1e-4 and m.metrics["accuracy"] >= 0.95
    assert m.size_bytes == xml.stat().st_size + weights.stat().st_size


def test_openvino_fp16_compression_shrinks_weights(converted, tmp_path):
    result = get_pass("to-openvino")({"compress_to_fp16": True}).run(converted.onnx.model, Context(workdir=tmp_path))
    small = result.model.files()[1].stat().st_size
    assert small < 0.6 * converted.openvino.model.files()[1].stat().st_size
    m = measure(result.model, converted.onnx.model)
    assert m.metrics["accuracy"] >= 0.95 and m.fidelity["cosine_min"] > 0.999


# ---- to-tflite ----


def test_tflite_runs_and_matches_torch(converted):
    result = converted.tflite
    assert isinstance(result.model, TfliteModel) and result.model.path.suffix == ".tflite"
    assert result.model.input_names == converted.torch.input_names
    spec_name = converted.torch.input_names[0]
    assert result.stats["input_shapes"] == {spec_name: list(converted.torch.example_inputs[spec_name].shape)}
    m = measure(result.model, converted.torch, batch_size=1)
    assert m.runtime == "litert" and m.batch_size == 1 and m.data["samples"] == 450
    assert m.fidelity["max_abs_err"] < 1e-4 and m.metrics["accuracy"] >= 0.95
    x, _ = digits_x(converted.name)
    got = make_runner(result.model, 1).run({spec_name: x[:1]})[0]
    np.testing.assert_allclose(got, torch_outputs(converted.torch, x[:1]), atol=1e-4)


def test_tflite_other_batch_sizes(converted):
    """The flatbuffer is converted at batch 1: the MLP resizes to batch 16; the CNN's baked Reshape cannot,
    and that is one clear error, not a LiteRT traceback."""
    x, _ = digits_x(converted.name)
    runner = make_runner(converted.tflite.model, 1)
    name = converted.torch.input_names[0]
    if converted.name == "mlp":
        np.testing.assert_allclose(runner.run({name: x[:16]})[0], torch_outputs(converted.torch, x[:16]), atol=1e-4)
        m = measure(converted.tflite.model, converted.torch, batch_size=16)
        assert m.batch_size == 16 and m.fidelity["max_abs_err"] < 1e-4
    else:
        with pytest.raises(SlimkitError, match="LiteRT cannot resize this TFLite model to image=16x1x8x8") as info:
            runner.run({name: x[:16]})
        assert "fixed shapes image=1x1x8x8" in str(info.value)


def test_tflite_refuses_onnx_input(converted):
    from slimkit.pipeline import parse_recipe, plan

    with pytest.raises(SlimkitError, match="needs a torch model"):
        plan(parse_recipe({"passes": ["to-tflite"]}), converted.onnx.model.kind)


# ---- passes never touch their input ----


def test_passes_do_not_mutate_their_input(converted, file_hash):
    onnx_model = converted.onnx.model
    before = file_hash(onnx_model.path)
    nodes = len(onnx_model.proto.graph.node)
    ctx = Context(workdir=onnx_model.path.parent.parent / "again")
    get_pass("fp16")().run(onnx_model, ctx)
    get_pass("onnx-cleanup")().run(onnx_model, ctx)
    assert file_hash(onnx_model.path) == before and len(onnx_model.proto.graph.node) == nodes
    assert onnx.TensorProto.FLOAT16 not in {t.data_type for t in onnx_model.proto.graph.initializer}


def test_fp16_tflite_halves_the_file_and_keeps_accuracy(converted, tmp_path):
    from slimkit.api import optimize
    from slimkit.pipeline import load_recipe

    result = optimize(converted.torch, "fp16", to="tflite", data="sklearn:digits", measure=True)
    # fp16 becomes fp16 weights in the flatbuffer: the built-in tflite-fp16 recipe's steps, under the asked name
    assert result.recipe.name == "fp16+tflite"
    assert result.recipe.steps == load_recipe("tflite-fp16").steps
    model = result.model
    assert isinstance(model, TfliteModel)
    stats = result.steps[-1]["stats"]
    assert stats["precision"] == "fp16"
    assert model.size_bytes() < 0.6 * stats["fp32_bytes"]
    original, plain, fp16 = result.measurements  # fp16 TFLite is judged against the plain fp32 TFLite
    assert plain.label == "plain tflite" and fp16.baseline == "plain tflite"
    assert fp16.runtime == "litert"
    assert fp16.fidelity["cosine_min"] > 0.999
    assert fp16.metrics["accuracy"] >= original.metrics["accuracy"] - 0.01


def test_optimize_to_retargets_or_refuses(converted):
    from slimkit.pipeline import load_recipe, retarget

    # int8 on OpenVINO is NNCF's job: ONNX Runtime's fusion and quantizer give way to to-openvino + ov-weights
    assert [n for n, _ in retarget(load_recipe("int8-dynamic"), "openvino").steps] == [
        "to-onnx", "onnx-cleanup", "to-openvino", "ov-weights"]
    assert [n for n, _ in retarget(load_recipe("cluster-16"), "openvino").steps][-1] == "to-openvino"
    assert [n for n, _ in retarget(load_recipe("prune-channels-30"), "tflite").steps] == ["prune-structured",
                                                                                           "to-tflite"]
    # int8 on TFLite is ai-edge-quantizer's job on the fp32 flatbuffer; ONNX Runtime's fusion has no place there
    assert [n for n, _ in retarget(load_recipe("int8-dynamic"), "tflite").steps] == ["to-tflite", "tflite-dynamic"]
    with pytest.raises(SlimkitError, match="cannot end in TFLite: sparse-storage work on ONNX"):
        retarget(load_recipe("prune-50"), "tflite")
