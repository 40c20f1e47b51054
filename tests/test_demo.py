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
    compressed = {"digits-mlp": ["int8-static", "cluster-16", "deep-compression"],
                  "digits-cnn": ["int8-static", "prune-channels"]}
    for report, title in zip(saved["reports"], ("digits-mlp", "digits-cnn"), strict=True):
        labels = [m["label"] for m in report["measurements"]]
        assert labels == ["pytorch", "onnx", "fp16", "openvino", "tflite"] + compressed[title]
        by_label = {m["label"]: m for m in report["measurements"]}
        assert by_label["openvino"]["runtime"].startswith("openvino ") and by_label["tflite"]["runtime"] == "litert"
        for m in report["measurements"][1:5]:  # conversions: the same model
            assert m["fidelity"]["top1_agreement"] >= 0.99
        for m in report["measurements"][1:]:
            assert m["metrics"]["accuracy"] >= 0.95, m["label"]
            assert m["latency_ms"]["p50"] > 0
        fp16 = report["measurements"][2]
        assert fp16["size_bytes"] < 0.6 * report["measurements"][1]["size_bytes"]
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "digits-cnn" in html
    assert (out / "digits-mlp" / "openvino" / "model.xml").exists()
    assert (out / "digits-cnn" / "tflite" / "model.tflite").exists()
    mlp = {m["label"]: m for m in saved["reports"][0]["measurements"]}
    assert mlp["deep-compression"]["size_bytes"] * 40 < mlp["pytorch"]["size_bytes"]
    assert (out / "digits-mlp" / "deep-compression" / "model.slim").exists()
    cnn_passes = [p["pass"] for p in saved["reports"][1]["passes"] if p.get("artifact") == "prune-channels"]
    assert cnn_passes[0] == "prune-structured"
    assert not (out / ".work").exists()
