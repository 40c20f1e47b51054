"""Report package: flags, ratios, JSON safety, HTML escaping and charts, atomic writes, rich tables."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from slimkit.models.base import ModelKind
from slimkit.report import (
    build_report,
    compute_flags,
    environment,
    measurement_table,
    print_report,
    render_bundle_html,
    render_html,
    to_jsonable,
    write_report,
    write_report_bundle,
)
from slimkit.report.environment import parse_cpuinfo
from slimkit.report.format import human_size

MB = 1_000_000


def meas(label, *, size=100 * MB, p50=10.0, p90=12.0, fidelity=None, accuracy=None, generated=False,
         runtime="onnxruntime"):
    """A measurement dict shaped like Measurement.as_dict()."""
    return {
        "label": label, "model": label, "kind": "onnx", "runtime": runtime, "size_bytes": size, "params": None,
        "latency_ms": {"p50": p50, "p90": p90, "mean": p50, "runs": 50, "throughput_per_s": 1000 / p50},
        "batch_size": 1, "threads": 2,
        "data": {"source": "random" if generated else "digits", "samples": 64, "generated": generated},
        "fidelity": fidelity, "metrics": {} if accuracy is None else {"accuracy": accuracy},
    }


GOOD_FID = {"cosine_mean": 0.9999, "cosine_min": 0.999, "max_abs_err": 1e-3, "mean_abs_err": 1e-4,
            "samples": 64, "top1_agreement": 1.0}


def fid(**overrides):
    return {**GOOD_FID, **overrides}


def flag_ids(measurements, ref="ref"):
    return [f["flag"] for f in compute_flags(measurements, ref)]


# --- flags -------------------------------------------------------------------------------------------

def test_clean_candidate_has_no_flags():
    ref = meas("ref", accuracy=0.95)
    cand = meas("cand", size=50 * MB, p50=5.0, fidelity=fid(), accuracy=0.95)
    assert compute_flags([ref, cand], "ref") == []


def test_smaller_not_faster_fires_and_not():
    ref = meas("ref")
    assert flag_ids([ref, meas("c", size=50 * MB, p50=9.6, fidelity=fid())]) == ["smaller-not-faster"]
    assert flag_ids([ref, meas("c", size=50 * MB, p50=9.4, fidelity=fid())]) == []  # faster enough
    assert flag_ids([ref, meas("c", size=95 * MB, p50=10.0, fidelity=fid())]) == []  # not smaller enough


def test_slower_fires_and_not():
    ref = meas("ref")
    assert "slower" in flag_ids([ref, meas("c", p50=11.5, fidelity=fid())])
    assert "slower" not in flag_ids([ref, meas("c", p50=10.9, fidelity=fid())])


@pytest.mark.parametrize("field,bad,ok", [
    ("cosine_mean", 0.98, 0.995),
    ("cosine_min", 0.90, 0.96),
    ("top1_agreement", 0.97, 0.995),
])
def test_fidelity_drop_each_metric(field, bad, ok):
    ref = meas("ref")
    flags = compute_flags([ref, meas("c", fidelity=fid(**{field: bad}))], "ref")
    assert [f["flag"] for f in flags] == ["fidelity-drop"]
    name = {"cosine_mean": "cosine mean", "cosine_min": "cosine min", "top1_agreement": "top-1 agreement"}[field]
    assert f"{name} {bad:.4f}" in flags[0]["message"]
    assert flag_ids([ref, meas("c", fidelity=fid(**{field: ok}))]) == []


def test_faster_but_off_needs_both_speed_and_drift():
    ref = meas("ref")
    assert flag_ids([ref, meas("c", p50=5.0, fidelity=fid(cosine_mean=0.9))]) == ["fidelity-drop", "faster-but-off"]
    assert flag_ids([ref, meas("c", p50=5.0, fidelity=fid())]) == []
    assert flag_ids([ref, meas("c", p50=9.8, fidelity=fid(cosine_mean=0.9))]) == ["fidelity-drop"]
    message = compute_flags([ref, meas("c", p50=5.0, fidelity=fid(cosine_mean=0.9))], "ref")[1]["message"]
    assert "faster" in message and "not faithful" in message


def test_accuracy_drop_fires_and_not():
    ref = meas("ref", accuracy=0.95)
    assert flag_ids([ref, meas("c", fidelity=fid(), accuracy=0.93)]) == ["accuracy-drop"]
    assert flag_ids([ref, meas("c", fidelity=fid(), accuracy=0.945)]) == []
    assert flag_ids([meas("ref"), meas("c", fidelity=fid(), accuracy=0.5)]) == []  # reference has no accuracy


def test_generated_inputs_fires_and_not():
    ref = meas("ref", generated=True)
    assert flag_ids([ref, meas("c", fidelity=fid(), generated=True)]) == ["generated-inputs"]
    assert flag_ids([ref, meas("c", fidelity=fid(), generated=False)]) == []
    assert flag_ids([ref, meas("c", fidelity=None, generated=True)]) == []  # no fidelity to doubt


def test_reference_is_never_flagged_and_missing_fields_skip():
    ref = meas("ref", p50=10.0, fidelity=fid(cosine_mean=0.5), generated=True)
    assert compute_flags([ref], "ref") == []
    bare = {"label": "c"}
    assert compute_flags([meas("ref"), bare], "ref") == []
    no_latency = meas("c", size=10 * MB, fidelity=fid())
    no_latency["latency_ms"] = {}
    assert compute_flags([meas("ref"), no_latency], "ref") == []
    error_fid = meas("c", fidelity={"error": "output shapes differ"})
    assert [f["flag"] for f in compute_flags([meas("ref"), error_fid], "ref")] == ["output-mismatch"]


def test_without_reference_only_absolute_flags():
    cand = meas("c", p50=50.0, size=MB, fidelity=fid(cosine_mean=0.9), generated=True)
    assert flag_ids([cand], ref=None) == ["fidelity-drop", "generated-inputs"]
    assert flag_ids([cand], ref="missing") == ["fidelity-drop", "generated-inputs"]


def test_flags_accept_numpy_scalars():
    ref = meas("ref", p50=np.float64(10.0), size=np.int64(100 * MB))
    cand = meas("c", p50=np.float32(20.0), fidelity=fid(cosine_mean=np.float32(0.5)))
    assert flag_ids([ref, cand]) == ["slower", "fidelity-drop"]


# --- build_report ------------------------------------------------------------------------------------

def _report(measurements=None, **kw):
    measurements = measurements if measurements is not None else [
        meas("ref", size=100 * MB, p50=10.0, accuracy=0.95),
        meas("half", size=50 * MB, p50=8.0, fidelity=fid(), accuracy=0.95),
        meas("slow", size=200 * MB, p50=15.0, fidelity=fid()),
    ]
    return build_report(command="slimkit convert m --recipe onnx", input_model={"source": "m.pt", "kind": "torch"},
                        measurements=measurements, reference_label="ref", **kw)


def test_ratios_per_candidate():
    report = _report()
    ratios = {r["model"]: r for r in report["ratios"]}
    assert set(ratios) == {"half", "slow"}
    assert ratios["half"]["size_ratio"] == pytest.approx(0.5)
    assert ratios["half"]["p50_ratio"] == pytest.approx(0.8)
    assert ratios["slow"]["size_ratio"] == pytest.approx(2.0)
    assert ratios["slow"]["p50_ratio"] == pytest.approx(1.5)
    assert [f["flag"] for f in report["flags"]] == ["slower"]


def test_ratio_skipped_when_missing():
    cand = meas("c", size=50 * MB)
    cand["latency_ms"] = {}
    report = _report([meas("ref"), cand])
    assert report["ratios"] == [{"model": "c", "size_ratio": pytest.approx(0.5)}]


def test_build_report_json_round_trip_with_numpy_and_paths():
    ref = meas("ref", size=np.int64(100 * MB), p50=np.float64(10.0), accuracy=np.float32(0.9))
    cand = meas("c", size=np.int64(25 * MB), p50=np.float32(5.0),
                fidelity=fid(cosine_mean=np.float32(0.999), max_abs_err=np.float64("nan")))
    report = _report(
        [ref, cand],
        recipe={"name": "onnx", "passes": [{"pass": "to-onnx", "opset": np.int32(18)}]},
        passes=[{"pass": "to-onnx", "kind_in": ModelKind.TORCH, "kind_out": ModelKind.ONNX, "seconds": 1.5,
                 "stats": {"nodes": np.int64(42), "shape": np.array([1, 3])}}],
        artifact={"path": Path("/tmp/out/model.onnx"), "size_bytes": np.int64(25 * MB)},
        notes=["hello"], threads=3,
    )
    text = json.dumps(report, allow_nan=False)  # strict JSON: would raise on numpy types or NaN
    back = json.loads(text)
    assert back == report
    assert back["schema"] == "slimkit.report/1"
    assert back["created"].endswith("Z")
    assert back["passes"][0]["kind_in"] == "torch"
    assert back["passes"][0]["stats"] == {"nodes": 42, "shape": [1, 3]}
    assert back["artifact"]["path"] == "/tmp/out/model.onnx"
    assert back["measurements"][1]["fidelity"]["max_abs_err"] is None
    assert back["ratios"][0]["size_ratio"] == pytest.approx(0.25)
    assert back["environment"]["threads"] == 3
    assert back["reference"] == "ref" and back["notes"] == ["hello"]


def test_missing_reference_is_noted():
    report = build_report(command="c", input_model={}, measurements=[meas("a")], reference_label="nope")
    assert report["ratios"] == []
    assert any("nope" in n for n in report["notes"])


def test_to_jsonable_scalars():
    assert to_jsonable({1: np.bool_(True), "x": (np.float16(0.5), float("inf"))}) == {"1": True, "x": [0.5, None]}
    assert type(to_jsonable(np.int8(3))) is int


# --- environment -------------------------------------------------------------------------------------

def test_parse_cpuinfo():
    text = ("processor\t: 0\nmodel name\t: Test CPU @ 3GHz\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"
            "processor\t: 1\nmodel name\t: other\n")
    model, flags = parse_cpuinfo(text)
    assert model == "Test CPU @ 3GHz"
    assert flags == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False, "amx_tile": False}
    assert parse_cpuinfo("") == (None, None)


# In a fresh interpreter: which of the reported packages environment() tries to import. slimkit itself
# imports torch and numpy, so the watched ones are those not yet loaded (onnx, onnxruntime, openvino, ...);
# a finder at the front of sys.meta_path sees every attempt, installed package or not.
_IMPORT_PROBE = """
import importlib.abc, json, sys
from slimkit.report.environment import PACKAGES, environment
watched = {name.replace("-", "_") for name in PACKAGES} - set(sys.modules)
tried = set()
class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in watched:
            tried.add(fullname.partition(".")[0])
        return None
sys.meta_path.insert(0, Recorder())
env = environment(4)
print(json.dumps({"watched": sorted(watched), "tried": sorted(tried), "packages": env["packages"]}))
"""


def test_environment_reads_versions_without_importing():
    import subprocess
    from importlib import metadata

    env = environment(4)
    assert env["threads"] == 4
    assert env["logical_cores"] >= 1
    assert env["python"].count(".") == 2
    assert "numpy" in env["packages"] and "not-a-package" not in env["packages"]
    assert all(isinstance(v, str) for v in env["packages"].values())
    json.dumps(env)
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, timeout=120,
                         check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"onnx", "onnxruntime", "openvino", "transformers"} <= set(probe["watched"]), probe["watched"]
    assert probe["tried"] == []  # versions come from package metadata, not from importing the packages
    for name, version in probe["packages"].items():
        assert version == metadata.version(name)


# --- html --------------------------------------------------------------------------------------------

def test_html_escapes_labels_and_has_bars():
    evil = '<script>alert("x")</script>'
    report = _report([meas("ref"), meas(evil, size=50 * MB, p50=12.0, fidelity=fid(cosine_mean=0.5))],
                     notes=["a <b>note</b>"])
    page = render_html(report)
    assert "<script>" not in page and "<b>note" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("<svg") == 2  # size and p50 charts
    assert page.count('class="bar ') == 4  # reference + candidate in each chart
    assert "0.50x" in page and "1.20x" in page
    assert "fidelity-drop" in page and "slower" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing external
    assert "<link" not in page and "src=" not in page


def test_html_without_reference_has_no_charts():
    page = render_html(build_report(command="c", input_model={"source": "m"}, measurements=[meas("a")],
                                    reference_label=None))
    assert "<svg" not in page and "No ratios to chart" in page


# --- write_report ------------------------------------------------------------------------------------

def test_write_report_atomic(tmp_path):
    report = _report(passes=[{"pass": "fp16", "seconds": 0.2, "stats": {"kept_fp32_ops": 3}}])
    folder = tmp_path / "out"
    json_path, html_path = write_report(folder, report)
    assert json_path == folder / "report.json" and html_path == folder / "report.html"
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json"]
    assert json.loads(json_path.read_text()) == report
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    write_report(folder, report)  # overwriting works and still leaves no temp files
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json"]


def test_write_report_failure_leaves_old_files(tmp_path, monkeypatch):
    write_report(tmp_path, _report())
    before = (tmp_path / "report.json").read_text()
    import slimkit.fileio as fileio

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", boom)
    changed = copy.deepcopy(_report())
    changed["notes"] = ["changed"]
    with pytest.raises(OSError):
        write_report(tmp_path, changed)
    assert (tmp_path / "report.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


def test_write_report_bundle(tmp_path):
    a = _report()
    b = build_report(command="demo", input_model={"model": "digits-<cnn>"}, reference_label="pytorch",
                     measurements=[meas("pytorch"), meas("onnx", size=40 * MB, fidelity=fid())],
                     passes=[{"pass": "to-fp16", "artifact": "fp16", "seconds": 0.1, "stats": {}}])
    json_path, html_path = write_report_bundle(tmp_path, [a, b], title="slimkit demo", notes=["n1"],
                                               schema="slimkit.demo/1")
    data = json.loads(json_path.read_text())
    assert data["schema"] == "slimkit.demo/1" and data["notes"] == ["n1"] and data["reports"] == [a, b]
    page = html_path.read_text()
    assert "digits-&lt;cnn&gt;" in page and "<cnn>" not in page
    assert "id='r0'" in page and "id='r1'" in page and 'id="r1-measurements"' in page
    assert page.count("<svg") == 4 and page.count(">Environment<") == 1
    assert "fp16: to-fp16" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]
    assert "<svg" not in render_bundle_html([], title="empty")


# --- rich tables -------------------------------------------------------------------------------------

def _render(renderable_or_report, printer=None):
    console = Console(record=True, width=200)
    if printer is not None:
        printer(renderable_or_report, console)
    else:
        console.print(renderable_or_report)
    return console.export_text()


def test_measurement_table_renders_labels_ratios_sizes():
    report = _report()
    text = _render(measurement_table(report))
    for needle in ("ref", "half", "slow", "0.50x", "0.80x", "2.00x", "1.50x", "100.0 MB", "50.0 MB", "slower",
                   "95.0%"):
        assert needle in text, needle
    assert "–" in text  # empty cells (the reference has no fidelity)


def test_table_does_not_interpret_markup_in_labels():
    text = _render(measurement_table(_report([meas("ref"), meas("[bold]x[/bold]", fidelity=fid())])))
    assert "[bold]x[/bold]" in text


def test_print_report_shows_passes_and_flag_messages():
    report = _report(passes=[{"pass": "to-onnx", "inserted": True, "kind_in": "torch", "kind_out": "onnx",
                              "seconds": 1.234, "stats": {"exporter": "dynamo", "opset": 18}}])
    text = _render(report, printer=print_report)
    assert "to-onnx (inserted)" in text and "exporter=dynamo, opset=18" in text and "1.23" in text
    assert "[slower]" in text and "1.50x that of the reference" in text


def test_human_size():
    assert human_size(512) == "512 B"
    assert human_size(87_000_000) == "87.0 MB"
    assert human_size(1_500) == "1.5 kB"
    assert human_size(None) == "–"


def test_training_curves_from_pass_history():
    from slimkit.report.format import training_curves
    from slimkit.report.html import line_chart

    report = {"passes": [
        {"pass": "onnx-cleanup", "stats": {}},
        {"pass": "prune", "stats": {"training": {"history": [
            {"epoch": 1, "steps": 10, "lr": 0.1, "loss": 2.0, "hard": 1.0, "soft": 3.0, "accuracy": 0.5},
            {"epoch": 2, "steps": 20, "lr": 0.05, "loss": 1.0, "hard": 0.5, "soft": 1.5, "accuracy": 0.9}]}}},
    ]}
    curves = training_curves(report)
    assert curves == [("prune", {"loss": [2.0, 1.0], "hard": [1.0, 0.5], "soft": [3.0, 1.5],
                                 "accuracy": [0.5, 0.9]})]
    svg = line_chart("prune", curves[0][1], "note")
    assert svg.count("<polyline") == 4 and "2 → 1" in svg and "<script" not in svg
