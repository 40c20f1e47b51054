"""`slimkit search` end to end on the digits MLP: the store, best/, the held-out final figures, the report
rebuilt from the store, `kill -9` and --resume, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from slimkit import cli
from slimkit.demo_models import trained_digits_model
from slimkit.searching import search
from slimkit.searching.store import import_optuna
from slimkit.searching.world import split_data
from slimkit.settings import MeasureSettings

DATA = "sklearn:digits:test"  # the MLP never trained on these (it learned from the train split)


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory, digits_cache):
    root = tmp_path_factory.mktemp("search-mlp")
    module = trained_digits_model("mlp", digits_cache)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(root / "mlp.safetensors"))
    return root


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "slimkit.demo_models:DigitsMLP", "--weights", str(root / "mlp.safetensors"), "--data", DATA,
            "--runtimes", "onnxruntime", "-o", str(out), *extra]


@pytest.fixture(scope="module")
def finished(mlp_files):
    out = mlp_files / "search"
    code = cli.main(_args(mlp_files, out, "--max-drop", "0.02", "--budget-trials", "4"))
    assert code == 0
    return out


def _rows(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


def test_every_trial_is_stored_with_its_record(finished):
    optuna = import_optuna()
    study = optuna.load_study(study_name="slimkit-search", storage=f"sqlite:///{finished / 'search.db'}")
    counted = [t for t in study.trials if (t.user_attrs.get("record") or {}).get("counted")]
    assert len(counted) == 4
    for t in counted:
        record = t.user_attrs["record"]
        assert record["passes"] and record["passes"][0]["pass"] == "to-onnx"
        assert record["duration_s"] > 0 and record["label"].startswith("onnxruntime")
        if record["state"] == "complete":
            assert (finished / record["artifact"]).is_file()
            v = record["validation"]
            assert v["latency_ms"] > 0 and v["size_bytes"] > 0 and 0 < v["metric"] <= 1
            assert t.values is not None and len(t.values) == 1


def test_best_holds_the_recommended_artifact_and_its_report(finished):
    report = json.loads((finished / "report.json").read_text())
    rec = report["recommendation"]
    assert rec["meets_floor"] is True and rec["trial"] is not None
    trial = json.loads((finished / "best" / "trial.json").read_text())
    best_files = {p.name for p in (finished / "best").iterdir()}
    assert {"model.onnx", "report.json", "report.html"} <= best_files
    # best/ follows the best on validation; the recommendation re-ranks the finalists on one node
    assert trial["number"] in [e["trial"] for e in report["final_measurement"]["entries"]]
    assert rec["reason"] and rec["label"] in rec["reason"]
    assert (finished / "report.html").stat().st_size > 100_000  # plotly.js inlined


def test_final_figures_come_from_data_no_trial_saw(finished, mlp_files):
    report = json.loads((finished / "report.json").read_text())
    split = report["data"]
    assert split["held_back"] is True
    final = report["final_measurement"]
    assert final["samples"] == split["evaluation_samples"] > 0
    assert split["fit"] + split["validation"] + split["evaluation_samples"] == split["samples"]
    for entry in final["entries"]:
        trial = next(t for t in report["trials"] if t["number"] == entry["trial"])
        assert trial["validation"]["samples"] == split["validation"]
        assert entry["samples"] == final["samples"]
    # few held-out samples: the report warns, with the interval
    assert any("95% interval" in w for w in report["warnings"])


def test_the_three_parts_are_disjoint(digits_mlp):
    from slimkit.formats import load

    model = load(digits_mlp, data=DATA)
    splits = split_data(model, DATA, None, MeasureSettings())
    fit, val, held = set(splits.fit.indices), set(splits.validation.indices), set(splits.evaluation.indices)
    assert fit and val and held and not (fit & val) and not (fit & held) and not (val & held)
    assert len(fit | val | held) == splits.record["samples"]


def test_report_is_rebuilt_from_the_store_alone(finished, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    before = json.loads((copy / "report.json").read_text())
    (copy / "report.json").unlink()
    (copy / "report.html").unlink()
    assert cli.main(["report", str(copy)]) == 0
    after = json.loads((copy / "report.json").read_text())
    assert after["recommendation"]["trial"] == before["recommendation"]["trial"]
    assert [t["number"] for t in after["trials"]] == [t["number"] for t in before["trials"]]
    assert (copy / "report.html").is_file()
    assert "recommended: trial" in capsys.readouterr().out


def test_kill_9_then_resume_loses_no_completed_trial(mlp_files, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "slimkit.cli", *_args(mlp_files, out, "--max-drop", "0.02", "--budget-trials", "5")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "search.db"
    deadline = time.time() + 400
    try:
        while time.time() < deadline:
            if db.exists() and sum(state == "COMPLETE" for _n, state in _safe_rows(db)) >= 2:
                break
            assert proc.poll() is None, "the search ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("two trials did not complete in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    optuna = import_optuna()
    study = optuna.load_study(study_name="slimkit-search", storage=f"sqlite:///{db}")
    done_before = {t.number: (t.params, t.values) for t in study.trials if t.state.name == "COMPLETE"}
    assert len(done_before) >= 2
    assert cli.main(_args(mlp_files, out, "--max-drop", "0.02", "--budget-trials", "5", "--resume")) == 0
    study = optuna.load_study(study_name="slimkit-search", storage=f"sqlite:///{db}")
    after = {t.number: t for t in study.trials}
    for number, (params, values) in done_before.items():  # nothing completed was lost or changed
        assert after[number].state.name == "COMPLETE"
        assert after[number].params == params and after[number].values == values
    counted = [t for t in study.trials if (t.user_attrs.get("record") or {}).get("counted")]
    assert len(counted) == 5
    interrupted = [t for t in study.trials if (t.user_attrs.get("record") or {}).get("state") == "interrupted"]
    for t in interrupted:  # the trial that was running is recorded, and its candidate queued again
        assert t.state.name == "FAIL"
        queued = [o for o in study.trials if o.number > t.number
                  and t.params in (o.params, o.system_attrs.get("fixed_params"))]  # a queued trial holds them there
        assert queued
    assert (out / "best" / "model.onnx").is_file()


def _safe_rows(db: Path) -> list[tuple[int, str]]:
    try:
        return _rows(db)
    except sqlite3.Error:  # created but not yet initialised by the other process
        return []


def test_floor_never_met_saves_the_closest_and_exits_3(mlp_files, tmp_path, capsys):
    out = tmp_path / "unmet"
    # cosine exactly 1 is out of reach for the first (fp16) candidate
    code = cli.main(_args(mlp_files, out, "--min-cosine", "1.0", "--budget-trials", "1"))
    assert code == 3
    err = capsys.readouterr().err
    assert "no trial met the floor" in err and "best" in err
    report = json.loads((out / "report.json").read_text())
    rec = report["recommendation"]
    assert rec["meets_floor"] is False and "below the floor" in rec["shortfall"]
    assert rec["closest_trial"] == 0 and (out / "best" / "model.onnx").is_file()
    assert "No trial met the floor" in rec["reason"]
    trial = json.loads((out / "best" / "trial.json").read_text())
    assert trial["meets_floor"] is False


@pytest.mark.parametrize(("extra", "message"), [
    (["--max-drop", "0.01", "--budget-trials", "0"], "runs no trial"),
    (["--max-drop", "0.01", "--budget-minutes", "0"], "leaves no time"),
    (["--max-drop", "0.01", "--runtimes", "tensorrt"], "not a runtime slimkit can search"),
    (["--max-drop", "0.01", "--executor", "ray", "--address", "ray://127.0.0.1:9"], "cannot be reached"),
])
def test_bad_options_are_one_line_before_any_work(mlp_files, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    started = time.perf_counter()
    assert cli.main(_args(mlp_files, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()  # nothing started, nothing written
    assert time.perf_counter() - started < 20


def test_an_unwritable_folder_is_refused(mlp_files, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(_args(mlp_files, blocker / "out", "--max-drop", "0.01")) == 2
    assert "cannot write" in capsys.readouterr().err
    assert blocker.read_text() == "x"


def test_resume_refuses_another_floor_or_a_foreign_store(finished, mlp_files, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    db_bytes = (copy / "search.db").read_bytes()
    assert cli.main(_args(mlp_files, copy, "--max-drop", "0.05", "--budget-trials", "6", "--resume")) == 2
    assert "another floor" in capsys.readouterr().err
    assert (copy / "search.db").read_bytes() == db_bytes  # nothing overwritten
    # without --resume, an existing search is not touched either
    assert cli.main(_args(mlp_files, copy, "--max-drop", "0.02")) == 2
    assert "already holds a search" in capsys.readouterr().err
    optuna = import_optuna()  # a store written by another store version: refused, not migrated
    study = optuna.load_study(study_name="slimkit-search", storage=f"sqlite:///{copy / 'search.db'}")
    study.set_user_attr("store_version", 999)
    db_bytes = (copy / "search.db").read_bytes()
    assert cli.main(_args(mlp_files, copy, "--max-drop", "0.02", "--budget-trials", "6", "--resume")) == 2
    assert "store version 999" in capsys.readouterr().err
    assert (copy / "search.db").read_bytes() == db_bytes
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "search.db").write_bytes(os.urandom(4096))
    assert cli.main(_args(mlp_files, junk, "--max-drop", "0.02", "--resume")) == 2
    assert "not a search store" in capsys.readouterr().err


def test_resume_refuses_a_store_of_another_model(finished, mlp_files, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    other = trained_digits_model("mlp", tmp_path / "cache", seed=1, epochs=1)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    args = _args(mlp_files, copy, "--max-drop", "0.02", "--budget-trials", "6", "--resume")
    args[args.index("--weights") + 1] = str(tmp_path / "other.safetensors")
    assert cli.main(args) == 2
    assert "another model or data" in capsys.readouterr().err


def test_python_api_returns_the_same_result_object(digits_mlp, tmp_path):
    result = search(digits_mlp, data={"x": _digits()[0], "labels": _digits()[1]}, output=tmp_path / "api",
                    max_drop=0.02, budget_trials=2, runtimes="onnxruntime", objective="size")
    assert result.met and result.recommended is not None
    assert result.report["objective"] == "size"
    sizes = {t["number"]: t["validation"]["size_ratio"] for t in result.report["trials"] if t.get("validation")}
    assert len(sizes) == 2
    assert result.best_dir.joinpath("model.onnx").is_file()


def _digits():
    from slimkit.bundled_data import digits_arrays

    x, y = digits_arrays("test")
    return x.astype(np.float32), y


def test_the_real_report_opens_in_chromium_with_every_trial_drawn(finished):
    from playwright.sync_api import sync_playwright

    from tests.searching.test_report_html import _chromium

    report = json.loads((finished / "report.json").read_text())
    plotted = [t for t in report["trials"] if t["state"] == "complete" and (t.get("validation") or {}).get("latency_ms")]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((finished / "report.html").as_uri())
            page.wait_for_selector("#pareto-chart .scatterlayer .trace path.point", timeout=15_000)
            points = page.locator("#pareto-chart path.point").count()
            rows = page.locator("table tbody tr").count()
        finally:
            browser.close()
    assert errors == []
    assert points == len(plotted) + 2  # every measured trial, the baseline and the recommended star
    assert rows >= len(report["trials"])


def test_budget_minutes_stops_the_search(mlp_files, tmp_path):
    out = tmp_path / "timed"
    started = time.perf_counter()
    assert cli.main(_args(mlp_files, out, "--max-drop", "0.02", "--budget-minutes", "0.2")) == 0
    wall = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text())
    ran = [t for t in report["trials"] if t["state"] in ("complete", "pruned", "failed")]
    assert 1 <= len(ran) < 10  # stopped by the clock, long before the 10 queued cheap candidates ran out
    assert report["budget"] == {"trials": None, "minutes": 0.2}
    # no trial starts after the deadline: the last one may run past it, then the finalists are re-measured
    assert sum(t["duration_s"] for t in ran[:-1]) <= 0.2 * 60 + 1
    assert wall < 0.2 * 60 + report["overhead"]["setup_s"] + max(t["duration_s"] for t in ran) + 120
