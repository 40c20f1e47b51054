"""What a first-time user hits: the deployable baseline, outputs that are not silently replaced, checkpoints
cleaned up, batch sizes that are said when changed, the task shown by inspect, and a report that states its
data and command line."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from slimkit.bundled_data import digits_arrays
from slimkit.cli import main
from slimkit.report import build_report
from slimkit.report.format import fmt_ratio, measurement_rows

FACTORY = '''
from slimkit.demo_models import DigitsMLP


def make():
    return DigitsMLP()
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory, digits_cache):
    """A factory module with trained weights (a user's own PyTorch model), a labelled .npz per split."""
    from safetensors.torch import save_file

    from slimkit.demo_models import trained_digits_model

    root = tmp_path_factory.mktemp("first-run")
    module = trained_digits_model("mlp", cache_dir=digits_cache)
    (root / "user_factory.py").write_text(FACTORY)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(root / "mlp.safetensors"))
    for split, n in (("fit", 400), ("val", 120), ("test", 200)):
        x, y = digits_arrays(split)
        np.savez(root / f"{split}.npz", x=x[:n], labels=y[:n])
    return root


@pytest.fixture
def in_work(work, monkeypatch):
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    return work


@pytest.fixture(scope="module")
def mlp_onnx(work):
    """The user's model exported once, for the tests that start from an ONNX file."""
    from slimkit import convert

    target, _ = convert(trained_model(work), "onnx", work / "exported" / "mlp.onnx")
    return target


def trained_model(work):
    from slimkit.demo_models import DigitsMLP
    from slimkit.formats import load

    return load(DigitsMLP(), weights=work / "mlp.safetensors")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def user_model(work) -> list:
    return ["user_factory:make", "--weights", work / "mlp.safetensors"]


# ---- the baseline that flatters ----

def _m(label, *, size, rounds, accuracy=None, baseline=None):
    m = {"label": label, "size_bytes": size, "latency_ms": {"p50": float(np.median(rounds)), "p50_rounds": rounds},
         "metrics": {"accuracy": accuracy} if accuracy is not None else {}}
    if baseline:
        m["baseline"] = baseline
    return m


def test_ratios_and_flags_use_the_rows_baseline_not_the_eager_reference():
    """int8 that is 0.3x PyTorch eager but 2x float ONNX is slower: the runtime switch is not its merit."""
    measurements = [
        _m("original", size=1000, rounds=[10.0] * 7),
        _m("plain onnx", size=1000, rounds=[0.1] * 7),
        _m("int8", size=300, rounds=[0.2, 0.21, 0.2, 0.19, 0.2, 0.2, 0.2], baseline="plain onnx"),
    ]
    report = build_report(command="optimize", input_model={}, measurements=measurements, reference_label="original")
    ratios = {r["model"]: r for r in report["ratios"]}
    assert ratios["int8"]["baseline"] == "plain onnx"
    assert ratios["int8"]["p50_ratio"] == pytest.approx(2.0, rel=0.06)
    assert "baseline" not in ratios["plain onnx"]  # judged against the reference
    flags = {(f["model"], f["flag"]) for f in report["flags"]}
    assert ("int8", "slower") in flags and ("int8", "smaller-not-faster") in flags
    rows = {r["model"].text: r for r in measurement_rows(report)}
    assert rows["int8"]["baseline"].text == "plain onnx" and rows["int8"]["p50_ratio"].tone == "bad"
    assert rows["plain onnx"]["baseline"].text == "original"


def test_tiny_ratios_are_not_printed_as_zero():
    assert fmt_ratio(0.0022) == "0.0022x" and fmt_ratio(0.5) == "0.50x" and fmt_ratio(12.345) == "12.35x"


def test_optimize_pytorch_model_is_judged_against_the_plain_onnx_export(capsys, in_work):
    work = in_work
    code, out, err = run(capsys, "optimize", *user_model(work), "--recipe", "int8-dynamic", "-o", work / "int8",
                         "--data", work / "val.npz", "--eval-data", work / "test.npz", "--json")
    assert code == 0, err
    report = json.loads(out)["report"]
    labels = [m["label"] for m in report["measurements"]]
    assert labels == ["original", "plain onnx", "int8-dynamic"]
    runtimes = [m["runtime"] for m in report["measurements"]]
    assert runtimes == ["pytorch-eager", "onnxruntime", "onnxruntime"]
    sizes = [m["size_bytes"] for m in report["measurements"]]
    assert sizes[1] > 0.95 * sizes[0] and sizes[2] < 0.4 * sizes[1]  # the baseline is the fp32 export
    result = {r["model"]: r for r in report["ratios"]}["int8-dynamic"]
    assert result["baseline"] == "plain onnx"
    base_p50 = report["measurements"][1]["latency_ms"]["p50"]
    assert result["p50_ratio"] == pytest.approx(report["measurements"][2]["latency_ms"]["p50"] / base_p50, rel=0.5)
    # fidelity is still to the original's outputs
    assert report["measurements"][2]["fidelity"]["cosine_mean"] > 0.99
    # the report says what it measured on and how it was invoked
    assert report["evaluation"]["source"].endswith("test.npz") and report["evaluation"]["samples"] == 200
    assert "--recipe int8-dynamic" in report["invocation"]["command_line"]


def test_convert_is_the_baseline_itself_and_writes_its_report(capsys, in_work):
    work = in_work
    target = work / "conv" / "mlp.onnx"
    code, out, err = run(capsys, "convert", *user_model(work), "--to", "onnx", "-o", target,
                         "--data", work / "test.npz")
    assert code == 0, err
    assert "optimize" not in out.splitlines()[0]  # the header names the command that ran
    report = json.loads((target.parent / "mlp.report.json").read_text())
    assert report["command"] == "convert"
    assert [m["label"] for m in report["measurements"]] == ["original", "onnx"]
    assert (target.parent / "mlp.report.html").read_text().startswith("<!DOCTYPE html>")


def test_fp16_on_an_int8_model_is_refused(capsys, in_work):
    work = in_work
    code, _, err = run(capsys, "optimize", *user_model(work), "--recipe", "int8-dynamic", "-o", work / "q8",
                       "--data", work / "val.npz")
    assert code == 0, err
    code, _, err = run(capsys, "optimize", work / "q8" / "model.onnx", "--recipe", "fp16", "-o", work / "q8-fp16")
    assert code == 2 and "already quantized" in err and "Traceback" not in err
    assert not (work / "q8-fp16").exists()


# ---- silent changes ----

def test_earlier_output_is_not_replaced_without_overwrite(capsys, in_work):
    work = in_work
    args = ["optimize", *user_model(work), "--recipe", "onnx", "-o", work / "again", "--data", work / "val.npz"]
    assert run(capsys, *args)[0] == 0
    before = (work / "again" / "report.json").read_text()
    start = time.perf_counter()
    code, _, err = run(capsys, *args)
    assert code == 2 and "--overwrite" in err and time.perf_counter() - start < 5  # refused before any work
    assert (work / "again" / "report.json").read_text() == before
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert (work / "again" / "report.json").read_text() != before


def test_convert_refuses_an_existing_file_and_warns_about_the_input_folder(capsys, in_work):
    work = in_work
    target = work / "conv2" / "mlp.onnx"
    assert run(capsys, "convert", *user_model(work), "--to", "onnx", "-o", target)[0] == 0
    code, _, err = run(capsys, "convert", *user_model(work), "--to", "onnx", "-o", target)
    assert code == 2 and "already exists" in err
    # next to the input model file: written, with a note saying so
    code, out, err = run(capsys, "convert", target, "--to", "fp16", "-o", target.with_name("mlp-fp16.onnx"),
                         "--json")
    assert code == 0, err
    notes = json.loads(out)["report"]["notes"]
    assert any("input model's folder" in n for n in notes)


def test_result_save_refuses_an_earlier_output(in_work, mlp_onnx):
    from slimkit import optimize
    from slimkit.errors import SlimkitError

    work = in_work
    result = optimize(mlp_onnx, "onnx", measure=False)
    result.save(work / "saved")
    with pytest.raises(SlimkitError, match="already holds a slimkit output"):
        result.save(work / "saved")
    result.save(work / "saved", overwrite=True)


PRUNE_RECIPE = """
name: prune-quick
description: one epoch of pruning, for the test
passes:
  - pass: prune
    sparsity: 0.5
    train:
      epochs: 1
  - pass: to-onnx
"""


def test_checkpoints_removed_after_success_unless_asked_for(capsys, in_work):
    work = in_work
    (work / "quick.yaml").write_text(PRUNE_RECIPE)
    base = ["optimize", *user_model(work), "--recipe", work / "quick.yaml", "--train-data", work / "fit.npz",
            "--data", work / "val.npz"]
    code, _, err = run(capsys, *base, "-o", work / "pruned")
    assert code == 0, err
    assert (work / "pruned" / "model.onnx").exists() and not (work / "pruned.checkpoints").exists()
    code, _, err = run(capsys, *base, "-o", work / "pruned2", "--checkpoint-dir", work / "ck")
    assert code == 0, err
    assert any((work / "ck").rglob("*")), "an asked-for checkpoint folder is kept"


def test_batch_size_larger_than_the_data_is_said(capsys, in_work, mlp_onnx):
    work = in_work
    code, out, err = run(capsys, "bench", mlp_onnx, "--data", work / "test.npz",
                         "--batch-size", "1000")
    assert code == 0, err
    assert "batch size 1000 was asked for" in out and "timed at batch 200" in out
    code, _, err = run(capsys, "bench", mlp_onnx, "--batch-size", "0")
    assert code == 2 and "batch size" in err


def test_inspect_shows_the_task_inferred_from_labels(capsys, foreign_onnx, tmp_path):
    path, _weights = foreign_onnx  # built by hand: no task recorded anywhere
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", features=rng.standard_normal((20, 4)).astype(np.float32),
             labels=rng.integers(0, 3, 20))
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0 and "task=unknown" in out
    code, out, _ = run(capsys, "inspect", path, "--data", tmp_path / "d.npz")
    assert code == 0 and "task=classification" in out and "integer labels" in out


def test_bad_evaluation_data_is_refused_before_any_pass(in_work, mlp_onnx):
    from slimkit import optimize
    from slimkit.errors import SlimkitError

    x, y = digits_arrays("test")
    start = time.perf_counter()
    with pytest.raises(SlimkitError, match="no array for input 'x'"):
        optimize(mlp_onnx, "int8-static", data={"x": x[:50], "labels": y[:50]},
                 eval_data={"pixels": x[50:90], "labels": y[50:90]})
    assert time.perf_counter() - start < 5
