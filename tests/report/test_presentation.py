"""How report.html and the terminal summary present a report: expandable pass stats, byte counts in kB/MB,
training curves without sentinel points or clipped labels, the measurements table's sticky first column,
the recipe's source and the run context (command line, evaluation data, data plan)."""

from __future__ import annotations

import html
import io
import re

import pytest
from rich.console import Console

from slimkit.report import build_report, print_report, render_bundle_html, render_html
from slimkit.report.format import summarize_stats, training_curves
from slimkit.report.html import line_chart

MB = 1_000_000


def meas(label, *, size=100 * MB, p50=10.0):
    return {
        "label": label, "model": label, "kind": "onnx", "runtime": "onnxruntime", "size_bytes": size,
        "latency_ms": {"p50": p50, "p90": p50 * 1.2, "mean": p50, "runs": 50},
        "batch_size": 1, "threads": 2, "data": {"source": "digits", "samples": 64, "generated": False},
        "fidelity": {"cosine_mean": 0.9999, "cosine_min": 0.999, "max_abs_err": 1e-3, "top1_agreement": 1.0},
        "metrics": {},
    }


def report_with(**extra):
    report = build_report(command="optimize", input_model={"source": "model.onnx"},
                          measurements=[meas("reference"), meas("int8", size=30 * MB, p50=6.0)],
                          reference_label="reference", **extra)
    return report


def terminal(report) -> str:
    out = io.StringIO()
    print_report(report, Console(file=out, width=170))
    return out.getvalue()


def visible_text(page: str) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded, whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", body)))


LONG_STATS = {"nodes_before": 412, "nodes_after": 388, "initializers_before": 140, "initializers_after": 136,
              "folded_constants": 17, "removed_identity": 9, "fused_patterns": ["conv-bn", "gemm-relu"],
              "last_key_cut_off": "zebra-value"}


# --- 1. truncated stats expand in the page; the terminal keeps the short line -------------------------

def test_cut_off_stats_open_in_details_with_the_full_stats():
    report = report_with(passes=[{"pass": "onnx-cleanup", "seconds": 0.5, "stats": LONG_STATS},
                                 {"pass": "fp16", "seconds": 0.1, "stats": {"converted": 12}}])
    short = summarize_stats(LONG_STATS)
    assert short.endswith("…") and "zebra-value" not in short

    page = render_html(report)
    details = re.findall(r"<details[^>]*>(.*?)</details>", page, flags=re.S)
    assert len(details) == 1  # only the cut-off line expands
    summary = re.search(r"<summary[^>]*>(.*?)</summary>", details[0], flags=re.S).group(1)
    assert html.unescape(summary) == short
    full = visible_text(details[0])
    for key, value in (("last_key_cut_off", "zebra-value"), ("removed_identity", "9"), ("nodes_after", "388")):
        assert re.search(rf"{key}\s*{value}", full), (key, full)
    assert "conv-bn, gemm-relu" in full or '"conv-bn", "gemm-relu"' in full
    assert "converted=12" in visible_text(page)

    text = terminal(report)
    assert short.rstrip("…") in text.replace("\n", "") or short[:40] in text
    assert "zebra-value" not in text and "<details" not in text


def test_skipped_pass_with_more_stats_expands():
    skipped = {"status": "skipped", "reason": "no weights to prune"}
    report = report_with(passes=[{"pass": "prune", "stats": {"checked": 14}, "outcome": skipped}])
    page = render_html(report)
    assert "<details" in page and re.search(r"checked\s*14", visible_text(page))
    assert "skipped: no weights to prune" in visible_text(page) and "skipped: no weights" in terminal(report)


def test_outcome_leads_the_stats_and_a_stat_is_never_read_as_skipped():
    missed = {"status": "missed", "reason": "accuracy drop 0.0700 > 0.01", "metric": "accuracy_drop",
              "measured": 0.07, "target": 0.01}
    report = report_with(passes=[
        {"pass": "int8-auto", "stats": {"layers": 3}, "outcome": missed},
        {"pass": "fake-quant", "stats": {"not_quantized": {}, "bits": 8}, "outcome": {"status": "done"}},
        {"pass": "to-onnx", "stats": {"skipped": []}},  # an older report's stray key is just a stat
    ])
    text = terminal(report)
    assert "target missed: accuracy drop 0.0700 > 0.01; layers=3" in text
    assert "not_quantized={}, bits=8" in text and "skipped: []" not in text
    assert "<details" not in render_html(report)


# --- 2. byte counts in kB / MB ---------------------------------------------------------------------

BYTE_STATS = {"path": "out/model.slim", "archive_bytes": 1_234_567, "fp32_weight_bytes": 4_400_000,
              "file_bytes_before": 2_048, "onnx_bytes": 640, "compression_vs_fp32_weights": 3.56}


def test_byte_counts_in_stats_read_in_kb_and_mb():
    line = summarize_stats(BYTE_STATS, limit=500)
    assert "archive_bytes=1.2 MB" in line and "fp32_weight_bytes=4.4 MB" in line
    assert "file_bytes_before=2.0 kB" in line and "onnx_bytes=640 B" in line
    assert "1234567" not in line and "compression_vs_fp32_weights=3.56" in line

    report = report_with(passes=[{"pass": "archive", "seconds": 0.2, "stats": BYTE_STATS}])
    text = terminal(report).replace("\n", " ")
    assert "archive_bytes=1.2 MB" in text and "1234567" not in text
    page = visible_text(render_html(report))
    assert "archive_bytes=1.2 MB" in page  # the short line
    assert re.search(r"fp32_weight_bytes\s*4\.4 MB", page)  # the full stats behind <details>
    assert "1234567" not in page.replace("1,234,567 bytes", "")


# --- 3. training curves: no sentinel point, end labels inside the viewBox -----------------------------

def distill_history():
    """Rows as fit() writes them for a distill/prune-recover pass: before the pass is ready, passes/recovery.py
    records score -2.0 (below any accuracy or cosine) so that no epoch before it can be picked."""
    return [
        {"epoch": 1, "steps": 10, "lr": 0.1, "loss": 2.0, "accuracy": 0.41, "score": -2.0},
        {"epoch": 2, "steps": 20, "lr": 0.1, "loss": 1.5, "accuracy": 0.55, "score": -2.0},
        {"epoch": 3, "steps": 30, "lr": 0.05, "loss": 1.1, "accuracy": 0.81, "score": 0.81},
        {"epoch": 4, "steps": 40, "lr": 0.01, "loss": 0.9, "accuracy": 0.93, "score": 0.93},
    ]


def polyline_points(svg: str, name: str) -> list[tuple[float, float]]:
    group = re.search(rf"<g><title>{name}:.*?</g>", svg, flags=re.S).group(0)
    pts = re.search(r'<polyline points="([^"]*)"', group).group(1).split()
    return [tuple(float(c) for c in p.split(",")) for p in pts]


def test_score_curve_skips_the_not_ready_sentinel():
    report = report_with(passes=[{"pass": "distill", "stats": {"history": distill_history()}}])
    [(name, series)] = training_curves(report)
    assert name == "distill" and series["score"] == [None, None, 0.81, 0.93]
    assert series["accuracy"] == [0.41, 0.55, 0.81, 0.93]  # a real metric keeps every epoch

    svg = line_chart("distill", series, "note")
    score, accuracy = polyline_points(svg, "score"), polyline_points(svg, "accuracy")
    assert len(score) == 2 and len(accuracy) == 4
    assert [x for x, _y in score] == [x for x, _y in accuracy[2:]]  # the real scores sit at epochs 3 and 4
    assert "0.81 → 0.93" in svg and "-2" not in svg
    page = render_html(report)
    assert "0.81 → 0.93" in page and "-2 →" not in page


def test_non_finite_score_is_skipped_not_the_whole_series():
    history = distill_history()
    history[0]["score"] = float("-inf")  # build_report writes it as null
    history[1]["score"] = None
    report = report_with(passes=[{"pass": "distill", "stats": {"training": {"history": history}}}])
    [(_name, series)] = training_curves(report)
    assert series["score"] == [None, None, 0.81, 0.93]


def est_width(text: str) -> float:
    """12px sans-serif: about 0.6em a character, a full em for an arrow."""
    return sum(12.0 if c == "→" else 7.2 for c in text)


@pytest.mark.parametrize("series", [
    {"loss": [2.0, 1.0], "accuracy": [0.5, 0.9]},
    {"loss": [0.000123456, 1.23456e-05], "hidden_state_mse": [12345.678, 0.00098765],
     "score": [-2.0, -0.123456, 0.987654]},
])
def test_chart_labels_lie_inside_the_viewbox(series):
    svg = line_chart("t", series, "n")
    width = float(re.search(r'viewBox="0 0 ([\d.]+) [\d.]+"', svg).group(1))
    texts = re.findall(r"<text x=\"([\d.-]+)\" y=\"[\d.-]+\"( text-anchor=\"end\")?>(.*?)</text>", svg)
    assert len(texts) == 2 * len(series)
    for x, anchor_end, raw in texts:
        text, x = html.unescape(raw), float(x)
        if anchor_end:
            assert x - est_width(text) >= 0, text
        else:
            assert x + est_width(text) <= width, (text, x, width)


# --- 4. measurements table: sticky model column inside a horizontal scroller --------------------------

def test_measurements_table_scrolls_with_a_sticky_model_column():
    page = render_html(report_with())
    table = re.search(r'<div class="([^"]*)"><table class="([^"]*)"><thead><tr><th[^>]*>model</th>', page)
    assert table, "the measurements table sits in a wrapper div"
    wrapper, table_class = table.group(1).split(), table.group(2).split()
    css = re.search(r"<style>(.*?)</style>", page, flags=re.S).group(1)
    rules = {sel.strip(): body for sels, body in re.findall(r"([^{}]+)\{([^}]*)\}", css) for sel in sels.split(",")}
    assert any("overflow-x:auto" in rules.get(f".{c}", "").replace(" ", "") for c in wrapper)
    sticky = [body.replace(" ", "") for sel, body in rules.items()
              if "td:first-child" in sel and any(f".{c}" in sel for c in table_class)]
    assert sticky and all(p in sticky[0] for p in ("position:sticky", "left:0", "background:"))


# --- 5. the recipe by name, not its install path -----------------------------------------------------

def test_builtin_recipe_shows_its_name_and_a_user_recipe_its_path(tmp_path):
    from slimkit.pipeline import load_recipe

    builtin = load_recipe("fp16").as_dict()
    assert "site-packages" in builtin["source"] or "/slimkit/recipes/" in builtin["source"]
    page = render_html(report_with(recipe=builtin))
    assert "built-in recipe fp16" in visible_text(page)
    assert builtin["source"] not in page and "recipes/fp16.yaml" not in page

    path = tmp_path / "my-recipe.yaml"
    path.write_text("name: mine\npasses:\n  - pass: fp16\n")
    user = load_recipe(str(path)).as_dict()
    page = visible_text(render_html(report_with(recipe=user)))
    assert str(path) in page and "built-in recipe" not in page


def test_recipe_from_another_install_is_still_built_in():
    recipe = {"name": "fp16", "source": "/opt/venv/lib/python3.12/site-packages/slimkit/recipes/fp16.yaml",
              "passes": [{"pass": "fp16"}]}
    assert "built-in recipe fp16" in visible_text(render_html(report_with(recipe=recipe)))


# --- 6. command line and evaluation data at the top --------------------------------------------------

INVOCATION = {"command_line": "slimkit optimize model.onnx --recipe int8-static --data calib.npz -o out",
              "cwd": "/home/me/project"}
EVALUATION = {"source": "sklearn:digits:test", "samples": 360, "batch_size": 1, "batch_size_requested": 1,
              "seq_len": 128, "threads": 2}
DATA = {"train": "train.npz", "select": "calib.npz", "evaluate": "sklearn:digits:test", "uses": ["train", "select"],
        "split": None, "evaluation_seen_by": []}
MEASURED = "measured on: sklearn:digits:test, 360 samples, batch 1, sequence 128, 2 threads"


def test_run_context_at_the_top_of_the_page_and_the_terminal():
    report = report_with(data=DATA)
    report["invocation"], report["evaluation"] = INVOCATION, EVALUATION

    page = render_html(report)
    text = visible_text(page)
    assert "command: " + INVOCATION["command_line"] in text and "/home/me/project" in text
    assert MEASURED in text
    assert "trained on: train.npz, selected on: calib.npz" in text
    first = text.index(INVOCATION["command_line"])
    assert first < text.index("Input model") and first < text.index("Measurements")

    out = terminal(report)
    assert "command: " + INVOCATION["command_line"] in out and MEASURED in out
    assert "trained on: train.npz, selected on: calib.npz" in out
    assert out.index("command: ") < out.index("Measurements")

    bundle = visible_text(render_bundle_html([report, report_with()]))
    assert bundle.count(INVOCATION["command_line"]) == 1


def test_run_context_parts_that_are_absent_are_skipped():
    report = report_with()
    for key in ("invocation", "evaluation", "data"):  # an older report, or one from `bench` or the API
        report.pop(key, None)
    assert "How this was run" not in render_html(report)
    out = terminal(report)
    assert "command:" not in out and "measured on" not in out

    report = report_with(data={**DATA, "train": None, "uses": ["select"], "evaluation_seen_by": ["selection"]})
    report["evaluation"] = {**EVALUATION, "seq_len": None, "batch_size": 8, "batch_size_requested": 32}
    text = visible_text(render_html(report))
    assert ("measured on: sklearn:digits:test, 360 samples, batch 8 (asked for 32), 2 threads "
            "(also used for selection)") in text
    assert "sequence" not in text and "trained on" not in text and "selected on: calib.npz" in text
