"""OpenVINO precision chosen from the CPU and stored with the artifact; int8 / int8-auto / weight compression with
NNCF; `--to openvino` routing the quantization recipes there."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slimkit import optimize
from slimkit.cli import main
from slimkit.errors import SlimkitError
from slimkit.formats import load, make_runner
from slimkit.hardware import native_openvino_precisions, resolve_openvino_precision
from slimkit.models.base import ModelKind
from slimkit.pipeline import load_recipe, plan, retarget
from slimkit.settings import MeasureSettings

pytest.importorskip("nncf")

DIGITS = {"data": "sklearn:digits:val", "eval_data": "sklearn:digits:test"}


@pytest.fixture
def mlp(digits_mlp):
    return load(digits_mlp, task="classification")


def _rt_precision(path) -> str:
    from slimkit.hardware import import_openvino

    model = import_openvino().Core().read_model(str(path))
    return str(model.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str))


def test_openvino_precision_is_chosen_from_the_cpu_stored_and_applied(mlp, tmp_path):
    result = optimize(mlp, "openvino", measure=False)
    expected, why = resolve_openvino_precision("auto")
    assert expected == ("bf16" if "bf16" in native_openvino_precisions() else "f32")
    stats = result.steps[-1]["stats"]
    assert stats["precision"] == expected and stats["precision_reason"] == why
    result.save(tmp_path / "ov")
    assert _rt_precision(tmp_path / "ov" / "model.xml") == expected
    assert json.loads((tmp_path / "ov" / "slimkit.json").read_text())["inference_precision"] == expected
    runner = make_runner(load(tmp_path / "ov" / "model.xml"), 1)  # reloaded: runs at the stored precision
    assert runner.precision == expected and runner.runtime == f"openvino {expected}"


def test_a_precision_the_cpu_lacks_falls_back_to_f32_with_the_reason(mlp):
    result = optimize(mlp, "openvino", precision="bf16", measure=False)
    stats = result.steps[-1]["stats"]
    if "bf16" in native_openvino_precisions():
        assert stats["precision"] == "bf16"
    else:
        assert stats["precision"] == "f32" and "no native bf16" in stats["precision_reason"]
    exact = optimize(mlp, "openvino", precision="f32", measure=False)
    assert exact.steps[-1]["stats"]["precision"] == "f32"
    assert make_runner(exact.model, 1).precision == "f32"


def test_precision_without_an_openvino_artifact_is_refused(mlp):
    with pytest.raises(SlimkitError, match="makes no OpenVINO artifact"):
        optimize(mlp, "fp16", precision="f32", measure=False)


def test_int8_static_to_openvino_is_nncf_int8_within_half_a_point(digits_cnn):
    cnn = load(digits_cnn, task="classification")
    result = optimize(cnn, "int8-static", to="openvino", settings=MeasureSettings(batch_size=32), **DIGITS)
    assert [s["pass"] for s in result.steps][-2:] == ["to-openvino", "ov-int8"]
    stats = result.steps[-1]["stats"]
    assert stats["fake_quantize_nodes"] > 0 and stats["calibration_samples"] >= 16
    original, plain, int8 = result.report["measurements"]
    assert plain["label"] == "plain openvino" and int8["baseline"] == "plain openvino"
    assert int8["size_bytes"] < 0.35 * plain["size_bytes"]
    assert int8["metrics"]["accuracy"] >= plain["metrics"]["accuracy"] - 0.005
    assert int8["runtime"].startswith("openvino")


def test_int8_auto_to_openvino_meets_its_cosine_target(mlp):
    result = optimize(mlp, "int8-auto", to="openvino", min_cosine=0.999, **DIGITS)
    step = result.steps[-1]
    assert step["pass"] == "ov-int8-auto" and step["stats"]["metric"] == "cosine"
    assert step["outcome"]["status"] == "met" and step["stats"]["int8_score"] >= 0.999 - 1e-9
    assert result.report["measurements"][-1]["fidelity"]["cosine_mean"] > 0.995


@pytest.mark.parametrize("recipe, bits", [("int8-dynamic", 8), ("int4-weight", 4)])
def test_weight_recipes_to_openvino_compress_weights(mlp, recipe, bits):
    result = optimize(mlp, recipe, to="openvino", **DIGITS)
    step = result.steps[-1]
    assert step["pass"] == "ov-weights" and step["stats"]["mode"].startswith(f"int{bits}")
    assert step["stats"]["weights_bytes_after"] < 0.5 * step["stats"]["weights_bytes_before"]
    assert "transformer-fusion" not in [s["pass"] for s in result.steps]  # ONNX Runtime-only ops stay out
    assert result.report["measurements"][-1]["fidelity"]["cosine_mean"] > (0.999 if bits == 8 else 0.98)


def test_quantizing_an_openvino_int8_model_again_is_refused(mlp, tmp_path):
    from slimkit.pipeline import Recipe

    optimize(mlp, "openvino-int8-weight", measure=False).save(tmp_path / "w8")
    with pytest.raises(SlimkitError, match="already quantized"):
        optimize(tmp_path / "w8" / "model.xml", Recipe("again", "", [("ov-weights", {"bits": 8})]), measure=False)


def test_openvino_recipes_are_left_as_they_are_by_to_openvino():
    for name in ("openvino", "openvino-int8", "openvino-int4-weight"):
        assert retarget(load_recipe(name), "openvino").steps == load_recipe(name).steps


def test_recipes_that_cannot_reach_openvino_say_why_before_any_work(capsys, tmp_path):
    with pytest.raises(SlimkitError, match="to-slim"):
        retarget(load_recipe("deep-compression"), "openvino")
    with pytest.raises(SlimkitError, match="group_size"):  # a bad config is refused when planning
        plan(load_recipe("openvino-int4-weight"), ModelKind.TORCH, {"ov-weights": {"group_size": 48}})


def test_cli_int8_static_to_openvino(capsys, tmp_path, digits_cache):
    from slimkit.bundled_data import digits_arrays

    x, y = digits_arrays("val")
    np.savez(tmp_path / "val.npz", x=x, labels=y)
    (tmp_path / "f.py").write_text("from slimkit.demo_models import DigitsMLP\n\ndef make():\n    return DigitsMLP()\n")
    from safetensors.torch import save_file

    from slimkit.demo_models import trained_digits_model

    module = trained_digits_model("mlp", digits_cache)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(tmp_path))
        code = main(["optimize", "f:make", "--weights", str(tmp_path / "w.safetensors"), "--recipe", "int8-static",
                     "--to", "openvino", "--data", str(tmp_path / "val.npz"), "-o", str(tmp_path / "out"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)["report"]  # NNCF's progress bars stay out of stdout: one JSON document
    assert report["passes"][-1]["pass"] == "ov-int8" and (tmp_path / "out" / "model.xml").exists()


def test_too_few_calibration_samples_are_refused(mlp):
    from slimkit.bundled_data import digits_arrays

    x, y = digits_arrays("val")
    with pytest.raises(SlimkitError, match="too few calibration samples: 8"):
        optimize(mlp, "openvino-int8", data={"x": x[:8], "labels": y[:8]}, measure=False)
