"""End-to-end CLI tests on small real models (digits MLP trained in seconds), bad input included."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slimkit.bundled_data import digits_arrays
from slimkit.cli import main
from slimkit.demo_models import trained_digits_model

FACTORY = '''
from slimkit.demo_models import DigitsMLP


def make():
    return DigitsMLP()
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A factory module + safetensors weights, an exported ONNX file and a digits .npz."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("cli")
    module = trained_digits_model("mlp", cache_dir=root / "cache")
    (root / "digits_factory.py").write_text(FACTORY)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(root / "mlp.safetensors"))
    x, y = digits_arrays("test")
    np.savez(root / "digits.npz", x=x[:128], labels=y[:128])
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def mlp_onnx(work):
    """The factory model exported by `slimkit convert` (run from the folder holding the factory)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.syspath_prepend(str(work))
        code = main(["convert", "digits_factory:make", "--weights", str(work / "mlp.safetensors"), "--to", "onnx",
                     "-o", str(work / "export" / "mlp.onnx"), "--data", str(work / "digits.npz"), "--json"])
    assert code == 0
    return work / "export" / "mlp.onnx"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_recipes_lists_builtins(capsys):
    code, out, _ = run(capsys, "recipes", "--json")
    names = {r["name"] for r in json.loads(out)}
    assert code == 0 and {"onnx", "fp16", "openvino", "tflite"} <= names


def test_convert_factory_with_weights_is_faithful(mlp_onnx, work):
    assert mlp_onnx.exists()
    sidecar = json.loads((mlp_onnx.parent / "mlp.slimkit.json").read_text())
    assert sidecar["input_names"] == ["x"]
    assert not list(mlp_onnx.parent.glob(".*")), "staging files left behind"


def test_convert_reports_fidelity(capsys, work, monkeypatch):
    monkeypatch.chdir(work)
    code, out, _ = run(capsys, "convert", "digits_factory:make", "--weights", work / "mlp.safetensors",
                       "--to", "onnx", "-o", work / "export2", "--data", work / "digits.npz", "--json")
    assert code == 0
    report = json.loads(out)["report"]
    result = report["measurements"][1]
    assert result["fidelity"]["cosine_min"] >= 0.9999
    assert result["metrics"]["accuracy"] >= 0.95
    assert (work / "export2" / "model.onnx").exists()


def test_inspect_onnx(capsys, mlp_onnx):
    code, out, _ = run(capsys, "inspect", mlp_onnx, "--json")
    info = json.loads(out)
    assert code == 0
    assert info["params"] == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert info["ops"].get("Gemm", 0) + info["ops"].get("MatMul", 0) >= 3
    assert info["largest"][0]["params"] == 300 * 100


def test_optimize_fp16_writes_artifact_and_report(capsys, mlp_onnx, work):
    before = sha(mlp_onnx)
    out_dir = work / "fp16"
    code, out, _ = run(capsys, "optimize", mlp_onnx, "--recipe", "fp16", "-o", out_dir,
                       "--data", work / "digits.npz", "--batch-size", "8")
    assert code == 0, out
    assert sha(mlp_onnx) == before, "the input model was modified"
    report = json.loads((out_dir / "report.json").read_text())
    assert (out_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert [p["pass"] for p in report["passes"]] == ["to-onnx", "onnx-cleanup", "fp16"]
    assert all("seconds" in p for p in report["passes"])
    original, result = report["measurements"]
    assert result["size_bytes"] < 0.6 * original["size_bytes"]
    assert abs(result["metrics"]["accuracy"] - original["metrics"]["accuracy"]) <= 0.01
    assert report["environment"]["threads"] == 2
    assert "fp16" in out  # the terminal table names the recipe's result


def test_optimize_openvino_then_bench_json(capsys, mlp_onnx, work):
    out_dir = work / "ov"
    code, _, _ = run(capsys, "optimize", mlp_onnx, "--recipe", "openvino", "-o", out_dir)
    assert code == 0 and (out_dir / "model.xml").exists() and (out_dir / "model.bin").exists()
    code, out, _ = run(capsys, "bench", out_dir / "model.xml", "--reference", mlp_onnx,
                       "--data", work / "digits.npz", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert len(rows) == 2
    ov = rows[1]
    for key in ("size_bytes",):
        assert ov[key] > 0
    assert ov["latency_ms"]["p50"] > 0 and ov["latency_ms"]["p90"] >= ov["latency_ms"]["p50"]
    assert ov["fidelity"]["cosine_mean"] >= 0.9999 and ov["fidelity"]["cosine_min"] >= 0.9999
    assert ov["fidelity"]["max_abs_err"] < 1e-3
    from slimkit.hardware import resolve_openvino_precision

    assert ov["runtime"] == f"openvino {resolve_openvino_precision('auto')[0]}"  # the precision it ran at


def test_bench_generated_inputs_without_data(capsys, mlp_onnx):
    code, out, _ = run(capsys, "bench", mlp_onnx, "--json")
    row = json.loads(out.strip())
    assert code == 0 and row["data"]["generated"] is True and row["fidelity"] is None


# ---- bad input: one line, exit 2, no traceback, nothing half-written ----


def expect_error(capsys, *argv, contains: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert contains.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_missing_path(capsys, tmp_path):
    expect_error(capsys, "inspect", tmp_path / "nope.onnx", contains="no such file")


def test_empty_file(capsys, tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    expect_error(capsys, "inspect", tmp_path / "empty.onnx", contains="empty")


def test_random_bytes_onnx(capsys, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    expect_error(capsys, "bench", tmp_path / "junk.onnx", contains="not a valid ONNX model")


def test_truncated_onnx(capsys, mlp_onnx, tmp_path):
    data = mlp_onnx.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    expect_error(capsys, "inspect", tmp_path / "cut.onnx", contains="not a valid ONNX model")


def test_op_onnxruntime_cannot_run(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("FrobnicateX", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, tmp_path / "custom.onnx")
    expect_error(capsys, "bench", tmp_path / "custom.onnx", contains="ONNX Runtime cannot run")


def test_data_with_wrong_input_name(capsys, mlp_onnx, tmp_path):
    np.savez(tmp_path / "bad.npz", pixels=np.zeros((4, 64), np.float32))
    expect_error(capsys, "bench", mlp_onnx, "--data", tmp_path / "bad.npz", contains="no array for input 'x'")


def test_data_with_wrong_rank_and_dtype(capsys, mlp_onnx, tmp_path):
    np.savez(tmp_path / "rank.npz", x=np.zeros((4, 8, 8), np.float32))
    expect_error(capsys, "bench", mlp_onnx, "--data", tmp_path / "rank.npz", contains="rank")
    np.savez(tmp_path / "dtype.npz", x=np.zeros((4, 64), np.int64))
    expect_error(capsys, "bench", mlp_onnx, "--data", tmp_path / "dtype.npz", contains="int64")


def test_unknown_recipe(capsys, mlp_onnx, tmp_path):
    line = expect_error(capsys, "optimize", mlp_onnx, "--recipe", "turbo", "-o", tmp_path / "o", contains="unknown recipe")
    assert "fp16" in line  # lists the built-in recipes


def test_unknown_recipe_key(capsys, mlp_onnx, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\npasses:\n  - pass: fp16\n    keep_io: true\n")
    line = expect_error(capsys, "optimize", mlp_onnx, "--recipe", recipe, "-o", tmp_path / "o", contains="keep_io")
    assert "keep_io_types" in line  # names the accepted keys
    assert not (tmp_path / "o").exists()


def test_missing_optional_dependency_names_extra(capsys, mlp_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the package were not installed
    expect_error(capsys, "optimize", mlp_onnx, "--recipe", "openvino", "-o", tmp_path / "o",
                 contains="pip install 'slimkit[openvino]'")
    assert not (tmp_path / "o").exists()


def test_output_equals_input(capsys, mlp_onnx):
    before = sha(mlp_onnx)
    expect_error(capsys, "convert", mlp_onnx, "--to", "onnx", "-o", mlp_onnx, contains="is the input")
    assert sha(mlp_onnx) == before


def test_output_folder_containing_input(capsys, mlp_onnx):
    expect_error(capsys, "optimize", mlp_onnx, "--recipe", "fp16", "-o", mlp_onnx.parent, contains="is the input")


def test_failed_run_leaves_no_artifact(capsys, mlp_onnx, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 63), np.float32))
    out_dir = tmp_path / "never"
    expect_error(capsys, "optimize", mlp_onnx, "--recipe", "fp16", "-o", out_dir, "--data", tmp_path / "bad.npz",
                 contains="shape")
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dynamic_dim_needs_shape(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "width"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "width"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "relu.onnx")
    line = expect_error(capsys, "bench", tmp_path / "relu.onnx", contains="'x'")
    assert "width" in line and "--shape" in line
    code, out, _ = run(capsys, "bench", tmp_path / "relu.onnx", "--shape", "x=2x16", "--json")
    assert code == 0 and json.loads(out)["batch_size"] == 2


def test_console_script_prints_one_line_not_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slimkit.cli", "inspect", str(tmp_path / "missing.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
