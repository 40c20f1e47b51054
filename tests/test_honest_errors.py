"""Honest errors and restored global state.

Every CLI failure is one line on stderr (ONNX Runtime's own log lines stay off the terminal), a slimkit bug
says it is one instead of advising the user, best-effort steps record the real reason they gave up, and
process-wide settings (torch threads, cwd, logger levels) are what they were once slimkit is done.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from slimkit import cli
from slimkit.errors import SlimkitError, describe, raised_by_library
from slimkit.models.base import OnnxModel
from slimkit.passes.base import Context, get_pass
from slimkit.threads import torch_threads

ORT_LOG = "[E:onnxruntime"


def _save(nodes, inputs, outputs, path, *, initializers=(), opsets=(("", 17),)) -> OnnxModel:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    onnx.save(model, path)
    return OnnxModel.from_proto(model)


def _tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def unknown_op_model(path) -> OnnxModel:
    """A valid ONNX file whose op ONNX Runtime has never heard of: it cannot load it."""
    return _save([helper.make_node("Frobnicate", ["x"], ["y"])], [_tensor("x", [1, 4])], [_tensor("y", [1, 4])], path)


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SLIMKIT_VERBOSE"}
    return subprocess.run([sys.executable, "-m", "slimkit.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=120)


# ---- the CLI: one line, an honest exit code --------------------------------------------------------------


def test_model_onnxruntime_cannot_load_is_one_line_without_its_log(tmp_path):
    unknown_op_model(tmp_path / "unknown.onnx")
    proc = _cli("bench", str(tmp_path / "unknown.onnx"))
    assert proc.returncode == 2, proc.stderr
    lines = _stderr_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert ORT_LOG not in proc.stderr and "Traceback" not in proc.stderr


def test_model_that_fails_at_run_time_is_one_line_without_its_log(tmp_path, capfd):
    shape = numpy_helper.from_array(np.array([3, 5], dtype=np.int64), "shape")  # 4 values cannot become 3x5
    _save([helper.make_node("Reshape", ["x", "shape"], ["y"])], [_tensor("x", [1, 4])], [_tensor("y", None)],
          tmp_path / "reshape.onnx", initializers=[shape])
    assert cli.main(["bench", str(tmp_path / "reshape.onnx")]) == 2  # in-process: capfd sees what C++ writes
    err = capfd.readouterr().err
    assert len(_stderr_lines(err)) == 1 and ORT_LOG not in err, err


def _failing_command(monkeypatch, exc: BaseException, command: str = "inspect") -> None:
    def fail(args):
        raise exc

    monkeypatch.setitem(cli.COMMANDS, command, fail)


def test_multiline_library_text_and_captured_native_output_stay_one_line(monkeypatch, capsys):
    from slimkit.quiet import quiet_native

    monkeypatch.delenv("SLIMKIT_VERBOSE", raising=False)

    def fail(args):
        with quiet_native("demo-lib"):  # its captured output is appended to the error: the CLI shows line one
            os.write(2, b"E0000 kernel FancyOp missing\n")
            raise SlimkitError("demo-lib cannot convert m.onnx: bad node 7\n  at graph.cc:12\n  at model.cc:3",
                               "re-export with opset 17\nor newer")

    monkeypatch.setitem(cli.COMMANDS, "inspect", fail)
    assert cli.main(["inspect", "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert _stderr_lines(err) == ["error: demo-lib cannot convert m.onnx: bad node 7: re-export with opset 17"], err


def test_internal_error_says_so_with_a_distinct_exit_code(monkeypatch, capsys):
    monkeypatch.delenv("SLIMKIT_VERBOSE", raising=False)
    _failing_command(monkeypatch, KeyError("input_specs"))
    assert cli.main(["inspect", "m.onnx"]) == cli.EXIT_INTERNAL == 70
    lines = _stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert "internal error" in lines[0] and "KeyError: 'input_specs'" in lines[0] and "--verbose" in lines[0]
    assert "Traceback" not in lines[0] and "check the data" not in lines[0]


def test_internal_error_with_verbose_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv("SLIMKIT_VERBOSE", "0")  # restored after the test: main sets it for --verbose
    _failing_command(monkeypatch, AttributeError("'NoneType' object has no attribute 'graph'"))
    assert cli.main(["inspect", "m.onnx", "--verbose"]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in fail" in err
    assert _stderr_lines(err)[-1].startswith("error: internal error") and "traceback is above" in err


@pytest.mark.parametrize(("exc", "words"), [
    (OSError(errno.ENOSPC, "No space left on device", "/out/model.onnx"), "free some disk space"),
    (PermissionError(errno.EACCES, "Permission denied", "/out"), "write to the output folder"),
    (MemoryError(), "out of memory"),
])
def test_environment_problems_are_user_errors_not_bugs(monkeypatch, capsys, exc, words):
    _failing_command(monkeypatch, exc)
    assert cli.main(["inspect", "m.onnx"]) == 2
    lines = _stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and words in lines[0] and "internal error" not in lines[0], lines


def test_a_closed_stdout_ends_quietly(monkeypatch, capsys):
    _failing_command(monkeypatch, BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert cli.main(["inspect", "m.onnx"]) == cli.EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


# ---- telling a library's refusal from our own bug ------------------------------------------------------


def test_raised_by_library_looks_at_where_the_error_came_from():
    import json

    with pytest.raises(ValueError) as inside:
        json.loads("{")
    assert raised_by_library(inside.value, ("json",)) and not raised_by_library(inside.value, ("onnx",))

    from slimkit.data_sources import parse_shapes

    with pytest.raises(SlimkitError) as mine:  # the library calls slimkit back, and slimkit raises
        json.loads("[1]", parse_int=lambda text: parse_shapes([text]))
    assert not raised_by_library(mine.value, ("json",))
    assert not raised_by_library(KeyboardInterrupt(), ("json",))
    assert describe(RuntimeError("first\nsecond")) == "RuntimeError: first" and describe(StopIteration()) == \
        "StopIteration"


# ---- fusion: a rejected graph is recorded, our bugs propagate, loggers come back -------------------------


def zipmap_model(path) -> OnnxModel:
    """A scikit-learn style classifier ending in ZipMap (a sequence of maps): onnx_ir cannot read that type."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("LinearClassifier", ["h"], ["label", "prob"], domain="ai.onnx.ml",
                              coefficients=rng.standard_normal(24).tolist(), intercepts=[0.0] * 3,
                              classlabels_ints=[0, 1, 2]),
             helper.make_node("ZipMap", ["prob"], ["probs"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    probs = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    return _save(nodes, [_tensor("x", ["N", 4])],
                 [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]), helper.make_value_info("probs", probs)],
                 path, initializers=[w], opsets=(("", 17), ("ai.onnx.ml", 1)))


def test_fusion_records_why_a_graph_could_not_be_fused_and_restores_loggers(tmp_path):
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir")]
    loggers[0].setLevel(logging.DEBUG)  # the caller's own choice, which fusion used to overwrite for good
    before = [lg.level for lg in loggers]
    try:
        result = get_pass("transformer-fusion")().run(zipmap_model(tmp_path / "zipmap.onnx"), Context(workdir=tmp_path))
        assert [lg.level for lg in loggers] == before
    finally:
        loggers[0].setLevel(logging.NOTSET)
    assert result.stats["kept"] is False
    assert result.stats["reason"].startswith("fusion failed: SerdeError: "), result.stats


def test_a_slimkit_bug_inside_fusion_is_not_swallowed(tmp_path, foreign_onnx, monkeypatch):
    from slimkit.formats import load
    from slimkit.passes import fusion

    def broken(proto):
        raise KeyError("qkv_hidden_sizes")

    monkeypatch.setattr(fusion, "use_raw_mask", broken)
    with pytest.raises(KeyError, match="qkv_hidden_sizes"):
        get_pass("transformer-fusion")().run(load(foreign_onnx[0]), Context(workdir=tmp_path))


# ---- quantization: state restored when it fails, the real reason kept ----------------------------------


def test_quiet_quantizer_restores_cwd_and_root_logger_level_when_the_body_raises():
    from slimkit.passes.quantize import quiet_quantizer

    cwd, level = os.getcwd(), logging.getLogger().level
    with pytest.raises(RuntimeError, match="boom"), quiet_quantizer():
        assert os.getcwd() != cwd and logging.getLogger().level == logging.ERROR
        raise RuntimeError("boom")
    assert os.getcwd() == cwd and logging.getLogger().level == level


def test_quantizer_failure_is_one_clear_error_with_state_restored_and_no_ort_log(tmp_path, capfd):
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32))
    model = unknown_op_model(tmp_path / "unknown.onnx")  # from_proto: slimkit's own load would refuse it first
    cwd, level = os.getcwd(), logging.getLogger().level
    with pytest.raises(SlimkitError) as failure:
        get_pass("int8-static")().run(model, Context(workdir=tmp_path / "w", data=str(tmp_path / "calib.npz")))
    assert failure.value.problem.startswith("ONNX Runtime's quantize_static failed on this model: InvalidGraph: ")
    assert os.getcwd() == cwd and logging.getLogger().level == level
    err = capfd.readouterr().err
    assert ORT_LOG not in err and "Optimization Failed" not in err and "Traceback" not in err, err


def test_int8_static_says_why_preprocessing_skipped_symbolic_shapes(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")
    # Two inputs with independent batch symbols: symbolic shape inference cannot merge N and M.
    model = _save([helper.make_node("MatMul", ["a", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["out"])],
                  [_tensor("a", ["N", 4]), _tensor("b", ["M", 4])], [_tensor("out", None)], tmp_path / "two.onnx",
                  initializers=[w])
    arrays = {k: rng.standard_normal((32, 4)).astype(np.float32) for k in ("a", "b")}
    np.savez(tmp_path / "calib.npz", **arrays)
    stats = get_pass("int8-static")().run(model, Context(workdir=tmp_path / "w", data=str(tmp_path / "calib.npz"))).stats
    assert stats["preprocessed"] is True
    assert stats["preprocess_note"] == ("done without symbolic shape inference, which failed: "
                                        "Exception: Incomplete symbolic shape inference"), stats


# ---- thread counts and exporter loggers come back ------------------------------------------------------


def test_torch_threads_restores_the_count_also_on_error():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError), torch_threads(other):
        raise ValueError
    assert torch.get_num_threads() == before
    with pytest.raises(SlimkitError, match="threads is 0"), torch_threads(0):
        pass


def test_fit_trains_at_the_given_threads_and_gives_the_count_back():
    from slimkit.demo_models import DigitsMLP
    from slimkit.train import TrainConfig, fit

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    seen = []

    def loss_fn(module, batch):
        seen.append(torch.get_num_threads())
        return torch.nn.functional.cross_entropy(module(**batch.feed), batch.labels)

    x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    fit(DigitsMLP(), loss_fn, ({"x": x}, np.arange(16) % 10), TrainConfig(epochs=1, batch_size=8), threads=other)
    assert seen == [other, other] and torch.get_num_threads() == before


def test_onnx_export_restores_the_exporter_loggers():
    from slimkit.demo_models import DigitsMLP
    from slimkit.formats import load
    from slimkit.passes.convert import EXPORT_LOGGERS, export_onnx

    loggers = [logging.getLogger(n) for n in EXPORT_LOGGERS]
    loggers[0].setLevel(logging.INFO)
    before = [lg.level for lg in loggers]
    try:
        proto = export_onnx(load(DigitsMLP()), exporter="legacy", dynamic=False, opset=None)
        assert [lg.level for lg in loggers] == before
    finally:
        loggers[0].setLevel(logging.NOTSET)
    assert len(proto.graph.node) > 0
