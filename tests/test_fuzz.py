"""Mutation fuzzing (issue 13): damaged ONNX files get one clean line, never a traceback, a crash or a hang;
NaN / Inf weights are shown by inspect and NaN / Inf outputs flagged by bench and optimize.

The short fuzz run mutates a stand-in "foreign" model built here with onnx.helper (an LSTM and an If, like the
Silero VAD model the full run in benchmarks/fuzz_models.py fetches from PyPI), so the suite needs no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimkit.errors import SlimkitError
from slimkit.formats.onnx import load_onnx
from slimkit.settings import MeasureSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from modelfuzz.mutate import KINDS, kind_for, mutate  # noqa: E402
from modelfuzz.runner import classify  # noqa: E402


def make_recurrent_model(path: Path, *, nan: str | None = None) -> Path:
    """x[6, 1, 4] -> LSTM(8) -> If(sum > 0: Relu, else: Neg) -> Reshape [1, 8] -> MatMul + bias -> logits[1, 3];
    the weight named `nan` all NaN."""
    rng = np.random.default_rng(0)
    hidden = 8
    weights = {
        "W": rng.standard_normal((1, 4 * hidden, 4)).astype(np.float32) * 0.3,
        "R": rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.3,
        "B": np.zeros((1, 8 * hidden), np.float32),
        "w_out": rng.standard_normal((hidden, 3)).astype(np.float32),
        "b_out": np.zeros(3, np.float32),
        "zero": np.zeros((), np.float32),
        "flat": np.array([1, hidden], np.int64),
    }
    then_branch = helper.make_graph([helper.make_node("Relu", ["y_h"], ["branch_out"])], "then", [],
                                    [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [1, 1, hidden])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["y_h"], ["branch_out2"])], "else", [],
                                    [helper.make_tensor_value_info("branch_out2", TensorProto.FLOAT, [1, 1, hidden])])
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "y_h"], hidden_size=hidden, name="lstm"),
        helper.make_node("ReduceSum", ["y_h"], ["total"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["total", "zero"], ["positive"], name="gt"),
        helper.make_node("If", ["positive"], ["chosen"], then_branch=then_branch, else_branch=else_branch, name="if"),
        helper.make_node("Reshape", ["chosen", "flat"], ["features"], name="flatten"),
        helper.make_node("MatMul", ["features", "w_out"], ["scores"], name="head"),
        helper.make_node("Add", ["scores", "b_out"], ["logits"], name="bias"),
    ]
    if nan is not None:
        weights[nan] = np.full_like(weights[nan], np.nan)
    graph = helper.make_graph(
        nodes, "stand_in_recurrent", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="stand-in-exporter")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def recurrent_onnx(tmp_path_factory) -> Path:
    return make_recurrent_model(tmp_path_factory.mktemp("fuzz") / "recurrent.onnx")


def test_mutants_are_reproducible_and_cover_every_kind(recurrent_onnx):
    data = recurrent_onnx.read_bytes()
    assert {kind_for(seed) for seed in range(len(KINDS))} == set(KINDS)
    for seed in range(len(KINDS)):
        kind = kind_for(seed)
        first, again = mutate(data, kind, seed), mutate(data, kind, seed)
        assert first == again, kind
        assert first != data, kind  # every kind changes this model
    assert mutate(data, "flip", 1) != mutate(data, "flip", 2)


def test_classify():
    assert classify(0, None, False, "") == "ok"
    assert classify(2, None, False, "error: x is not a valid ONNX model: export it again\n") == "clean-error"
    assert classify(1, None, False, "Traceback (most recent call last):\n  ...\nValueError: x\n") == "traceback"
    assert classify(0, None, False, "Traceback (most recent call last):\n") == "traceback"  # a logged one too
    assert classify(-11, 11, False, "") == "signal"
    assert classify(-9, 9, True, "") == "hang"
    assert classify(1, None, False, "oops") == "other-exit"


def test_short_fuzz_run_has_no_traceback_signal_or_hang(recurrent_onnx, tmp_path):
    """50 mutants x inspect / bench / optimize int8-dynamic, in forked children of one process (the script)."""
    out = tmp_path / "fuzz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fuzz_models.py"), "--file", str(recurrent_onnx),
         "--mutants", "50", "--workers", "2", "--timeout", "30", "--out", str(out)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert (out / "fuzz-results.json").exists(), proc.stderr[-3000:]
    results = json.loads((out / "fuzz-results.json").read_text())
    summary = results["summary"]["recurrent"]
    assert {c: sum(n.values()) for c, n in summary.items()} == {"inspect": 50, "bench": 50, "optimize": 50}
    assert results["bad"] == [], proc.stdout[-3000:]
    assert proc.returncode == 0
    # The run reaches past loading: some mutants (NaN weights, flipped weight bytes) still run end to end.
    assert summary["optimize"].get("ok", 0) >= 3
    assert summary["inspect"].get("clean-error", 0) >= 20


def test_malformed_graphs_are_refused_with_one_line(recurrent_onnx, tmp_path):
    data = recurrent_onnx.read_bytes()
    for kind, seed in (("cycle", 6), ("drop-node", 5), ("empty-graph", 9)):
        bad = tmp_path / f"{kind}.onnx"
        bad.write_bytes(mutate(data, kind, seed))
        with pytest.raises(SlimkitError) as info:
            load_onnx(bad)
        assert "\n" not in str(info.value) and "export it again" in str(info.value), kind


def test_absurd_input_dims_are_refused_before_allocating(recurrent_onnx, tmp_path):
    model = onnx.load(str(recurrent_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10**9
    bad = tmp_path / "huge.onnx"
    onnx.save_model(model, str(bad))
    with pytest.raises(SlimkitError, match="input 'x' declares dims"):
        load_onnx(bad)


def test_inspect_shows_nan_weights(tmp_path, capsys):
    from slimkit.cli import main
    from slimkit.inspect_model import inspect_model

    path = make_recurrent_model(tmp_path / "nan.onnx", nan="b_out")
    assert inspect_model(load_onnx(path))["nonfinite_weights"] == {"tensors": 1, "values": 3, "names": ["b_out"]}
    assert inspect_model(load_onnx(make_recurrent_model(tmp_path / "fine.onnx")))["nonfinite_weights"] is None
    assert main(["inspect", str(path)]) == 0
    assert "NaN/Inf weights: 3 values in 1 tensor (b_out)" in capsys.readouterr().out


def test_bench_and_optimize_flag_nan_outputs(tmp_path, capsys):
    from slimkit.api import bench, optimize
    from slimkit.report import build_report

    path = make_recurrent_model(tmp_path / "nan.onnx", nan="b_out")
    results = bench([str(path)], settings=MeasureSettings(threads=1))
    report = build_report(command="bench", input_model={"model": str(path)},
                          measurements=[m.as_dict() for m in results], reference_label=None, threads=1)
    assert results[0].nonfinite_outputs == {"nan": 24, "inf": 0, "values": 24}
    assert [f["flag"] for f in report["flags"]] == ["nan-output"]

    result = optimize(str(path), "int8-dynamic", settings=MeasureSettings(threads=1), output=tmp_path / "out")
    flagged = {(f["model"], f["flag"]) for f in result.report["flags"]}
    labels = [m["label"] for m in result.report["measurements"]]
    assert {(label, "nan-output") for label in labels} <= flagged
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any(f["flag"] == "nan-output" for f in saved["flags"])


def test_weight_whose_bytes_do_not_fit_its_dims_is_refused(recurrent_onnx, tmp_path):
    model = onnx.load(str(recurrent_onnx))
    weight = next(t for t in model.graph.initializer if t.name == "w_out")
    weight.dims[0] = 10**9  # declares 3e9 elements over 96 bytes
    bad = tmp_path / "dims.onnx"
    onnx.save_model(model, str(bad))
    with pytest.raises(SlimkitError, match="w_out.*too small|weight 'w_out' declares dims"):
        load_onnx(bad)
    weight.dims[0] = 4  # plausible dims, but 96 bytes of data for 12 floats
    onnx.save_model(model, str(bad))
    with pytest.raises(SlimkitError, match="weight 'w_out' has 96 bytes of data for dims"):
        load_onnx(bad)


def test_nan_output_flag_is_raised_for_the_reference_too():
    from slimkit.report import compute_flags

    def measurement(label, nonfinite=None):
        return {"label": label, "model": label, "size_bytes": 10, "latency_ms": {"p50": 1.0},
                **({"nonfinite_outputs": nonfinite} if nonfinite else {})}

    broken = {"nan": 5, "inf": 1, "values": 30}
    flags = compute_flags([measurement("original", broken), measurement("int8", broken)], "original")
    assert [(f["model"], f["flag"]) for f in flags] == [("original", "nan-output"), ("int8", "nan-output")]
    assert "5 NaN and 1 Inf values (of 30 checked)" in flags[0]["message"]
    assert compute_flags([measurement("original"), measurement("int8")], "original") == []


def test_quantizing_a_nan_weight_is_refused_with_one_line(tmp_path):
    from slimkit.api import optimize

    path = make_recurrent_model(tmp_path / "nan_matmul.onnx", nan="w_out")  # MatMul's weight: int8 quantizes it
    with pytest.raises(SlimkitError, match=r"cannot quantize \(int8-dynamic\): 1 weight tensor\(s\) hold NaN"):
        optimize(str(path), "int8-dynamic", settings=MeasureSettings(threads=1), output=tmp_path / "out")


@pytest.mark.parametrize("opsets", [[], [("", 17), ("", 11)]], ids=["none", "twice"])
def test_missing_or_repeated_ai_onnx_opset_is_refused(recurrent_onnx, tmp_path, opsets):
    model = onnx.load(str(recurrent_onnx))
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    bad = tmp_path / "opset.onnx"
    onnx.save_model(model, str(bad))
    with pytest.raises(SlimkitError, match="declares (no ai.onnx opset|the ai.onnx opset more than once)"):
        load_onnx(bad)
