"""Recipes and the pipeline: loading and validating recipes, the chain check, inserted steps, step records,
and that the user's input files are never modified."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from slimkit.errors import SlimkitError
from slimkit.formats import load, make_runner
from slimkit.models.base import ModelKind, OnnxModel
from slimkit.passes.base import Context, available_passes
from slimkit.pipeline import builtin_recipes, load_recipe, parse_recipe, plan, run_pipeline

BUILTINS = {
    "onnx": ["to-onnx", "onnx-cleanup"],
    "fp16": ["to-onnx", "onnx-cleanup", "fp16"],
    "openvino": ["to-onnx", "onnx-cleanup", "to-openvino"],
    "tflite": ["to-tflite"],
    "int8-dynamic": ["to-onnx", "onnx-cleanup", "transformer-fusion", "int8-dynamic"],
    "int8-static": ["to-onnx", "onnx-cleanup", "int8-static"],
    "int8-auto": ["to-onnx", "onnx-cleanup", "transformer-fusion", "int8-auto"],
    "int4-weight": ["to-onnx", "onnx-cleanup", "weight-only"],
    "int8-weight": ["to-onnx", "onnx-cleanup", "weight-only"],
    "cluster-16": ["to-onnx", "onnx-cleanup", "cluster"],
    "cluster-256": ["to-onnx", "onnx-cleanup", "cluster"],
    "svd-energy-0.95": ["to-onnx", "onnx-cleanup", "factorize"],
    "svd-ratio-0.5": ["to-onnx", "onnx-cleanup", "factorize"],
    "nmf-ratio-0.5": ["to-onnx", "onnx-cleanup", "factorize"],
    "prune-50": ["prune", "to-onnx", "onnx-cleanup", "sparse-storage"],
    "prune-channels-30": ["prune-structured", "to-onnx", "onnx-cleanup"],
    "prune-heads-25": ["prune-structured", "to-onnx", "onnx-cleanup"],
    "deep-compression": ["prune", "cluster", "to-onnx", "onnx-cleanup", "to-slim"],
    "distill": ["distill", "to-onnx", "onnx-cleanup"],
    "tflite-fp16": ["to-tflite"],
    "tflite-int8": ["to-tflite", "tflite-static"],
    "openvino-int8": ["to-onnx", "onnx-cleanup", "to-openvino", "ov-int8"],
    "openvino-int8-auto": ["to-onnx", "onnx-cleanup", "to-openvino", "ov-int8-auto"],
    "openvino-int4-weight": ["to-onnx", "onnx-cleanup", "to-openvino", "ov-weights"],
    "openvino-int8-weight": ["to-onnx", "onnx-cleanup", "to-openvino", "ov-weights"],
}


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


def ctx_for(tmp_path, **kwargs) -> Context:
    return Context(workdir=tmp_path / "work", **kwargs)


# ---- recipes ----


def test_builtin_recipe_names():
    assert set(builtin_recipes()) == set(BUILTINS)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_load_builtin_recipe(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.description
    assert [step for step, _ in recipe.steps] == BUILTINS[name]
    assert recipe.source.endswith(f"{name}.yaml")
    assert [p["pass"] for p in recipe.as_dict()["passes"]] == BUILTINS[name]
    steps = plan(recipe, ModelKind.TORCH)  # every pass exists and its (default) config validates
    assert [s.pass_.name for s in steps] == BUILTINS[name]
    assert not any(s.inserted for s in steps)


def test_available_passes():
    assert set(available_passes()) >= {"to-onnx", "onnx-cleanup", "fp16", "to-openvino", "to-tflite"}


def test_unknown_recipe_lists_builtins():
    with pytest.raises(SlimkitError) as info:
        load_recipe("turbo")
    assert "unknown recipe 'turbo'" in str(info.value)
    assert "built-in recipes: " + ", ".join(sorted(BUILTINS)) in str(info.value)


def test_user_recipe_by_path(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text(
        "name: mine\n"
        "description: export then fp16, keeping Gemm in fp32\n"
        "passes:\n"
        "  - pass: to-onnx\n"
        "    opset: 18\n"
        "    exporter: dynamo\n"
        "  - onnx-cleanup\n"
        "  - pass: fp16\n"
        "    op_block_list: [Gemm]\n"
    )
    recipe = load_recipe(path)
    assert recipe.name == "mine" and recipe.source == str(path)
    assert recipe.steps == [("to-onnx", {"opset": 18, "exporter": "dynamo"}), ("onnx-cleanup", {}),
                            ("fp16", {"op_block_list": ["Gemm"]})]
    assert load_recipe(str(path)).steps == recipe.steps
    steps = plan(recipe, ModelKind.TORCH)
    assert steps[0].pass_.config.opset == 18 and steps[2].pass_.config.op_block_list == ["Gemm"]


def test_user_recipe_name_defaults_to_file_stem(tmp_path):
    (tmp_path / "quick.yaml").write_text("passes: [to-onnx]\n")
    assert load_recipe(tmp_path / "quick.yaml").name == "quick"


def test_recipe_file_errors(tmp_path):
    with pytest.raises(SlimkitError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("passes: [to-onnx\n  - : :\n")
    with pytest.raises(SlimkitError, match="is not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- to-onnx\n")
    with pytest.raises(SlimkitError, match="must be a mapping with a 'passes' list"):
        load_recipe(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("name: nothing\npasses: []\n")
    with pytest.raises(SlimkitError, match="has no passes"):
        load_recipe(tmp_path / "empty.yaml")
    (tmp_path / "nopass.yaml").write_text("passes:\n  - opset: 17\n")
    with pytest.raises(SlimkitError, match="step 1 has no 'pass' key"):
        load_recipe(tmp_path / "nopass.yaml")


def test_unknown_recipe_key(tmp_path):
    (tmp_path / "r.yaml").write_text("name: r\npasses: [to-onnx]\nsteps: [fp16]\n")
    with pytest.raises(SlimkitError) as info:
        load_recipe(tmp_path / "r.yaml")
    assert "unknown key 'steps'" in str(info.value)
    assert "accepted keys: description, name, passes" in str(info.value)


def test_unknown_pass_config_key():
    recipe = parse_recipe({"passes": [{"pass": "to-onnx", "opsett": 17}]})
    with pytest.raises(SlimkitError) as info:
        plan(recipe, ModelKind.TORCH)
    message = str(info.value)
    assert "pass 'to-onnx': unknown key 'opsett'" in message
    assert "accepted keys: exporter, opset, dynamic, tolerance" in message


def test_bad_pass_config_value_and_unknown_pass():
    with pytest.raises(SlimkitError, match="pass 'to-onnx': bad value for 'exporter'"):
        plan(parse_recipe({"passes": [{"pass": "to-onnx", "exporter": "magic"}]}), ModelKind.TORCH)
    with pytest.raises(SlimkitError, match="unknown pass 'prune-everything'.*available passes: .*fp16"):
        plan(parse_recipe({"passes": ["prune-everything"]}), ModelKind.TORCH)


def test_pass_config_error_raised_before_running(tmp_path, digits_mlp):
    recipe = parse_recipe({"passes": ["to-onnx", {"pass": "fp16", "keep_io": True}]})
    progress = Recorder()
    with pytest.raises(SlimkitError, match="pass 'fp16': unknown key 'keep_io'.*keep_io_types"):
        run_pipeline(load(digits_mlp), recipe, ctx_for(tmp_path, progress=progress))
    assert progress.messages == [] and not (tmp_path / "work").exists()


# ---- chain check and inserted steps ----


def test_chain_check_rejects_torch_pass_after_onnx_before_running(tmp_path, digits_mlp):
    recipe = parse_recipe({"name": "wrong-order", "passes": ["fp16", "to-tflite"]})
    progress = Recorder()
    with pytest.raises(SlimkitError) as info:
        run_pipeline(load(digits_mlp), recipe, ctx_for(tmp_path, progress=progress))
    assert "recipe wrong-order: pass 'to-tflite' needs a torch model but the output of 'fp16' is onnx" in str(info.value)
    assert "reorder the passes" in str(info.value)
    assert progress.messages == [] and not (tmp_path / "work").exists()  # nothing ran, nothing written


def test_chain_check_rejects_onnx_pass_after_openvino():
    recipe = parse_recipe({"name": "r", "passes": ["to-openvino", "fp16"]})
    with pytest.raises(SlimkitError, match="pass 'fp16' needs a onnx model but the output of 'to-openvino' is openvino"):
        plan(recipe, ModelKind.ONNX)
    with pytest.raises(SlimkitError, match="pass 'to-tflite' needs a torch model but the input model is onnx"):
        plan(parse_recipe({"name": "r", "passes": ["to-tflite"]}), ModelKind.ONNX)


def test_to_onnx_inserted_for_onnx_pass_on_torch_model(tmp_path, digits_mlp):
    steps = plan(parse_recipe({"passes": ["fp16"]}), ModelKind.TORCH)
    assert [(s.pass_.name, s.inserted, str(s.kind_in), str(s.kind_out)) for s in steps] == [
        ("to-onnx", True, "torch", "onnx"), ("fp16", False, "onnx", "onnx")]

    progress = Recorder()
    result = run_pipeline(load(digits_mlp), parse_recipe({"passes": ["fp16"]}), ctx_for(tmp_path, progress=progress))
    assert progress.messages == ["to-onnx", "fp16"]
    first, second = result.steps
    assert first["pass"] == "to-onnx" and first["inserted"] is True
    assert (first["kind_in"], first["kind_out"]) == ("torch", "onnx")
    assert first["stats"]["max_abs_diff_vs_torch"] < 1e-4 and first["stats"]["exporter"] == "dynamo"
    assert first["config"] == {"exporter": "auto", "opset": None, "dynamic": True, "tolerance": 1e-3}
    assert second["pass"] == "fp16" and second["inserted"] is False
    assert second["stats"]["keep_io_types"] is True and second["config"]["keep_io_types"] is True
    for record in result.steps:
        assert isinstance(record["seconds"], float) and record["seconds"] >= 0
    assert result.steps[0]["seconds"] > 0  # an export takes measurable time
    assert isinstance(result.model, OnnxModel)
    assert result.model.path.is_relative_to(tmp_path / "work")


def test_overrides_and_step_records(tmp_path, digits_mlp):
    result = run_pipeline(load(digits_mlp), load_recipe("onnx"), ctx_for(tmp_path),
                          overrides={"to-onnx": {"opset": 18}})
    assert [r["pass"] for r in result.steps] == ["to-onnx", "onnx-cleanup"]
    assert result.steps[0]["config"]["opset"] == 18 and result.steps[0]["stats"]["opset"] == 18
    assert set(result.steps[1]["stats"]) == {"nodes_before", "nodes_after"}
    assert result.steps[1]["stats"]["nodes_after"] <= result.steps[1]["stats"]["nodes_before"]
    x = np.eye(64, dtype=np.float32)
    np.testing.assert_allclose(make_runner(result.model, 1).run({"x": x})[0],
                               make_runner(load(digits_mlp), 1).run({"x": x})[0], atol=1e-4)


# ---- the user's input files ----


@pytest.mark.parametrize("recipe", ["onnx", "fp16", "openvino"])
def test_input_onnx_is_never_modified(tmp_path, mlp_onnx_bytes, file_hash, recipe):
    folder = tmp_path / "input"
    folder.mkdir()
    source = folder / "model.onnx"
    source.write_bytes(mlp_onnx_bytes)
    before = file_hash(source)
    model = load(source)
    result = run_pipeline(model, load_recipe(recipe), ctx_for(tmp_path))
    assert file_hash(source) == before
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx"]  # nothing written beside it
    outcome = result.steps[0]["outcome"]
    assert outcome["status"] == "skipped" and outcome["reason"] == "already ONNX"
    assert result.steps[0]["stats"] == {} and result.steps[0]["inserted"] is False
    assert all(p.is_relative_to(tmp_path / "work") for p in result.model.files())
    assert model.path == source  # the input model object still points at the user's file


def test_input_onnx_with_external_data_is_never_modified(tmp_path, mlp_onnx_bytes, file_hash):
    folder = tmp_path / "input"
    folder.mkdir()
    onnx.save_model(onnx.load_from_string(mlp_onnx_bytes), str(folder / "m.onnx"), save_as_external_data=True,
                    location="m.data", size_threshold=0)
    before = {p.name: file_hash(p) for p in folder.iterdir()}
    assert set(before) == {"m.onnx", "m.data"}
    result = run_pipeline(load(folder / "m.onnx"), load_recipe("fp16"), ctx_for(tmp_path))
    assert {p.name: file_hash(p) for p in folder.iterdir()} == before
    assert result.model.size_bytes() < 0.6 * sum((folder / n).stat().st_size for n in before)


def test_foreign_onnx_through_fp16_pipeline(tmp_path, foreign_onnx, foreign_forward_fn, file_hash):
    path, weights = foreign_onnx
    before = file_hash(path)
    result = run_pipeline(load(path), load_recipe("fp16"), ctx_for(tmp_path))
    assert file_hash(path) == before
    x = np.random.default_rng(5).standard_normal((16, 4)).astype(np.float32)
    got = make_runner(result.model, 1).run({"features": x})[0]
    assert got.dtype == np.float32  # fp32 I/O kept
    np.testing.assert_allclose(got, foreign_forward_fn(weights, x), atol=2e-2, rtol=1e-2)
    initializers = {t.name: t.data_type for t in result.model.proto.graph.initializer}
    assert initializers["w1"] == onnx.TensorProto.FLOAT16
