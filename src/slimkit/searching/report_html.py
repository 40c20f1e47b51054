"""`slimkit search`'s report.html: one self-contained page (plotly.js inlined once, inline CSS and a small
inline sorting script), so it opens from disk or an archive with no network.

It renders the report dict that report.json holds. Any key may be missing or None (a search stopped early,
an older schema), so every section falls back to a one-line note instead of raising. Every string from the
report goes through `html.escape`: labels come from users' recipe names and errors from libraries.

Only `slimkit.errors` is imported from slimkit, so the page can be rendered wherever the search module sits
in the layer picture.
"""

from __future__ import annotations

import math
from typing import Any

from slimkit.errors import SlimkitError
from slimkit.report.html import esc, inline  # the report's own cell rendering, shared

DASH = "–"

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f7f8fa; --card:#fff; --accent:#3e6fb0;
  --good:#2f855a; --bad:#c53030; --warn:#b7791f; --warn-bg:#fffaf0; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1400px; margin:0 auto; padding:32px 24px 48px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header .meta { margin:2px 0; color:var(--muted); }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 20px;
  margin-top:20px; }
h2 { margin:0 0 12px; font-size:16px; font-weight:600; }
h3 { margin:0 0 6px; font-size:13px; font-weight:600; }
table { border-collapse:collapse; width:100%; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.03em;
  white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.scroll { overflow-x:auto; }
.kv th { width:220px; text-transform:none; font-size:13px; letter-spacing:0; }
code, .mono { font-family:SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
.muted { color:var(--muted); } .small { font-size:12px; }
.good { color:var(--good); } .bad { color:var(--bad); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; margin:0 4px 2px 0; }
.badge.yes { background:#e6fffa; color:var(--good); } .badge.no { background:#fff5f5; color:var(--bad); }
.badge.flag { background:#fefcbf; color:#744210; } .badge.state { background:#f0f2f5; color:var(--muted); }
.badge.complete { background:#ebf4ff; color:var(--accent); }
.badge.failed { background:#fff5f5; color:var(--bad); }
.badge.pareto { background:#e9d8fd; color:#553c9a; }
section.recommendation { border-left:5px solid var(--good); }
section.recommendation.unmet { border-left-color:var(--bad); }
.recommendation .label { font-size:20px; font-weight:600; margin:0 0 4px; }
.recommendation .reason { margin:0 0 12px; }
.recommendation table { max-width:720px; }
.shortfall { background:#fff5f5; border-left:4px solid var(--bad); padding:8px 12px; margin:8px 0 12px; }
table.sortable th { cursor:pointer; user-select:none; }
table.sortable th:hover { color:var(--ink); }
table.sortable th[aria-sort="ascending"]::after { content:" \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content:" \\25BC"; }
tr.recommended td { background:#f0fff4; }
#trials-table { font-size:13px; } #trials-table th, #trials-table td { padding:6px 7px; }
#trials-table th { white-space:normal; vertical-align:bottom; }
td.trial { min-width:170px; } td.error { color:var(--bad); min-width:180px; max-width:420px;
  white-space:normal; overflow-wrap:anywhere; }
.badge.flag { white-space:nowrap; }
.charts { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:20px; }
ul.warnings { list-style:none; margin:0; padding:0; }
ul.warnings li { background:var(--warn-bg); border-left:4px solid var(--warn); padding:8px 12px; margin:6px 0;
  border-radius:0 4px 4px 0; }
.flags-list { max-width:900px; }
footer { margin-top:24px; color:var(--muted); font-size:12px; text-align:center; }
"""

# Sorts a table.sortable's body when its header is clicked: numerically by the cells' data-sort values
# (cells without one go last), else by text. A second click on the same header reverses the order.
_SORT_JS = """
(function () {
  function key(cell, numeric) {
    if (!cell) { return null; }
    if (numeric) {
      var raw = cell.getAttribute('data-sort');
      if (raw === null || raw === '') { return null; }
      var v = parseFloat(raw);
      return isNaN(v) ? null : v;
    }
    return cell.textContent.trim().toLowerCase();
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.querySelectorAll('thead th');
    heads.forEach(function (th, col) {
      th.addEventListener('click', function () {
        var numeric = th.getAttribute('data-type') === 'num';
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
          return {row: row, i: i, k: key(row.cells[col], numeric)};
        });
        rows.sort(function (a, b) {
          if (a.k === null && b.k === null) { return a.i - b.i; }
          if (a.k === null) { return 1; }
          if (b.k === null) { return -1; }
          if (a.k < b.k) { return -dir; }
          if (a.k > b.k) { return dir; }
          return a.i - b.i;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      });
    });
  });
  // Charts are drawn while the page is still being parsed, before the grid around them has its final
  // width: size them again now that everything is laid out.
  if (window.Plotly) {
    document.querySelectorAll('.js-plotly-plot').forEach(function (gd) { window.Plotly.Plots.resize(gd); });
  }
})();
"""

_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "showSendToCloud": False,
                  "modeBarButtonsToRemove": ["sendDataToCloud"]}


# ---------------------------------------------------------------------------------------------- helpers

def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _real(value: Any) -> float | None:
    """A finite number, else None (bools, strings, NaN and infinities are not figures to plot or sort by)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _fmt_ms(value: Any) -> str:
    ms = _real(value)
    if ms is None:
        return "NaN" if _is_nan(value) else DASH
    if ms >= 100:
        return f"{ms:.1f}"
    return f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def _fmt_bytes(value: Any) -> str:
    n = _real(value)
    if n is None:
        return DASH
    if abs(n) < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000.0
        if abs(n) < 1000:
            return f"{n:.1f} {unit}"
    return f"{n:.1f} TB"


def _fmt_ratio(value: Any) -> str:
    r = _real(value)
    if r is None:
        return DASH
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def _fmt_metric(value: Any, metric: str) -> str:
    """Accuracy as a percentage, cosine (and anything else) to four decimals; NaN says so."""
    v = _real(value)
    if v is None:
        return "NaN" if _is_nan(value) else DASH
    return f"{100 * v:.2f}%" if metric == "accuracy" else f"{v:.4f}"


def _span(pair: Any, fmt: Any) -> str:
    """'lo–hi' of a two-item list (an IQR, a confidence interval), else a dash."""
    pair = _list(pair)
    return f"{fmt(pair[0])}–{fmt(pair[1])}" if len(pair) == 2 else DASH


def _fmt_seconds(value: Any) -> str:
    s = _real(value)
    if s is None:
        return DASH
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _sort_attr(value: Any) -> str:
    v = _real(value)
    return f' data-sort="{v!r}"' if v is not None else ' data-sort=""'


def _yes_no(value: Any) -> str:
    if value is True:
        return '<span class="badge yes">yes</span>'
    if value is False:
        return '<span class="badge no">no</span>'
    return DASH


def _section(title: str, body: str, css_id: str, css_class: str = "") -> str:
    cls = f' class="{esc(css_class)}"' if css_class else ""
    return f'<section id="{esc(css_id)}"{cls}><h2>{esc(title)}</h2>{body}</section>'


def _kv_table(rows: list[tuple[str, str]]) -> str:
    """Rows of (key, already-escaped HTML value)."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _metric_name(report: dict) -> str:
    """The metric the floor is on (accuracy or cosine): the Pareto chart's y axis and the tables' metric."""
    name = _dict(report.get("floor")).get("metric")
    return name if isinstance(name, str) and name else "metric"


def _metric_of(measure: dict, metric: str) -> Any:
    """The floor's metric from a validation/final measurement: its own key, else the generic `metric`."""
    value = measure.get(metric)
    return measure.get("metric") if value is None else value


def _trial_label(trial: dict) -> str:
    for key in ("label", "chain"):
        if trial.get(key):
            return str(trial[key])
    return f"trial {trial.get('number', '?')}"


def _trials(report: dict) -> list[dict]:
    return [t for t in _list(report.get("trials")) if isinstance(t, dict)]


def _pareto_numbers(report: dict) -> set[int]:
    """Trial numbers on the Pareto front: the report's `pareto` list and trials marked `pareto: true`."""
    marked = [t.get("number") for t in _trials(report) if t.get("pareto") is True]
    numbers = [*_list(report.get("pareto")), *marked]
    return {n for n in numbers if isinstance(n, int) and not isinstance(n, bool)}


def _on_front(trial: dict, front: set[int]) -> bool:
    number = trial.get("number")
    return isinstance(number, int) and number in front


def _plottable(trial: dict, metric: str) -> bool:
    """A completed trial with a validation latency and metric: the points the Pareto chart draws."""
    measure = _dict(trial.get("validation"))
    return (trial.get("state") == "complete" and _real(measure.get("latency_ms")) is not None
            and _real(_metric_of(measure, metric)) is not None)


def _recommended_trial(report: dict) -> dict | None:
    rec = _dict(report.get("recommendation"))
    number = rec.get("trial")
    if number is None:
        return None
    return next((t for t in _trials(report) if t.get("number") == number), None)


class _Charts:
    """Turns plotly figures into divs, embedding plotly.js with the first one only."""

    def __init__(self, go: Any) -> None:
        self.go = go
        self._js_done = False

    def html(self, fig: Any, div_id: str) -> str:
        out = fig.to_html(full_html=False, include_plotlyjs=not self._js_done, div_id=div_id,
                          config=_PLOTLY_CONFIG)
        self._js_done = True
        return out


# ---------------------------------------------------------------------------------------------- sections

def _header(report: dict) -> str:
    model = _dict(report.get("model"))
    floor = _dict(report.get("floor"))
    budget = _dict(report.get("budget"))
    data = _dict(report.get("data"))
    source = model.get("source") or "model"
    lines = [f"<h1>slimkit search: {esc(source)}</h1>"]
    facts = []
    if model.get("kind") or model.get("size_bytes") is not None:
        facts.append(f"{esc(model.get('kind') or '?')} model, {esc(_fmt_bytes(model.get('size_bytes')))}")
    if report.get("objective"):
        facts.append(f"objective <strong>{esc(report['objective'])}</strong>")
    if floor.get("text"):
        facts.append(f"floor: {esc(floor['text'])}")
    if facts:
        lines.append(f'<p class="meta">{" · ".join(facts)}</p>')
    run = []
    if budget.get("trials") is not None:
        run.append(f"budget {esc(budget['trials'])} trials")
    if budget.get("minutes") is not None:
        run.append(f"{esc(budget['minutes'])} minutes")
    for key in ("executor", "seed"):
        if report.get(key) is not None:
            run.append(f"{key} {esc(report[key])}")
    if run:
        lines.append(f'<p class="meta">{", ".join(run)}</p>')
    if data:
        parts = [f"{esc(k)}: <code>{esc(v)}</code>" for k, v in data.items()
                 if v is not None and k != "held_back"]
        if data.get("held_back") is not None:
            parts.append("held back: " + ("yes" if data["held_back"] else "no"))
        lines.append(f'<p class="meta">data: {"; ".join(parts)}</p>')
    summary = report.get("summary")
    if summary:
        lines.append(f"<p>{esc(summary)}</p>")
    return f"<header>{''.join(lines)}</header>"


def _measure_rows(metric: str) -> list[tuple[str, str, Any]]:
    """(key, heading, formatter) of a validation/final measurement, as the recommendation shows them: the
    floor's metric first, then the other of accuracy and cosine."""
    metrics = [metric] + [m for m in ("accuracy", "cosine") if m != metric]
    return [
        ("latency_ms", "latency p50 (ms per sample)", _fmt_ms),
        ("speedup", "speed-up vs baseline", _fmt_ratio),
        ("size_bytes", "size", _fmt_bytes),
        ("size_ratio", "size vs baseline", _fmt_ratio),
        *[(m, m, lambda v, m=m: _fmt_metric(v, m)) for m in metrics],
        ("meets_floor", "meets the floor", None),
    ]


def _side_by_side(validation: dict, final: dict, metric: str) -> str:
    """The recommended trial's validation and final (held-out) figures in two columns (one when the final
    measurement did not run)."""
    columns = [(name, m) for name, m in (("validation", validation), ("final (held-out)", final)) if m]
    head = "<tr><th></th>" + "".join(f"<th class='num'>{esc(name)}</th>" for name, _m in columns) + "</tr>"
    rows = []
    for key, heading, fmt in _measure_rows(metric):
        cells = []
        for _name, measure in columns:
            value = _metric_of(measure, metric) if key == metric else measure.get(key)
            text = _yes_no(value) if fmt is None else esc(fmt(value))
            if key == "latency_ms" and measure.get("latency_iqr_ms"):
                iqr = _span(measure["latency_iqr_ms"], _fmt_ms)
                text += f' <span class="muted small">(IQR {esc(iqr)})</span>'
            if key == "accuracy" and measure.get("accuracy_ci"):
                ci = _span(measure["accuracy_ci"], lambda v: _fmt_metric(v, "accuracy"))
                text += f' <span class="muted small">(95% CI {esc(ci)})</span>'
            cells.append(f"<td class='num'>{text}</td>")
        rows.append(f"<tr><th>{esc(heading)}</th>{''.join(cells)}</tr>")
    return f'<table class="side-by-side"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _closest_text(closest: Any, trials: list[dict]) -> str:
    """'trial 7: OpenVINO int4 weights' from the recommendation's closest_trial (a number or a trial dict)."""
    if isinstance(closest, dict):
        label = _trial_label(closest)
        return f"trial {closest['number']}: {label}" if closest.get("number") is not None else label
    if closest is None:
        return ""
    match = next((t for t in trials if t.get("number") == closest), None)
    return f"trial {closest}" + (f": {_trial_label(match)}" if match else "")


def _no_recommendation(trials: list[dict]) -> str:
    completed = [t for t in trials if t.get("state") == "complete"]
    if not trials:
        why = "No trial completed: the search ran no trial, so there is nothing to recommend."
    elif not completed:
        why = (f"No trial completed ({len(trials)} tried): there is nothing to recommend. "
               "The trials table below says why each one failed or was pruned.")
    elif not any(_dict(t.get("validation")).get("meets_floor") is True for t in completed):
        why = f"No trial met the floor ({len(completed)} completed), and the search recommended none."
    else:
        why = f"This report holds no recommendation ({len(completed)} trials completed)."
    body = f'<p class="label">No recommendation</p><p class="reason">{esc(why)}</p>'
    return _section("Recommendation", body, "recommendation", "recommendation unmet")


def _recommendation(report: dict) -> str:
    rec = _dict(report.get("recommendation"))
    trials = _trials(report)
    if not any(rec.get(k) is not None for k in ("trial", "label", "reason", "shortfall")):
        return _no_recommendation(trials)
    trial = _recommended_trial(report) or {}
    label = rec.get("label") or (_trial_label(trial) if trial else "No recommendation")
    number = rec.get("trial")
    met = rec.get("meets_floor")
    tag = f' <span class="muted small">trial {esc(number)}</span>' if number is not None else ""
    parts = [f'<p class="label">{esc(label)}{tag}</p>']
    if rec.get("reason"):
        parts.append(f'<p class="reason">{esc(rec["reason"])}</p>')
    if met is False:
        lines = ["<strong>No trial met the floor.</strong>"]
        if rec.get("shortfall"):
            lines.append(esc(rec["shortfall"]))
        closest = _closest_text(rec.get("closest_trial"), trials)
        if closest:
            lines.append(f"Closest: {esc(closest)}")
        parts.append(f'<div class="shortfall">{"<br>".join(lines)}</div>')
    validation = _dict(rec.get("validation")) or _dict(trial.get("validation"))
    final = _dict(rec.get("final")) or _dict(trial.get("final"))
    if validation or final:
        parts.append(_side_by_side(validation, final, _metric_name(report)))
    css = "recommendation" + (" unmet" if met is False else "")
    return _section("Recommendation", "".join(parts), "recommendation", css)


def _hover(label: str, number: Any, measure: dict, metric: str, flags: list) -> str:
    """A point's hover text; plotly renders a few tags, so the label is escaped and lines joined by <br>."""
    lines = [f"<b>{esc(label)}</b>" + (f" (trial {esc(number)})" if number is not None else ""),
             f"latency p50: {esc(_fmt_ms(measure.get('latency_ms')))} ms",
             f"speed-up: {esc(_fmt_ratio(measure.get('speedup')))}",
             f"size: {esc(_fmt_bytes(measure.get('size_bytes')))} "
             f"({esc(_fmt_ratio(measure.get('size_ratio')))})",
             f"{esc(metric)}: {esc(_fmt_metric(_metric_of(measure, metric), metric))}"]
    if flags:
        lines.append("flags: " + esc(", ".join(str(f) for f in flags)))
    return "<br>".join(lines)


def _marker_size(size_bytes: Any, largest: float) -> float:
    """Marker diameter in px, its area following the artifact's size (8 px for tiny, 32 px the largest)."""
    size = _real(size_bytes)
    if size is None or largest <= 0:
        return 10.0
    return 8.0 + 24.0 * math.sqrt(max(size, 0.0) / largest)


def _pareto_figure(report: dict, go: Any) -> Any | None:
    metric = _metric_name(report)
    plotted = [t for t in _trials(report) if _plottable(t, metric)]
    if not plotted:
        return None
    front = _pareto_numbers(report)
    baseline = _dict(report.get("baseline"))
    sizes = [_real(_dict(t["validation"]).get("size_bytes")) for t in plotted]
    sizes.append(_real(baseline.get("size_bytes")))
    largest = max((s for s in sizes if s is not None), default=0.0)

    def trace(trials: list[dict], name: str, color: str, *, line: bool = False) -> Any:
        measures = [_dict(t["validation"]) for t in trials]
        return go.Scatter(
            x=[m["latency_ms"] for m in measures], y=[_metric_of(m, metric) for m in measures],
            mode="lines+markers" if line else "markers", name=name,
            line={"color": color, "width": 1, "dash": "dot"} if line else None,
            marker={"color": color, "size": [_marker_size(m.get("size_bytes"), largest) for m in measures],
                    "line": {"width": 1, "color": "#ffffff"}, "opacity": 0.85},
            text=[_hover(_trial_label(t), t.get("number"), m, metric, _list(t.get("flags")))
                  for t, m in zip(trials, measures, strict=True)],
            hovertemplate="%{text}<extra></extra>")

    on_front = sorted((t for t in plotted if _on_front(t, front)),
                      key=lambda t: t["validation"]["latency_ms"])
    others = [t for t in plotted if not _on_front(t, front)]
    fig = go.Figure()
    if on_front:
        fig.add_trace(trace(on_front, "Pareto front", "#6b46c1", line=True))
    if others:
        fig.add_trace(trace(others, "other completed trials", "#3e6fb0"))
    has_baseline = (_real(baseline.get("latency_ms")) is not None
                    and _real(_metric_of(baseline, metric)) is not None)
    if has_baseline:
        label = baseline.get("label") or "baseline"
        fig.add_trace(go.Scatter(
            x=[baseline["latency_ms"]], y=[_metric_of(baseline, metric)], mode="markers", name="baseline",
            marker={"symbol": "x", "color": "#616e7c", "line": {"width": 1, "color": "#616e7c"},
                    "size": _marker_size(baseline.get("size_bytes"), largest)},
            text=[_hover(f"baseline: {label}", None, baseline, metric, [])],
            hovertemplate="%{text}<extra></extra>"))
    rec = _recommended_trial(report)
    if rec is not None and _plottable(rec, metric):
        measure = _dict(rec["validation"])
        x, y = measure["latency_ms"], _metric_of(measure, metric)
        fig.add_trace(go.Scatter(
            x=[x], y=[y], mode="markers", name="recommended",
            marker={"symbol": "star", "size": 24, "color": "#ecc94b",
                    "line": {"width": 1.5, "color": "#744210"}},
            text=[_hover("recommended: " + _trial_label(rec), rec.get("number"), measure, metric,
                         _list(rec.get("flags")))],
            hovertemplate="%{text}<extra></extra>"))
        fig.add_annotation(x=x, y=y, text=f"recommended: {esc(_trial_label(rec))}", showarrow=True,
                           arrowhead=2, ax=40, ay=-40, bgcolor="rgba(255,255,255,0.85)",
                           bordercolor="#744210", font={"size": 12})
    floor = _dict(report.get("floor"))
    threshold = _real(floor.get("threshold"))
    if threshold is not None:
        fig.add_shape(type="line", xref="paper", x0=0, x1=1, yref="y", y0=threshold, y1=threshold,
                      line={"color": "#c53030", "width": 2, "dash": "dash"}, name="floor")
        fig.add_annotation(xref="paper", x=1, xanchor="right", y=threshold, yanchor="bottom",
                           showarrow=False, text="floor " + esc(_fmt_metric(threshold, metric)),
                           font={"color": "#c53030", "size": 12})
    ys = [_metric_of(_dict(t["validation"]), metric) for t in plotted]
    ys += [threshold] if threshold is not None else []
    ys += [_metric_of(baseline, metric)] if has_baseline else []
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.08 or 0.01
    fig.update_layout(
        height=520, margin={"l": 70, "r": 30, "t": 30, "b": 60}, template="plotly_white",
        xaxis={"title": {"text": "validation latency p50 (ms per sample)"}, "rangemode": "tozero"},
        yaxis={"title": {"text": f"{esc(metric)} (validation)"}, "range": [lo - pad, hi + pad],
               "tickformat": ".1%" if metric == "accuracy" else ".4f"},
        legend={"orientation": "h", "y": -0.15}, hoverlabel={"align": "left"})
    return fig


def _pareto(report: dict, charts: _Charts) -> str:
    fig = _pareto_figure(report, charts.go)
    if fig is None:
        return _section("Pareto chart", '<p class="muted">No completed trial with validation measurements: '
                        "nothing to plot.</p>", "pareto")
    note = ('<p class="muted small">Each point is a completed trial; marker area follows the artifact\'s '
            "size. The dashed red line is the floor; the star is the recommended trial. Failed and pruned "
            "trials are not plotted.</p>")
    title = "Pareto chart: latency vs " + _metric_name(report)
    return _section(title, note + charts.html(fig, "pareto-chart"), "pareto")


_TRIAL_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("number", "#", True), ("state", "state", False), ("label", "trial", False),
    ("runtime", "runtime", False),
    ("latency_ms", "latency p50 ms", True), ("speedup", "speed-up", True), ("size_bytes", "size", True),
    ("size_ratio", "size ratio", True), ("metric", "metric", True), ("meets_floor", "meets floor", False),
    ("flags", "flags", False), ("duration_s", "duration", True), ("error", "error / pruned reason", False),
)


def _num_cell(value: Any, text: str) -> str:
    """A right-aligned cell showing `text`, sorted by `value` (blank data-sort when it is not a figure)."""
    return f"<td class='num'{_sort_attr(value)}>{esc(text)}</td>"


def _trial_row(trial: dict, metric: str, front: set, recommended: Any) -> str:
    measure = _dict(trial.get("validation"))
    number = trial.get("number")
    state = str(trial.get("state") or "?")
    is_recommended = recommended is not None and number == recommended
    label = esc(_trial_label(trial))
    chain = trial.get("chain")
    if chain and str(chain) != _trial_label(trial):
        label += f'<br><span class="mono muted small">{esc(chain)}</span>'
    if _on_front(trial, front):
        label += ' <span class="badge pareto">Pareto</span>'
    if is_recommended:
        label += ' <span class="badge yes">recommended</span>'
    flags = "".join(f'<span class="badge flag">{esc(f)}</span>' for f in _list(trial.get("flags"))) or DASH
    why = trial.get("error") or trial.get("pruned_reason")
    metric_value = _metric_of(measure, metric)
    state_css = state if state in ("complete", "failed") else "state"
    cells = [
        _num_cell(number, DASH if number is None else str(number)),
        f"<td><span class='badge {esc(state_css)}'>{esc(state)}</span></td>",
        f"<td class='trial'>{label}</td>",
        f"<td>{esc(trial.get('runtime') or DASH)}</td>",
        _num_cell(measure.get("latency_ms"), _fmt_ms(measure.get("latency_ms"))),
        _num_cell(measure.get("speedup"), _fmt_ratio(measure.get("speedup"))),
        _num_cell(measure.get("size_bytes"), _fmt_bytes(measure.get("size_bytes"))),
        _num_cell(measure.get("size_ratio"), _fmt_ratio(measure.get("size_ratio"))),
        _num_cell(metric_value, _fmt_metric(metric_value, metric)),
        f"<td>{_yes_no(measure.get('meets_floor'))}</td>",
        f"<td>{flags}</td>",
        _num_cell(trial.get("duration_s"), _fmt_seconds(trial.get("duration_s"))),
        f"<td class='error'>{esc(why)}</td>" if why else f"<td>{DASH}</td>",
    ]
    css = ' class="recommended"' if is_recommended else ""
    return f"<tr{css}>{''.join(cells)}</tr>"


def _trials_table(report: dict) -> str:
    trials = _trials(report)
    if not trials:
        return _section("Trials", '<p class="muted">The search ran no trial.</p>', "trials")
    metric = _metric_name(report)
    front = _pareto_numbers(report)
    recommended = _dict(report.get("recommendation")).get("trial")
    head = "".join(
        f"<th{' class=num data-type=num' if numeric else ''} title='sort by {esc(title)}'>"
        f"{esc(metric if key == 'metric' else title)}</th>"
        for key, title, numeric in _TRIAL_COLUMNS)
    rows = "".join(_trial_row(t, metric, front, recommended) for t in trials)
    counts: dict[str, int] = {}
    for t in trials:
        counts[str(t.get("state") or "?")] = counts.get(str(t.get("state") or "?"), 0) + 1
    summary = ", ".join(f"{n} {esc(s)}" for s, n in counts.items())
    note = (f'<p class="muted small">{len(trials)} trials ({summary}). Figures are on validation data. '
            "Click a column header to sort.</p>")
    table = (f'<table id="trials-table" class="sortable"><thead><tr>{head}</tr></thead>'
             f"<tbody>{rows}</tbody></table>")
    return _section("Trials", note + f'<div class="scroll">{table}</div>', "trials")


def _final_measurement(report: dict) -> str:
    final = _dict(report.get("final_measurement"))
    entries = [e for e in _list(final.get("entries")) if isinstance(e, dict)]
    if not entries:
        return _section("Final measurement (held-out data)",
                        '<p class="muted">No final measurement: no trial was measured on held-out data.</p>',
                        "final")
    metric = _metric_name(report)
    note = []
    if final.get("data"):
        note.append(f"on {esc(final['data'])}")
    if final.get("interleaved") is True:
        note.append("candidates measured interleaved (round-robin), so machine noise hits them alike")
    head = ("<tr><th>model</th><th class='num'>trial</th><th class='num'>latency p50 ms</th>"
            "<th class='num'>IQR ms</th><th class='num'>speed-up</th><th class='num'>size</th>"
            "<th class='num'>size ratio</th><th class='num'>accuracy</th><th class='num'>95% CI</th>"
            "<th class='num'>cosine</th><th>meets floor</th></tr>")
    rows = []
    for e in entries:
        iqr = _list(e.get("latency_iqr_ms"))
        ci = _list(e.get("accuracy_ci"))
        accuracy, cosine = e.get("accuracy"), e.get("cosine")
        if metric == "accuracy" and accuracy is None:
            accuracy = e.get("metric")
        if metric == "cosine" and cosine is None:
            cosine = e.get("metric")
        rows.append(
            f"<tr><td>{esc(e.get('label') or DASH)}</td>"
            f"<td class='num'>{esc(e['trial']) if e.get('trial') is not None else DASH}</td>"
            f"<td class='num'>{esc(_fmt_ms(e.get('latency_ms')))}</td>"
            f"<td class='num'>{esc(_span(iqr, _fmt_ms))}</td>"
            f"<td class='num'>{esc(_fmt_ratio(e.get('speedup')))}</td>"
            f"<td class='num'>{esc(_fmt_bytes(e.get('size_bytes')))}</td>"
            f"<td class='num'>{esc(_fmt_ratio(e.get('size_ratio')))}</td>"
            f"<td class='num'>{esc(_fmt_metric(accuracy, 'accuracy'))}</td>"
            f"<td class='num'>{esc(_span(ci, lambda v: _fmt_metric(v, 'accuracy')))}</td>"
            f"<td class='num'>{esc(_fmt_metric(cosine, 'cosine'))}</td>"
            f"<td>{_yes_no(e.get('meets_floor'))}</td></tr>")
    intro = f'<p class="muted small">{"; ".join(note)}.</p>' if note else ""
    table = f'<table id="final-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    body = intro + f'<div class="scroll">{table}</div>'
    return _section("Final measurement (held-out data)", body, "final")


def _sensitivity(report: dict) -> str:
    rows = [r for r in _list(report.get("sensitivity")) if isinstance(r, dict)]
    if not rows:
        why = ("No sensitivity table: no trial needed one (it is built when a technique keeps its most "
               "sensitive layers in float).")
        return _section("Layer sensitivity", f'<p class="muted">{esc(why)}</p>', "sensitivity")
    keys = [k for k in ("layer", "cosine", "kept_float") if any(k in r for r in rows)]
    for r in rows:  # any further columns the search recorded, in first-seen order
        keys += [k for k in r if k not in keys]
    head = "".join(f"<th class='num'>{esc(k)}</th>" if k == "cosine"
                   else f"<th>{esc(k.replace('_', ' '))}</th>" for k in keys)
    body = []
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            if k == "cosine":
                cells.append(f"<td class='num'>{esc(_fmt_metric(v, 'cosine'))}</td>")
            elif isinstance(v, bool):
                cells.append(f"<td>{_yes_no(v)}</td>")
            else:
                cells.append(f"<td>{inline(v)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    note = ('<p class="muted small">Output cosine against the float model when only this layer is '
            "compressed; the lowest are the most sensitive.</p>")
    table = (f'<table id="sensitivity-table"><thead><tr>{head}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table>')
    return _section("Layer sensitivity", note + f'<div class="scroll">{table}</div>', "sensitivity")


def _histogram_figure(entry: dict, go: Any) -> Any | None:
    edges = [_real(e) for e in _list(entry.get("edges"))]
    before, after = _list(entry.get("before")), _list(entry.get("after"))
    n = len(edges) - 1
    if n < 1 or None in edges or (len(before) != n and len(after) != n):
        return None
    centers = [(edges[i] + edges[i + 1]) / 2 for i in range(n)]
    widths = [edges[i + 1] - edges[i] for i in range(n)]
    fig = go.Figure()
    for counts, name, color in ((before, "before", "#9aa5b1"), (after, "after", "#3e6fb0")):
        if len(counts) == n:
            fig.add_trace(go.Bar(x=centers, y=[_real(c) or 0 for c in counts], width=widths, name=name,
                                 marker={"color": color}, opacity=0.6,
                                 hovertemplate=f"{name}: %{{y}} weights near %{{x:.4g}}<extra></extra>"))
    title = str(entry.get("layer") or "weights")
    if entry.get("technique"):
        title += f" ({entry['technique']})"
    if entry.get("trial") is not None:
        title += f", trial {entry['trial']}"
    fig.update_layout(barmode="overlay", bargap=0, height=300, template="plotly_white",
                      title={"text": esc(title), "font": {"size": 13}},
                      margin={"l": 50, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.2},
                      xaxis={"title": {"text": "weight value"}}, yaxis={"title": {"text": "count"}})
    return fig


def _histograms(report: dict, charts: _Charts) -> str:
    entries = [e for e in _list(report.get("histograms")) if isinstance(e, dict)]
    divs = []
    for i, entry in enumerate(entries):
        fig = _histogram_figure(entry, charts.go)
        if fig is not None:
            divs.append(f'<div class="chart">{charts.html(fig, f"hist-{i}")}</div>')
    if not divs:
        why = ("No weight histograms: no trial clustered or quantized a layer whose weights were recorded."
               if not entries else "No weight histograms: the recorded ones had no bins to draw.")
        return _section("Weight histograms", f'<p class="muted">{esc(why)}</p>', "histograms")
    note = ('<p class="muted small">Weight values of clustered or quantized layers before (grey) and after '
            "(blue), on shared bins.</p>")
    return _section("Weight histograms", note + f'<div class="charts">{"".join(divs)}</div>', "histograms")


def _environment(report: dict) -> str:
    env = _dict(report.get("environment"))
    if not env:
        return _section("Environment", '<p class="muted">Not recorded.</p>', "environment")
    rows = []
    known = {"cpu_model": "CPU", "logical_cores": "logical cores", "threads": "threads", "python": "Python",
             "platform": "platform"}
    for key, title in known.items():
        if env.get(key) is not None:
            rows.append((title, esc(env[key])))
    flags = env.get("cpu_flags")
    if flags:
        text = " ".join(str(f) for f in flags) if isinstance(flags, list) else str(flags)
        rows.append(("CPU features", f'<div class="flags-list mono">{esc(text)}</div>'))
    for key, value in env.items():  # anything else the search recorded
        if key not in known and key not in ("cpu_flags", "packages"):
            rows.append((str(key).replace("_", " "), inline(value)))
    packages = _dict(env.get("packages"))
    body = _kv_table(rows)
    if packages:
        body += "<h3 style='margin-top:16px'>Package versions</h3>" + _kv_table(
            [(str(name), esc(version if version is not None else "not installed"))
             for name, version in sorted(packages.items())])
    return _section("Environment", body, "environment")


def _warnings(report: dict) -> str:
    items = [w for w in _list(report.get("warnings")) if w]
    if not items:
        return _section("Warnings", '<p class="muted">No warnings.</p>', "warnings")
    body = "".join(f"<li>{esc(w)}</li>" for w in items)
    return _section("Warnings", f'<ul class="warnings">{body}</ul>', "warnings")


def _overhead(report: dict) -> str:
    over = _dict(report.get("overhead"))
    baseline = _dict(report.get("baseline"))
    metric = _metric_name(report)
    rows = []
    if over:
        rows += [("search wall time", esc(_fmt_seconds(over.get("wall_s")))),
                 ("time in trials", esc(_fmt_seconds(over.get("trials_s"))))]
        fraction = _real(over.get("fraction"))
        share = DASH if fraction is None else f"{100 * fraction:.1f}% of the wall time"
        rows.append(("search overhead", esc(share)))
    if baseline:
        figures = (f"{baseline.get('label') or 'baseline'}: {_fmt_ms(baseline.get('latency_ms'))} ms, "
                   f"{_fmt_bytes(baseline.get('size_bytes'))}, "
                   f"{metric} {_fmt_metric(_metric_of(baseline, metric), metric)}")
        rows.append(("baseline", esc(figures)))
    if not rows:
        return _section("Overhead", '<p class="muted">Not recorded.</p>', "overhead")
    return _section("Overhead and baseline", _kv_table(rows), "overhead")


def render_search_html(report: dict) -> str:
    """The search report as one HTML page that needs no network: recommendation, Pareto chart, sortable
    trials table, final measurement, sensitivity, weight histograms, environment, warnings and overhead."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise SlimkitError("the search report needs plotly", "pip install 'slimkit[search]'") from exc
    report = _dict(report)
    charts = _Charts(go)
    model = _dict(report.get("model")).get("source") or "model"
    body = [
        _header(report),
        _recommendation(report),
        _pareto(report, charts),
        _trials_table(report),
        _final_measurement(report),
        _sensitivity(report),
        _histograms(report, charts),
        _environment(report),
        _warnings(report),
        _overhead(report),
        f"<footer>slimkit search report ({esc(report.get('schema') or 'slimkit.searching-report')}). "
        "This file is self-contained: the charts' library, styles and scripts are inside it, so it opens "
        "without a network.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>slimkit search: {esc(model)}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(body)}</main><script>{_SORT_JS}</script></body></html>\n")
