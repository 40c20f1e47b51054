"""`slimkit search`'s report.html: what the page says (unit tests on the rendered text) and what a real
browser draws from it (headless Chromium, Debian's package driven by playwright, no network)."""

from __future__ import annotations

import html
import math
import re
import shutil
import sys
import time

import pytest

from slimkit.errors import SlimkitError
from slimkit.searching.report_html import render_search_html
from tests.searching.sample_report import sample_report


def visible_text(page: str) -> str:
    """The page's text as a reader sees it: scripts and styles dropped, tags removed, entities decoded."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def plotted_trials(report: dict) -> list[dict]:
    """Completed trials with a finite validation latency and accuracy (the floor's metric here)."""
    def finite(v) -> bool:
        return isinstance(v, int | float) and math.isfinite(v)
    return [t for t in report["trials"] if t["state"] == "complete" and t["validation"]
            and finite(t["validation"]["latency_ms"]) and finite(t["validation"]["accuracy"])]


# ---------------------------------------------------------------------------------------- the page's text

def test_page_needs_no_network_and_embeds_plotly_once():
    from plotly.offline import get_plotlyjs

    report = sample_report()
    page = render_search_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, flags=re.I)
    assert not re.search(r"""\bsrc\s*=\s*["']?(https?:)?//""", page, flags=re.I)
    assert not re.search(r"<link\b", page, flags=re.I)
    assert page.count(get_plotlyjs()[:500]) == 1  # the library once, however many charts
    assert page.count("Plotly.newPlot(") == 1 + len(report["histograms"])
    for div_id in ["pareto-chart"] + [f"hist-{i}" for i in range(len(report["histograms"]))]:
        assert page.count(f'id="{div_id}"') == 1
    assert "self-contained" in visible_text(page)


def test_page_says_what_the_report_holds():
    report = sample_report()
    text = visible_text(render_search_html(report))
    rec = report["recommendation"]
    for expected in (rec["label"], rec["reason"], "trial 2", report["floor"]["text"], report["summary"],
                     "97.33%", "97.22%",  # the recommendation's validation and held-out accuracy side by side
                     "validation", "final (held-out)", report["final_measurement"]["data"],
                     "AMD EPYC 9B14", "avx512_vnni", "onnxruntime 1.32.0", "openvino 2025.3.0",
                     "2.5% of the wall time", *report["warnings"]):
        assert expected in text, expected
    for row in report["sensitivity"]:
        assert row["layer"] in text
    for trial in report["trials"]:
        assert trial["label"] in text
        if trial["pruned_reason"]:
            assert trial["pruned_reason"] in text
    assert "RuntimeError: <converter> failed" in text  # the error, shown as the text it is
    assert "No trial met the floor" not in text


def test_every_string_from_the_report_is_escaped():
    report = sample_report()
    report["trials"][0]["label"] = "<b>x</b>"
    report["trials"][4]["error"] = "<script>alert(1)</script>"
    report["recommendation"]["reason"] = 'fast <img src=x onerror="alert(2)">'
    report["environment"]["cpu_model"] = "<i>cpu</i>"
    report["warnings"].append("</section><h1>injected</h1>")
    page = render_search_html(report)
    for raw in ("<b>x</b>", "<script>alert(1)", "<img src=x", "<i>cpu</i>", "<h1>injected"):
        assert raw not in page, raw
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    # the charts' JSON writes < > / as \u003c...; plotly renders some tags in hover text: escaped there too
    charts = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), page)
    assert "<b>x</b>" not in charts and "&lt;b&gt;x&lt;/b&gt;" in charts
    text = visible_text(page)
    shown_as_text = ("<b>x</b>", "<script>alert(1)</script>", 'fast <img src=x onerror="alert(2)">',
                     "<i>cpu</i>")
    for shown in shown_as_text:
        assert shown in text, shown


def test_a_search_where_no_trial_completed_renders():
    report = sample_report()
    report["trials"] = [t for t in report["trials"] if t["state"] in ("failed", "pruned")]
    report.update(pareto=[], recommendation=None, final_measurement=None, histograms=[], sensitivity=[])
    page = render_search_html(report)
    text = visible_text(page)
    assert "No trial completed (4 tried)" in text
    assert "nothing to plot" in text
    assert 'id="pareto-chart"' not in page and "Plotly.newPlot(" not in page
    assert "No weight histograms" in text and "No sensitivity table" in text
    assert "ValueError: rank 0 for layer fc2" in text  # the failed trials still listed with their errors


def test_a_floor_never_met_shows_the_shortfall_and_the_closest_trial():
    report = sample_report()
    report["recommendation"].update(
        trial=None, label=None, meets_floor=False, closest_trial=7, validation=None, final=None,
        reason="no trial kept accuracy within 0.5 points",
        shortfall="the closest trial, OpenVINO int4 weights, reached 95.50% (1.50 points short of 97.00%)")
    text = visible_text(render_search_html(report))
    assert "No trial met the floor." in text
    assert report["recommendation"]["shortfall"] in text
    assert "Closest: trial 7: OpenVINO int4 weights" in text


@pytest.mark.parametrize("report", [
    {},
    dict.fromkeys(sample_report(), None),
    {"trials": [{"number": 0, "state": "complete", "validation": {"latency_ms": None}}, {"state": None},
                {"number": [1], "state": "complete", "pareto": True, "validation": {"latency_ms": 1.0,
                                                                                  "metric": 0.9}}, "junk"],
     "pareto": [0, "1", None],
     "recommendation": {"trial": 0}, "floor": {"metric": "cosine", "threshold": "high"},
     "histograms": [{"layer": "fc", "edges": [0.0, 1.0], "before": [1, 2]}],
     "environment": {"packages": None, "cpu_flags": "avx2 fma"}},
], ids=["empty", "all-none", "odd-values"])
def test_sparse_or_odd_reports_render(report):
    page = render_search_html(report)
    assert page.rstrip().endswith("</html>")
    assert "self-contained" in page


def test_without_plotly_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(SlimkitError) as info:
        render_search_html(sample_report())
    assert info.value.problem == "the search report needs plotly"
    assert "slimkit[search]" in info.value.hint


# ---------------------------------------------------------------------------------------- in a real browser

def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Chromium is not installed (no `chromium` on PATH): `make browser` installs Debian's "
                    "chromium package, which this test drives with playwright", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """The sample report opened in headless Chromium, its charts drawn; yields (page, report, events)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (and `make browser` for Chromium)",
                    pytrace=False)
    executable = _chromium()
    report = sample_report()
    path = tmp_path_factory.mktemp("search-html") / "report.html"
    path.write_text(render_search_html(report), encoding="utf-8")
    events: dict = {"errors": [], "requests": [], "folder": path.parent}
    started = time.perf_counter()
    with sync_playwright() as p:
        # Debian's Chromium, never a browser playwright would download (there is no network here or in CI).
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and events["errors"].append(f"console: {m.text}"))
            page.on("pageerror", lambda e: events["errors"].append(f"pageerror: {e}"))
            page.on("request", lambda r: events["requests"].append(r.url))
            page.goto(path.as_uri())
            page.wait_for_selector("#pareto-chart .scatterlayer .trace path.point", timeout=15_000)
            page.wait_for_selector("#hist-0 .barlayer path", timeout=10_000)
            events["load_s"] = time.perf_counter() - started
            yield page, report, events
        finally:
            browser.close()


def test_browser_loads_the_page_offline_without_errors(browser_page):
    page, _report, events = browser_page
    assert events["errors"] == []
    assert events["requests"], "the page itself should have been requested"
    offsite = [u for u in events["requests"] if not u.startswith(("file://", "data:", "blob:", "about:"))]
    assert offsite == []
    assert events["load_s"] < 20


def test_browser_draws_the_pareto_chart(browser_page):
    page, report, _events = browser_page
    plotted = plotted_trials(report)
    assert 0 < len(plotted) < sum(t["state"] == "complete" for t in report["trials"])  # NaN trial left out
    # one marker per plotted trial, plus the baseline and the recommended star
    assert page.locator("#pareto-chart path.point").count() == len(plotted) + 1 + 1
    traces = page.evaluate("""() => {
        const gd = document.getElementById('pareto-chart');
        const groups = gd.querySelectorAll('.scatterlayer .trace');
        return gd.data.map((t, i) => ({name: t.name, x: t.x, y: t.y,
                                      drawn: groups[i].querySelectorAll('path.point').length}));
    }""")
    by_name = {t["name"]: t for t in traces}
    front = set(report["pareto"])
    assert by_name["Pareto front"]["drawn"] == sum(t["number"] in front for t in plotted)
    assert by_name["other completed trials"]["drawn"] == sum(t["number"] not in front for t in plotted)
    rec = next(t for t in report["trials"] if t["number"] == report["recommendation"]["trial"])
    star = by_name["recommended"]
    assert star["drawn"] == 1
    assert (star["x"], star["y"]) == ([rec["validation"]["latency_ms"]], [rec["validation"]["accuracy"]])
    annotations = page.locator("#pareto-chart .annotation-text").all_text_contents()
    assert f"recommended: {rec['label']}" in annotations

    # the floor: a horizontal line at the threshold's height on the y axis
    d = page.locator("#pareto-chart .shapelayer path").first.get_attribute("d")
    x0, y0, x1, y1 = (float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)[:4])
    assert y0 == pytest.approx(y1) and x1 - x0 > 500
    expected_y = page.evaluate(f"""() => {{
        const L = document.getElementById('pareto-chart')._fullLayout;
        return L._size.t + L.yaxis.l2p({report['floor']['threshold']});
    }}""")
    assert y0 == pytest.approx(expected_y, abs=1.0)

    # hovering the star names the recommended trial
    box = page.locator("#pareto-chart .scatterlayer .trace").nth(
        [t["name"] for t in traces].index("recommended")).locator("path.point").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#pareto-chart .hoverlayer .hovertext", timeout=5_000)
    assert rec["label"] in page.locator("#pareto-chart .hoverlayer").text_content()


def test_browser_draws_the_histograms(browser_page):
    page, report, _events = browser_page
    for i, entry in enumerate(report["histograms"]):
        bars = page.locator(f"#hist-{i} .barlayer .trace")
        assert bars.count() == 2  # before and after
        for trace in range(2):
            assert bars.nth(trace).locator(".point path").count() == len(entry["edges"]) - 1
        svg = page.locator(f"#hist-{i} .main-svg").first.bounding_box()
        assert svg["width"] <= page.locator(f"#hist-{i}").bounding_box()["width"] + 1  # fits its column


def test_browser_sorts_the_trials_table(browser_page):
    page, report, _events = browser_page

    def first_column() -> list[int]:
        return [int(t) for t in page.locator("#trials-table tbody tr td:first-child").all_inner_texts()]

    def header(title: str):
        return page.locator("#trials-table thead th", has_text=re.compile(f"^{re.escape(title)}$", re.I))

    numbers = [t["number"] for t in report["trials"]]
    assert first_column() == numbers
    measured = [t for t in report["trials"] if t["validation"]]
    unmeasured = [t["number"] for t in report["trials"] if not t["validation"]]
    header("latency p50 ms").click()
    by_latency = [t["number"] for t in sorted(measured, key=lambda t: t["validation"]["latency_ms"])]
    assert first_column() == by_latency + unmeasured  # rows without a latency go last
    header("latency p50 ms").click()
    assert first_column() == by_latency[::-1] + unmeasured
    header("#").click()
    assert first_column() == sorted(numbers)
    header("#").click()
    assert first_column() == sorted(numbers, reverse=True)
    header("runtime").click()  # text columns sort as text
    runtimes = page.locator("#trials-table tbody tr td:nth-child(4)").all_inner_texts()
    assert runtimes == sorted(runtimes)


def test_browser_screenshot_is_not_blank(browser_page):
    from PIL import Image, ImageStat

    page, _report, events = browser_page
    shots = events["folder"]
    page.screenshot(path=str(shots / "page.png"))
    page.locator("#pareto-chart").screenshot(path=str(shots / "pareto.png"))
    with Image.open(shots / "page.png") as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1280, 900)
        assert max(ImageStat.Stat(rgb).stddev) > 15
    with Image.open(shots / "pareto.png") as im:
        rgb = im.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20)
        assert len(colors) > 200  # markers, anti-aliased text, the floor line: not a flat box
        assert max(ImageStat.Stat(rgb).stddev) > 10
        # the floor's red is on the chart
        assert any(r > 150 and g < 90 and b < 90 for _n, (r, g, b) in colors)
