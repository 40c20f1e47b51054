"""ONNX quantization passes on small real models (digits MLP/CNN) and the real MiniLM."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from slimkit.bundled_data import digits_arrays
from slimkit.cli import main
from slimkit.data_sources import text_data
from slimkit.demo_models import sentences
from slimkit.errors import SlimkitError
from slimkit.evaluate.measure import Evaluator
from slimkit.formats import load
from slimkit.passes.base import Context, get_pass
from slimkit.passes.fusion import padded_inputs
from slimkit.passes.quantize import resolve_reduce_range
from slimkit.pipeline import load_recipe, run_pipeline
from slimkit.settings import MeasureSettings


def op_types(model) -> set[str]:
    return {n.op_type for n in model.proto.graph.node}


@pytest.fixture(scope="module")
def digits_onnx(digits_cache, tmp_path_factory):
    """Digits MLP and CNN exported to ONNX once, plus labelled .npz test data for each."""
    from slimkit.demo_models import trained_digits_model

    root = tmp_path_factory.mktemp("quant")
    out = {}
    for name, image, key in (("mlp", False, "x"), ("cnn", True, "image")):
        torch_model = load(trained_digits_model(name, digits_cache), task="classification")
        onnx_model = run_pipeline(torch_model, load_recipe("onnx"), Context(workdir=root / name)).model
        x, y = digits_arrays("test", image=image)
        np.savez(root / f"{name}.npz", **{key: x, "labels": y})
        out[name] = (onnx_model, root / f"{name}.npz")
    return out


def measure_pair(original, quantized, data, batch_size=32):
    ev = Evaluator(data, reference=original, like=original, settings=MeasureSettings(batch_size=batch_size), latency_rounds=3,
                   round_runs=3, round_seconds=0.0)
    return ev.measure(original), ev.measure(quantized)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_int8_static_keeps_accuracy(digits_onnx, name, tmp_path):
    model, data = digits_onnx[name]
    result = run_pipeline(model, load_recipe("int8-static"), Context(data=str(data), workdir=tmp_path))
    q = result.model
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(q)
    original, quantized = measure_pair(model, q, str(data))
    assert abs(original.metrics["accuracy"] - quantized.metrics["accuracy"]) <= 0.005
    assert quantized.size_bytes < 0.35 * original.size_bytes
    stats = result.steps[-1]["stats"]
    assert stats["calibration_samples"] >= 256 and stats["preprocessed"] is True
    # per-channel only where it keeps ORT's integer fusions: the CNN's two Conv weights
    assert stats["per_channel_tensors"] == (2 if name == "cnn" else 0)


def test_int8_static_calibration_methods_differ(digits_onnx, tmp_path):
    model, data = digits_onnx["mlp"]
    scales = {}
    for method in ("minmax", "percentile", "entropy"):
        q = get_pass("int8-static")({"calibration": method, "samples": 128}).run(
            model, Context(data=str(data), workdir=tmp_path / method)).model
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.proto.graph.initializer}
        scales[method] = {k: float(v.reshape(-1)[0]) for k, v in inits.items() if k.endswith("_scale") and v.size == 1}
    activations = [k for k in scales["minmax"] if "weight" not in k]
    assert len(activations) >= 4
    # percentile clips outliers: every activation range is at most minmax's, and some strictly smaller
    assert all(scales["percentile"][k] <= scales["minmax"][k] * (1 + 1e-6) for k in activations)
    assert any(scales["percentile"][k] < scales["minmax"][k] * 0.9999 for k in activations)
    # entropy (KL) never widens a range beyond what was observed
    assert all(scales["entropy"][k] <= scales["minmax"][k] * (1 + 1e-6) for k in activations)


def test_int8_dynamic_rewrites_gemm_and_explains_reduce_range(digits_onnx, tmp_path):
    model, data = digits_onnx["mlp"]
    result = get_pass("int8-dynamic")().run(model, Context(workdir=tmp_path))
    assert result.stats["gemm_rewritten_as_matmul"] == 3
    assert "MatMulInteger" in op_types(result.model) or "DynamicQuantizeMatMul" in op_types(result.model)
    expected, _ = resolve_reduce_range("auto")
    assert result.stats["reduce_range"] is expected and "VNNI" in result.stats["reduce_range_reason"]
    original, quantized = measure_pair(model, result.model, str(data))
    assert quantized.metrics["accuracy"] >= original.metrics["accuracy"] - 0.01
    assert quantized.size_bytes < 0.35 * original.size_bytes


def test_weight_only_int8_and_int4(digits_onnx, tmp_path):
    model, data = digits_onnx["mlp"]
    errors = {}
    for bits in (8, 4):
        result = get_pass("weight-only")({"bits": bits, "block_size": 32, "embeddings": False}).run(
            model, Context(workdir=tmp_path / str(bits)))
        assert result.stats["quantized_nodes"]["MatMulNBits"] == 3
        original, quantized = measure_pair(model, result.model, str(data))
        assert quantized.size_bytes < (0.35 if bits == 8 else 0.25) * original.size_bytes
        errors[bits] = quantized.fidelity["max_abs_err"]
        assert quantized.metrics["accuracy"] >= original.metrics["accuracy"] - (0.01 if bits == 8 else 0.03)
    assert errors[4] > errors[8]  # fewer bits, larger error


def test_weight_only_rejects_bad_block_size(digits_onnx, tmp_path):
    model, _ = digits_onnx["mlp"]
    with pytest.raises(SlimkitError, match="power of two"):
        get_pass("weight-only")({"block_size": 24}).run(model, Context(workdir=tmp_path))


def test_already_quantized_model_is_refused(digits_onnx, tmp_path):
    model, _ = digits_onnx["mlp"]
    once = get_pass("int8-dynamic")().run(model, Context(workdir=tmp_path / "a")).model
    for name in ("int8-dynamic", "int8-static", "weight-only", "int8-auto"):
        with pytest.raises(SlimkitError, match="already quantized"):
            get_pass(name)().run(once, Context(data="sklearn:digits", workdir=tmp_path / name))


def test_static_needs_enough_calibration_samples(digits_onnx, tmp_path):
    model, _ = digits_onnx["mlp"]
    np.savez(tmp_path / "few.npz", x=digits_arrays("test")[0][:5])
    with pytest.raises(SlimkitError, match="at least 16"):
        get_pass("int8-static")().run(model, Context(data=str(tmp_path / "few.npz"), workdir=tmp_path))
    with pytest.raises(SlimkitError, match="needs calibration data"):
        get_pass("int8-static")().run(model, Context(workdir=tmp_path))


def test_int8_auto_keeps_sensitive_layers_float_for_a_strict_target(digits_onnx, tmp_path):
    model, data = digits_onnx["mlp"]
    loose = get_pass("int8-auto")({"min_cosine": 0.99}).run(model, Context(data=str(data), workdir=tmp_path / "l"))
    assert loose.outcome.status == "met" and loose.stats["sensitivity"] == []  # whole model was enough
    assert loose.outcome.metric == "cosine_mean" and loose.outcome.measured >= loose.outcome.target == 0.99
    whole_cos = loose.stats["tried"][0]["cosine_mean"]
    strict_target = whole_cos + (1 - whole_cos) / 2  # halfway between whole-model int8 and float
    strict = get_pass("int8-auto")({"min_cosine": strict_target}).run(
        model, Context(data=str(data), workdir=tmp_path / "s"))
    table = strict.stats["sensitivity"]
    assert [r["op_type"] for r in table] == ["MatMul"] * 3
    assert table == sorted(table, key=lambda r: -r["loss"])
    assert strict.outcome.status == "met" and strict.stats["chosen"]["kept_float"] >= 1
    assert strict.stats["chosen"]["cosine_mean"] >= strict_target


def test_int8_auto_unreachable_target_saves_best_and_exits_3(digits_onnx, tmp_path, capsys):
    model, data = digits_onnx["mlp"]
    out = tmp_path / "auto"
    code = main(["optimize", str(model.path), "--recipe", "int8-auto", "--data", str(data), "--max-drop", "-0.5",
                 "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "target not met (int8-auto: accuracy drop" in err.strip().splitlines()[-1]
    report = json.loads((out / "report.json").read_text())
    outcome = report["passes"][-1]["outcome"]
    assert outcome["status"] == "missed" and "accuracy drop" in outcome["reason"]
    assert outcome["metric"] == "accuracy_drop" and outcome["target"] == -0.5 and outcome["measured"] > -0.5
    assert (out / "model.onnx").exists()


def test_min_cosine_on_a_recipe_without_target_is_an_error(digits_onnx, tmp_path, capsys):
    model, _ = digits_onnx["mlp"]
    code = main(["optimize", str(model.path), "--recipe", "fp16", "--min-cosine", "0.9", "-o", str(tmp_path / "o")])
    assert code == 2 and "can steer" in capsys.readouterr().err


# ---- MiniLM: fusion keeps the padding mask; int8 keeps the embeddings ----


def test_fusion_is_faithful_on_padded_minilm(minilm_onnx, tmp_path):
    model = minilm_onnx.model
    ctx = Context(workdir=tmp_path, settings=MeasureSettings(seq_len=32))
    assert padded_inputs(model, ctx)[0]["attention_mask"].min() == 0
    result = get_pass("transformer-fusion")({"max_latency_ratio": 10.0}).run(model, ctx)
    assert result.stats["kept"] is True, result.stats
    assert result.stats["fusions"]["attention"] == 6 and result.stats["fusions"]["raw_mask_attention"] == 6
    assert result.stats["cosine_min_padded"] >= 0.9999
    assert "Attention" in op_types(result.model)


def test_int8_dynamic_minilm_real_sentences(minilm_onnx, tmp_path):
    model = minilm_onnx.model
    ctx = Context(workdir=tmp_path, settings=MeasureSettings(seq_len=64))
    fused = get_pass("transformer-fusion")({"max_latency_ratio": 10.0}).run(model, ctx).model
    quantized = get_pass("int8-dynamic")().run(fused, ctx).model
    assert "QAttention" in op_types(quantized)  # the mask survived: QAttention gets the raw mask
    data = text_data(sentences("eval", 24), model, batch_size=8, seq_len=64)
    ev = Evaluator(data, reference=model, like=model, latency_rounds=3, round_runs=3, round_seconds=0.0)
    m = ev.measure(quantized)
    assert m.fidelity["cosine_mean"] >= 0.985 and m.fidelity["cosine_min"] >= 0.97
    assert m.size_bytes <= 0.27 * model.size_bytes()
