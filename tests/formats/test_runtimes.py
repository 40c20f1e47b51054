"""`bench --runtime`: one ONNX file measured on ONNX Runtime and OpenVINO side by side; `inspect`'s hardware lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimkit.cli import main
from slimkit.hardware import resolve_openvino_precision


def _data(tmp_path: Path, n: int = 48) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "d.npz"
    np.savez(path, features=rng.standard_normal((n, 4)).astype(np.float32), labels=rng.integers(0, 3, n))
    return path


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_bench_one_onnx_file_on_both_runtimes(foreign_onnx, foreign_forward_fn, tmp_path, capsys):
    path, weights = foreign_onnx
    data = _data(tmp_path)
    code = main(["bench", str(path), "--runtime", "onnxruntime,openvino", "--reference", str(path),
                 "--data", str(data), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = _json_lines(captured.out)
    assert [r["reference"] for r in rows] == [True, False, False]
    ort_row, ov_row = rows[1:]
    assert ort_row["label"] == f"{path} [onnxruntime]" and ort_row["runtime"] == "onnxruntime"
    assert ov_row["label"] == f"{path} [openvino]" and ov_row["kind"] == "openvino"
    # OpenVINO compiled the ONNX file itself at the precision slimkit picks for this CPU, and says which.
    expected = resolve_openvino_precision("auto")[0]
    assert ov_row["runtime"].startswith("openvino") and ov_row["runtime"] == f"openvino {expected}"
    assert ort_row["size_bytes"] == ov_row["size_bytes"] == path.stat().st_size
    for row in (ort_row, ov_row):
        assert row["fidelity"]["cosine_mean"] >= 0.9999, row["label"]
        assert row["latency_ms"]["p50"] > 0
        assert "vs_reference" in row
    # Both runtimes scored the same predictions on the labelled data: the numpy forward pass's.
    x = np.load(data)["features"]
    want = float(np.mean(foreign_forward_fn(weights, x).argmax(1) == np.load(data)["labels"]))
    assert ort_row["metrics"]["accuracy"] == pytest.approx(want)
    assert ov_row["metrics"]["accuracy"] == pytest.approx(want)


def test_bench_runtimes_api_takes_a_proto_only_model_and_a_comma_string(foreign_onnx, tmp_path):
    import onnx

    from slimkit.api import bench
    from slimkit.models.base import OnnxModel

    path, _ = foreign_onnx
    model = OnnxModel.from_proto(onnx.load(str(path)))  # no file: OpenVINO gets one written for it
    model.source = "in-memory"
    results = bench([model], data=str(_data(tmp_path, 16)), runtimes="openvino")
    assert [(m.label, m.kind) for m in results] == [("in-memory [openvino]", "openvino")]
    assert results[0].runtime == f"openvino {resolve_openvino_precision('auto')[0]}"
    assert results[0].size_bytes == model.path.stat().st_size > 0


def test_bench_refuses_an_unknown_runtime_in_one_line(foreign_onnx, capsys):
    path, _ = foreign_onnx
    code = main(["bench", str(path), "--runtime", "onnxruntime,tensorrt", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "tensorrt" in lines[0] and "onnxruntime, openvino" in lines[0]


def test_bench_runtime_refuses_a_model_that_is_not_onnx(foreign_onnx, tmp_path, capsys):
    from slimkit.hardware import import_openvino

    ov = import_openvino()
    path, _ = foreign_onnx
    xml = tmp_path / "ir" / "model.xml"
    ov.save_model(ov.convert_model(str(path)), str(xml))
    code = main(["bench", str(xml), "--runtime", "openvino", "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --runtime measures ONNX models only")
    assert str(xml) in lines[0]


def test_inspect_reports_the_cpu_and_what_slimkit_does_with_it(foreign_onnx, capsys):
    path, _ = foreign_onnx
    assert main(["inspect", str(path), "--json"]) == 0
    hardware = json.loads(capsys.readouterr().out)["hardware"]
    expected = resolve_openvino_precision("auto")[0]
    assert hardware["openvino_precision"] == expected
    assert hardware["openvino_precision_reason"].startswith("auto:")
    assert "FP32" in hardware["openvino_capabilities"]
    assert hardware["int8_kernels"]
    if Path("/proc/cpuinfo").exists():
        flags = hardware["cpu_flags"]
        assert isinstance(flags, dict) and "avx2" in flags and "amx_tile" in flags
        features = hardware["features"]
        assert list(features) == ["AVX2", "AVX-512", "VNNI", "BF16", "AMX", "FP16"]
        assert features["AVX2"] == flags["avx2"] and features["AMX"] == flags["amx_tile"]
        assert features["VNNI"] == (flags["avx512_vnni"] or flags["avx_vnni"])

    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "int8 kernels: " in out
    assert f"OpenVINO: {expected} (auto:" in out
    assert "CPU features: AVX2 " in out and "AMX " in out


def test_bench_runtime_openvino_without_the_extra_names_it(foreign_onnx, monkeypatch, capsys):
    import sys

    path, _ = foreign_onnx
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the openvino extra were not installed
    code = main(["bench", str(path), "--runtime", "onnxruntime,openvino", "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'slimkit[openvino]'" in lines[0]
