"""TFLite quantization through ai-edge-quantizer on the trained digits CNN, converted at batch 32 and run in LiteRT.

Calibration uses the digits train split; accuracy is read on the test split, which no pass saw.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from slimkit.bundled_data import digits_arrays
from slimkit.cli import main as cli_main
from slimkit.demo_models import trained_digits_model
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.formats.tflite import TfliteModel, TfliteRunner
from slimkit.formats.tflite_graph import delegation, precision_by_op
from slimkit.passes.base import Context, get_pass
from slimkit.pipeline import load_recipe, retarget
from slimkit.settings import MeasureSettings

pytest.importorskip("ai_edge_quantizer")
BATCH = 32


@pytest.fixture(scope="module")
def fp32(digits_cache, tmp_path_factory) -> tuple[TfliteModel, Context]:
    ctx = Context(workdir=tmp_path_factory.mktemp("tflite-quant"), data="sklearn:digits:train",
                  settings=MeasureSettings(batch_size=BATCH))
    model = load(trained_digits_model("cnn", digits_cache))
    return get_pass("to-tflite")().run(model, ctx).model, ctx


def _accuracy(model: TfliteModel) -> float:
    x, y = digits_arrays("test", image=True)
    runner = TfliteRunner(model, 2)
    name = runner.input_specs[0].name
    pred = np.concatenate([runner.run({name: x[i:i + BATCH]})[0].argmax(1) for i in range(0, len(x), BATCH)])
    return float((pred == y).mean())


def test_full_integer_int8_keeps_accuracy_quarters_the_file_and_stays_on_xnnpack(fp32):
    model, ctx = fp32
    result = get_pass("tflite-static")().run(model, ctx)
    quantized = result.model
    # Full-integer: int8 in and out of the graph; the runner quantizes feeds and dequantizes outputs.
    runner = TfliteRunner(quantized, 1)
    assert [np.dtype(d["dtype"]).name for d in runner.interpreter.get_input_details()] == ["int8"]
    assert runner.input_specs[0].dtype == "float32"
    assert abs(_accuracy(quantized) - _accuracy(model)) <= 0.005
    assert quantized.path.stat().st_size <= 0.3 * model.path.stat().st_size
    assert result.stats["kept_float_ops"] == {} and result.stats["quantized_ops"]["CONV_2D"] == 1
    assert result.stats["calibration_samples"] >= BATCH
    executed = delegation(quantized.path)
    assert executed["fallback"] == 0 and executed["delegated"] == executed["ops"]


def test_int16_activations_fall_back_to_reference_kernels(fp32):
    model, ctx = fp32
    quantized = get_pass("tflite-static")({"activation_bits": 16}).run(model, ctx).model
    executed = delegation(quantized.path)
    # XNNPACK has no int16-activation kernels: every op runs on LiteRT's own, which the report names.
    assert executed["delegated"] == 0 and executed["fallback_by_type"]["CONV_2D"] == 1
    assert abs(_accuracy(quantized) - _accuracy(model)) <= 0.005


def test_op_types_kept_in_float_on_request_and_unknown_names_refused(fp32):
    model, ctx = fp32
    result = get_pass("tflite-static")({"keep_float": ["FULLY_CONNECTED"]}).run(model, ctx)
    assert result.stats["kept_float_ops"]["FULLY_CONNECTED"] == 2 and "FULLY_CONNECTED" not in result.stats[
        "quantized_ops"]
    assert result.stats["quantized_ops"]["CONV_2D"] == 1
    with pytest.raises(SlimkitError, match="keep_float") as info:
        get_pass("tflite-static")({"keep_float": ["LSTM"]}).run(model, ctx)
    assert "CONV_2D" in info.value.hint


def test_static_without_data_is_refused_in_one_line(fp32, tmp_path):
    model, _ = fp32
    with pytest.raises(SlimkitError, match="calibration data") as info:
        get_pass("tflite-static")().run(model, Context(workdir=tmp_path, settings=MeasureSettings(batch_size=BATCH)))
    assert "--data" in info.value.hint


def test_block_wise_int4_names_the_ops_it_left_in_float(fp32):
    model, ctx = fp32
    result = get_pass("tflite-dynamic")({"bits": 4, "block_size": 32}).run(model, ctx)
    # LiteRT's block-wise int4 kernels exist for FULLY_CONNECTED only: the convolutions stay float, named.
    assert result.stats["kept_float_ops"] == {"DEPTHWISE_CONV_2D": 1, "CONV_2D": 1}
    assert result.stats["quantized_ops"] == {"FULLY_CONNECTED": 2}
    assert precision_by_op(result.model.path)["FULLY_CONNECTED"] == {"quantized": 2, "float": 0}


def test_dynamic_range_reports_its_fallback(fp32):
    model, ctx = fp32
    result = get_pass("tflite-dynamic")().run(model, ctx)
    executed = delegation(result.model.path)
    assert executed["delegated"] + executed["fallback"] == executed["ops"]
    assert executed["fallback_by_type"] == {"DEPTHWISE_CONV_2D": 1}  # dynamic-range depthwise: not in XNNPACK
    assert abs(_accuracy(result.model) - _accuracy(model)) <= 0.005


def test_inspect_shows_which_ops_are_quantized_and_which_xnnpack_runs(fp32, digits_cache):
    from slimkit.inspect_model import inspect_model

    model, ctx = fp32
    module = trained_digits_model("cnn", digits_cache)
    quantized = get_pass("tflite-dynamic")().run(model, ctx).model
    info = inspect_model(load(quantized.path))
    assert info["ops"]["DEPTHWISE_CONV_2D"] == 1 and info["op_precision"]["DEPTHWISE_CONV_2D"]["quantized"] == 1
    assert "DEPTHWISE_CONV_2D" not in info["delegated_by_type"] and info["delegated_by_type"]["CONV_2D"] == 1
    # the weights: the CNN's parameters with its two BatchNorms folded into the convolutions (int8 matrices,
    # float biases); shape constants left out
    folded = sum(p.numel() for name, p in module.named_parameters() if not name.startswith(("features.1.",
                                                                                             "features.4.")))
    assert info["params"] == folded
    assert info["largest"][0]["dtype"] == "int8" and info["largest"][0]["params"] == 128 * 1024


def test_a_quantized_model_is_not_quantized_again(fp32):
    model, ctx = fp32
    once = get_pass("tflite-dynamic")().run(model, ctx).model
    with pytest.raises(SlimkitError, match="already quantized"):
        get_pass("tflite-static")().run(once, ctx)


def test_int8_auto_keeps_the_most_harmful_ops_float_until_the_target_holds(fp32):
    model, ctx = fp32
    # A target whole-model int8 misses (its mean cosine is about 0.9999): ops must go back to float.
    result = get_pass("tflite-int8-auto")({"min_cosine": 0.99999, "also_try": []}).run(model, ctx)
    stats = result.stats
    assert stats["tried"][0]["kept_float"] == 0 and not stats["tried"][0]["meets"]
    # Each op quantized alone ranks it; the worst loses the most cosine.
    losses = [row["loss"] for row in stats["sensitivity"]]
    assert len(losses) == 8 and losses == sorted(losses, reverse=True) and losses[0] > 0
    chosen = stats["chosen"]
    assert chosen["meets"] and chosen["cosine_mean"] >= 0.99999 and not result.outcome.missed
    assert 0 < chosen["kept_float"] < sum(stats["quantized_ops"].values()) + chosen["kept_float"]
    assert len(stats["kept_float_by_choice"]) == chosen["kept_float"]
    assert sum(stats["kept_float_ops"].values()) >= chosen["kept_float"]


def test_int8_auto_keeps_the_faster_of_the_variants_that_meet_the_target(fp32):
    model, ctx = fp32
    result = get_pass("tflite-int8-auto")({"max_drop": 0.005}).run(model, ctx)
    tried = result.stats["tried"]
    assert [t["variant"] for t in tried] == ["static", "dynamic", "weight_only"] and all(t["meets"] for t in tried)
    # All met the target, so all were timed against the float model here, and the fastest was kept.
    assert all(t["p50_ms"] > 0 and t["latency_ratio"] > 0 for t in tried)
    chosen = result.stats["chosen"]
    assert chosen["p50_ms"] == min(t["p50_ms"] for t in tried) and not result.outcome.missed
    assert chosen["kept_float"] == 0 and result.stats["kept_float_ops"] == {}
    assert result.stats["mode"] == chosen["variant"]  # what was written is the variant that was chosen
    executed = delegation(result.model.path)
    assert executed["ops"] == executed["delegated"] + executed["fallback"]


def test_a_partial_last_batch_is_padded_not_refused(fp32):
    model, _ = fp32
    runner = TfliteRunner(model, 1)
    name = runner.input_specs[0].name
    x, _ = digits_arrays("test", image=True)
    full = runner.run({name: x[:BATCH]})[0]
    part = runner.run({name: x[:5]})[0]
    assert part.shape == (5, 10) and np.allclose(part, full[:5], atol=1e-5)


def test_onnx_quantization_recipes_land_on_their_tflite_twins():
    steps = {name: [n for n, _ in retarget(load_recipe(name), "tflite").steps]
             for name in ("int8-static", "int8-dynamic", "int8-auto", "int4-weight", "int8-weight")}
    assert steps == {"int8-static": ["to-tflite", "tflite-static"], "int8-dynamic": ["to-tflite", "tflite-dynamic"],
                     "int8-auto": ["to-tflite", "tflite-int8-auto"], "int4-weight": ["to-tflite", "tflite-dynamic"],
                     "int8-weight": ["to-tflite", "tflite-weight-only"]}
    int4 = dict(retarget(load_recipe("int4-weight"), "tflite").steps)["tflite-dynamic"]
    assert int4 == {"bits": 4, "block_size": 32}


def test_bad_block_size_is_refused_before_any_work():
    with pytest.raises(SlimkitError, match="block_size"):
        get_pass("tflite-dynamic")({"bits": 8, "block_size": 32})


def test_cli_int8_tflite_report_flags_and_names_the_kernels(digits_cache, tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "cnn.safetensors"
    save_file(dict(trained_digits_model("cnn", digits_cache).state_dict()), str(weights))
    out = tmp_path / "out"
    code = cli_main(["optimize", "slimkit.demo_models:DigitsCNN", "--weights", str(weights), "--recipe",
                     "int8-dynamic", "--to", "tflite", "--data", "sklearn:digits:train", "--eval-data",
                     "sklearn:digits:test", "--batch-size", str(BATCH), "-o", str(out)])
    assert code == 0 and (out / "model.tflite").exists()
    report = json.loads((out / "report.json").read_text())
    _original, plain, dynamic = report["measurements"]
    assert plain["execution"]["fallback"] == 0
    assert dynamic["execution"]["fallback_by_type"] == {"DEPTHWISE_CONV_2D": 1}
    flags = {f["flag"] for f in report["flags"] if f["model"] == dynamic["label"]}
    assert "reference-kernels" in flags
    # Whether it is also "smaller-not-faster" is this CPU's answer; the flag must agree with the measurement.
    ratio = dynamic["latency_ms"]["p50"] / plain["latency_ms"]["p50"]
    assert ("smaller-not-faster" in flags) == (ratio >= 0.95) or ratio < 0.95
