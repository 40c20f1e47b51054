"""The demo on the digits models (MiniLM is covered by test_minilm): every format measured, one report."""

from __future__ import annotations

import json

from slimkit.demo import run_demo


def test_demo_digits_writes_combined_report(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "demo-out"
    combined = run_demo(out, include_minilm=False)
    saved = json.loads((out / "report.json").read_text())
    assert saved["schema"] == combined["schema"] == "slimkit.demo/1"
    assert [r["input"]["model"] for r in saved["reports"]] == ["digits-mlp (PyTorch)", "digits-cnn (PyTorch)"]
    for report in saved["reports"]:
        labels = [m["label"] for m in report["measurements"]]
        assert labels == ["pytorch", "onnx", "fp16", "openvino", "tflite"]
        runtimes = {m["label"]: m["runtime"] for m in report["measurements"]}
        assert runtimes["openvino"] == "openvino" and runtimes["tflite"] == "litert"
        for m in report["measurements"][1:]:
            assert m["fidelity"]["top1_agreement"] >= 0.99
            assert m["metrics"]["accuracy"] >= 0.95
            assert m["latency_ms"]["p50"] > 0
        fp16 = report["measurements"][2]
        assert fp16["size_bytes"] < 0.6 * report["measurements"][1]["size_bytes"]
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "digits-cnn" in html
    assert (out / "digits-mlp" / "openvino" / "model.xml").exists()
    assert (out / "digits-cnn" / "tflite" / "model.tflite").exists()
    assert not (out / ".work").exists()
