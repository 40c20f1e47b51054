"""The report as one self-contained HTML page: inline CSS and SVG, no scripts, nothing fetched.

Every piece of text from the report goes through `html.escape`, because labels and paths come from
users and model files.
"""

from __future__ import annotations

import json
import math
from html import escape
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

from slimkit.report.context import run_context
from slimkit.report.format import (
    DASH,
    MEASUREMENT_COLUMNS,
    SENSITIVITY_COLUMNS,
    TRIED_COLUMNS,
    _short,
    fmt_ratio,
    is_skipped,
    measurement_rows,
    model_name,
    pass_rows,
    search_sections,
    training_curves,
)

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f7f8fa; --card:#fff; --accent:#3e6fb0;
  --good:#2f855a; --bad:#c53030; --warn:#b7791f; --warn-bg:#fffaf0; --ref:#9aa5b1; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1400px; margin:0 auto; padding:32px 24px 48px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header .meta { margin:0; color:var(--muted); }
header code { background:#eef1f5; padding:1px 6px; border-radius:4px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 20px;
  margin-top:20px; }
h2, section h3 { margin:0 0 12px; font-size:16px; font-weight:600; }
article { margin-top:36px; }
article h2.report-title { font-size:20px; margin:0; padding-bottom:6px; border-bottom:2px solid var(--accent); }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
table { border-collapse:collapse; width:100%; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.03em;
  white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr.ref td { background:#f5f7fa; font-weight:600; }
.scroll { overflow-x:auto; }
.measurements th:first-child, .measurements td:first-child { position:sticky; left:0; z-index:1;
  background:var(--card); box-shadow:inset -1px 0 0 var(--line); }
.measurements tr.ref td:first-child { background:#f5f7fa; }
.measurements th, .measurements td { padding:6px 8px; }
details.stats summary { cursor:pointer; }
details.stats table.kv { margin-top:6px; }
details.stats .kv th { width:auto; }
ul.run { list-style:none; margin:0; padding:0; } ul.run li { margin:3px 0; }
ul.run .label { color:var(--muted); font-weight:600; }
.kv th { width:220px; text-transform:none; font-size:13px; letter-spacing:0; }
code, .mono { font-family:SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
.good { color:var(--good); } .bad { color:var(--bad); } .warn { color:var(--warn); }
.charts { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:20px; }
.chart h3 { margin:0 0 6px; font-size:13px; font-weight:600; }
.chart p { margin:0 0 8px; color:var(--muted); font-size:12px; }
svg.bars { width:100%; height:auto; font-size:12px; }
svg.bars text { fill:var(--ink); }
svg.bars .bar-good { fill:var(--good); } svg.bars .bar-bad { fill:var(--bad); }
svg.bars .bar-neutral { fill:var(--accent); } svg.bars .bar-ref { fill:var(--ref); }
svg.bars .refline { stroke:var(--muted); stroke-dasharray:3 3; }
ul.flags { list-style:none; margin:0; padding:0; }
ul.flags li { background:var(--warn-bg); border-left:4px solid var(--warn); padding:8px 12px; margin:6px 0;
  border-radius:0 4px 4px 0; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; margin:0 6px 0 0; }
.badge.flag { background:#fefcbf; color:#744210; }
.badge.yes { background:#e6fffa; color:var(--good); } .badge.no { background:#f0f2f5; color:var(--muted); }
.empty { color:var(--muted); }
ol.steps { margin:8px 0 0; padding-left:22px; }
footer { margin-top:24px; color:var(--muted); font-size:12px; text-align:center; }
"""

_BAR_CLASS = {"good": "bar-good", "bad": "bar-bad", "ref": "bar-ref", "": "bar-neutral"}


def esc(value: Any) -> str:
    return escape(str(value), quote=True)


def inline(value: Any) -> str:
    """A value for a key/value cell: scalars as text, lists of scalars joined, the rest as compact JSON."""
    if value is None or value == "" or value == [] or value == {}:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return esc(", ".join(str(v) for v in value))
    if isinstance(value, dict | list):
        return f"<code>{esc(json.dumps(value, separators=(', ', ': '), default=str))}</code>"
    return esc(value)


def _kv_table(data: dict) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{inline(v)}</td></tr>" for k, v in data.items())
    return f'<table class="kv">{rows}</table>'


def _section(title: str, body: str, css_id: str, level: int = 2) -> str:
    return f'<section id="{esc(css_id)}"><h{level}>{esc(title)}</h{level}>{body}</section>'


def builtin_recipe_name(source: Any) -> str | None:
    """The name of the built-in recipe that `source` (Recipe.source: the YAML file's path) is, else None.

    Built-ins load from the installed slimkit/recipes folder, so their source is a path into site-packages;
    a report from another install is recognised by its .../slimkit/recipes/NAME.yaml path when this install
    ships a recipe of that name.
    """
    if not source or not str(source).endswith((".yaml", ".yml")):
        return None
    path = PurePath(str(source))
    try:
        folder = resources.files("slimkit") / "recipes"
        if not (folder / path.name).is_file():
            return None
        if Path(str(source)).resolve().parent == Path(str(folder)).resolve():
            return path.stem
    except (OSError, TypeError, ValueError, ModuleNotFoundError):
        return None
    return path.stem if path.parent.parts[-2:] == ("slimkit", "recipes") else None


def _recipe(recipe: dict) -> str:
    info = {k: recipe.get(k) for k in ("name", "description", "source") if recipe.get(k)}
    if info.get("source"):  # a built-in by its name, not the install path; a user's YAML file by its path
        builtin = builtin_recipe_name(info["source"])
        info["source"] = f"built-in recipe {builtin}" if builtin else str(info["source"])
    steps = []
    for step in recipe.get("passes") or []:
        step = dict(step) if isinstance(step, dict) else {"pass": step}
        name = step.pop("pass", "?")
        cfg = ", ".join(f"{k}={v}" for k, v in step.items())
        steps.append(f"<li><strong>{esc(name)}</strong>" + (f" <span class='mono'>{esc(cfg)}</span>" if cfg else "")
                     + "</li>")
    return _kv_table(info) + (f'<ol class="steps">{"".join(steps)}</ol>' if steps else "")


def _stat_value(key: str, value: Any, depth: int = 0) -> str:
    """One value of a pass's full stats: byte counts in kB/MB (exact count on hover), small dicts as nested
    key/value tables, lists of records (history, tried) as JSON, numbers to 6 significant digits."""
    if value is None or value == "" or value == [] or value == {}:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    short = _short(value, key)
    if isinstance(value, int | float) and short != _short(value):  # the key names a byte count
        return f"<span title='{esc(f'{value:,} bytes')}'>{esc(short)}</span>"
    if isinstance(value, float):
        return esc(f"{value:.6g}")
    if isinstance(value, dict) and depth < 2:
        return _stats_table(value, depth + 1)
    if isinstance(value, dict | list):
        return f"<code>{esc(json.dumps(value, separators=(', ', ': '), default=str))}</code>"
    return esc(short)


def _stats_table(stats: dict, depth: int = 0) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{_stat_value(str(k), v, depth)}</td></tr>" for k, v in stats.items())
    return f'<table class="kv">{rows}</table>'


def _stats_cell(short: str, stats: Any, outcome: Any = None) -> str:
    """The one-line summary; when it leaves something out, a <details> that opens on the full stats."""
    cut = short.endswith("…") or (is_skipped(outcome) and bool(stats))
    if not cut:
        return f"<td class='mono'>{esc(short)}</td>"
    full = (_stats_table(stats) if isinstance(stats, dict)
            else f"<code>{esc(json.dumps(stats, separators=(', ', ': '), default=str))}</code>")
    return f"<td><details class='stats'><summary class='mono'>{esc(short)}</summary>{full}</details></td>"


def _passes(report: dict) -> str:
    steps = [p if isinstance(p, dict) else {} for p in report.get("passes") or []]
    rows = "".join(
        f"<tr><td>{esc(r['pass'])}</td><td>{esc(r['kinds'])}</td><td class='num'>{esc(r['seconds'])}</td>"
        f"{_stats_cell(r['stats'], step.get('stats'), step.get('outcome'))}</tr>"
        for r, step in zip(pass_rows(report), steps, strict=False)
    )
    head = "<tr><th>pass</th><th>kinds</th><th class='num'>seconds</th><th>stats</th></tr>"
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{rows}</tbody></table></div>'


def _measurements(report: dict) -> str:
    head = "".join(f"<th class='{'num' if right else ''}'>{esc(h)}</th>" for _k, h, right in MEASUREMENT_COLUMNS)
    body = []
    for row in measurement_rows(report):
        is_ref = row["model"].tone == "ref"
        cells = []
        for key, _h, right in MEASUREMENT_COLUMNS:
            cell = row[key]
            classes = " ".join(c for c in ("num" if right else "", cell.tone if cell.tone != "ref" else "") if c)
            cells.append(f"<td class='{classes}'>{esc(cell.text)}</td>")
        body.append(f"<tr class='{'ref' if is_ref else ''}'>{''.join(cells)}</tr>")
    ref = report.get("reference")
    caption = (f"<p class='empty'>Fidelity is to the reference <strong>{esc(ref)}</strong>; size and speed "
               "ratios are against the row named under <em>vs</em>: the plain export on the same runtime where "
               "there is one, so a runtime switch is not credited to a technique.</p>"
               if ref else "<p class='empty'>No reference: ratios and comparisons are not available.</p>")
    # Wider than the page: it scrolls sideways inside its wrapper with the model label column kept in view.
    return (f'{caption}<div class="scroll"><table class="measurements"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def bar_chart(title: str, items: list[tuple[str, float, str]], note: str) -> str:
    """A horizontal bar chart as inline SVG; `items` are (label, ratio, tone) and a dashed line marks 1.0x."""
    label_w, bar_w, value_w, row_h, top = 190, 330, 60, 26, 8
    width = label_w + bar_w + value_w
    height = top * 2 + row_h * len(items)
    scale = max([1.0, *(r for _l, r, _t in items)]) * 1.05
    parts = []
    for i, (label, r, tone) in enumerate(items):
        y = top + i * row_h
        short = label if len(label) <= 24 else label[:23] + "…"
        w = max(1.0, bar_w * r / scale)
        parts.append(
            f'<g class="row"><title>{esc(label)}: {esc(fmt_ratio(r))}</title>'
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">{esc(short)}</text>'
            f'<rect class="bar {_BAR_CLASS.get(tone, "bar-neutral")}" x="{label_w}" y="{y + 4}" '
            f'width="{w:.1f}" height="{row_h - 8}" rx="2"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + row_h / 2 + 4:.1f}">{esc(fmt_ratio(r))}</text></g>'
        )
    x1 = label_w + bar_w / scale
    parts.append(f'<line class="refline" x1="{x1:.1f}" x2="{x1:.1f}" y1="{top - 4}" y2="{height - top + 4}"/>')
    return (f'<div class="chart"><h3>{esc(title)}</h3><p>{esc(note)}</p>'
            f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{esc(title)}">{"".join(parts)}</svg></div>')


def text_width(text: str, font_px: float = 12.0) -> float:
    """A generous estimate of how wide `text` renders in the page's sans-serif font (SVG cannot measure
    text without a script): 0.62em a character, a full em for symbols such as '→'."""
    return sum(font_px * (1.0 if ord(c) > 0x2000 else 0.62) for c in text)


def line_chart(title: str, series: dict[str, list[float | None]], note: str) -> str:
    """Per-epoch curves as inline SVG, each series scaled to its own range (losses and scores differ).

    A None is an epoch without a real value (not scored yet, or NaN/Inf): it is left out of the curve and of
    its range, so a score curve starts at its first real score. The viewBox is as wide as the series names
    on the left and the first → last labels on the right need, so neither is clipped.
    """
    pad, gap, plot_w, top, plot_h, row_h = 4, 8, 330, 10, 18, 22
    shown = {name: [(j, float(v)) for j, v in enumerate(values) if v is not None and math.isfinite(v)]
             for name, values in series.items()}
    shown = {name: pts for name, pts in shown.items() if pts}
    ends = {name: f"{pts[0][1]:.4g} → {pts[-1][1]:.4g}" for name, pts in shown.items()}
    left = math.ceil(pad + gap + max([48.0, *(text_width(name) for name in shown)]))
    end_x = left + plot_w + gap
    width = math.ceil(end_x + max([0.0, *(text_width(t) for t in ends.values())]) + pad)
    height = 2 * top + row_h * max(len(shown), 1) + 8
    rows = []
    for i, (name, pts) in enumerate(shown.items()):
        values = series[name]
        y0 = top + i * row_h
        lo, hi = min(v for _j, v in pts), max(v for _j, v in pts)
        span = (hi - lo) or 1.0
        n = max(len(values) - 1, 1)
        xy = [(left + plot_w * j / n, y0 + plot_h - plot_h * (v - lo) / span) for j, v in pts]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        hover = ", ".join(DASH if v is None else f"{v:.4g}" for v in values)
        if pts[0][0] > 0:
            hover += f" (no real value before epoch {pts[0][0] + 1})"
        mark = (f'<circle cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="2" fill="currentColor"/>'
                if len(xy) == 1 else "")
        rows.append(f'<g><title>{esc(name)}: {esc(hover)}</title>'
                    f'<text x="{left - gap}" y="{y0 + 14}" text-anchor="end">{esc(name)}</text>'
                    f'<polyline points="{points}" fill="none" stroke="currentColor" stroke-width="1.5"/>{mark}'
                    f'<text x="{end_x}" y="{y0 + 14}">{esc(ends[name])}</text></g>')
    return (f'<div class="chart"><h3>{esc(title)}</h3><p>{esc(note)}</p>'
            f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{esc(title)}">{"".join(rows)}</svg></div>')


def _training(report: dict) -> str:
    charts = [line_chart(f"{name}: per epoch", series,
                         "Each curve on its own scale; first → last value on the right (hover for all).")
              for name, series in training_curves(report)]
    return f'<div class="charts">{"".join(charts)}</div>'


def _charts(report: dict) -> str:
    ref = report.get("reference")
    rows = measurement_rows(report)
    by_label = {str(r.get("model")): r for r in report.get("ratios") or []}
    charts = []
    for key, title, note in (
        ("size_ratio", "Size vs baseline", "Shorter is smaller; the dashed line is each row's baseline (1.00x)."),
        ("p50_ratio", "p50 latency vs baseline",
         "Shorter is faster; the dashed line is each row's baseline (1.00x)."),
    ):
        items = []
        for row in rows:
            label = row["model"].text
            if label == ref:
                items.append((label, 1.0, "ref"))
            elif by_label.get(label, {}).get(key) is not None:
                items.append((label, float(by_label[label][key]), row[key].tone))
        if len(items) > 1:
            charts.append(bar_chart(title, items, note))
    if not charts:
        return "<p class='empty'>No ratios to chart (a reference and at least one candidate are needed).</p>"
    return f'<div class="charts">{"".join(charts)}</div>'


def _flags(report: dict) -> str:
    flags = report.get("flags") or []
    if not flags:
        return "<p class='empty'>No flags: nothing stood out against the reference.</p>"
    items = "".join(
        f"<li><strong>{esc(f.get('model'))}</strong> <span class='badge flag'>{esc(f.get('flag'))}</span>"
        f"{esc(f.get('message', ''))}</li>"
        for f in flags
    )
    return f'<ul class="flags">{items}</ul>'


def _environment(env: dict) -> str:
    info = {k: v for k, v in env.items() if k not in ("cpu_flags", "packages")}
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{inline(v)}</td></tr>" for k, v in info.items())
    flags = env.get("cpu_flags")
    if isinstance(flags, dict):
        badges = "".join(f"<span class='badge {'yes' if on else 'no'}'>{esc(name)} {'✓' if on else '✗'}</span>"
                         for name, on in flags.items())
        rows += f"<tr><th>int8 / bf16 cpu flags</th><td>{badges}</td></tr>"
    for name, version in (env.get("packages") or {}).items():
        rows += f"<tr><th>{esc(name)}</th><td class='mono'>{esc(version)}</td></tr>"
    return f'<table class="kv">{rows}</table>'


def _meta(report: dict) -> str:
    meta = [f"<code>{esc(report['command'])}</code>"] if report.get("command") else []
    if report.get("created"):
        meta.append(f"created {esc(report['created'])}")
    return " · ".join(meta)


def _run(report: dict) -> str:
    """The command line, what the figures were measured on and which data trained and selected."""
    def part(label: str, text: str) -> str:
        value = f"<code>{esc(text)}</code>" if label == "command" else esc(text)
        return f"<span class='label'>{esc(label)}:</span> {value}"

    items = "".join("<li>" + ", ".join(part(label, text) for label, text in line) + "</li>"
                    for line in run_context(report))
    return f'<ul class="run">{items}</ul>'


def _sections(report: dict, prefix: str = "", level: int = 2) -> list[str]:
    """Every section of one report but the environment (a bundle shows that once)."""
    def section(title: str, body: str, css_id: str) -> str:
        return _section(title, body, prefix + css_id, level)

    out = []
    if run_context(report):
        out.append(section("How this was run", _run(report), "run"))
    if report.get("input"):
        out.append(section("Input model", _kv_table(report["input"]), "input"))
    if report.get("artifact"):
        out.append(section("Artifact", _kv_table(report["artifact"]), "artifact"))
    if report.get("recipe"):
        out.append(section("Recipe", _recipe(report["recipe"]), "recipe"))
    if report.get("passes"):
        out.append(section("Passes", _passes(report), "passes"))
    for name, tried, sens in search_sections(report):
        out.append(section(f"{name}: configurations tried", _simple_table(TRIED_COLUMNS, tried), f"{name}-tried"))
        if sens:
            out.append(section(f"{name}: layer sensitivity", _simple_table(SENSITIVITY_COLUMNS, sens), f"{name}-sens"))
    if training_curves(report):
        out.append(section("Training curves", _training(report), "training"))
    out.append(section("Measurements", _measurements(report), "measurements"))
    out.append(section("Relative to the reference", _charts(report), "charts"))
    out.append(section("Flags", _flags(report), "flags"))
    if report.get("notes"):
        out.append(section("Notes", _notes(report["notes"]), "notes"))
    return out


def _simple_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _notes(notes: list) -> str:
    return "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"


def _page(title: str, meta: str, body: list[str], footer: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{esc(title)}</h1><p class=\"meta\">{meta}</p></header>\n"
        + "\n".join(body)
        + f"\n<footer>{esc(footer)}</footer>\n</main>\n</body>\n</html>\n"
    )


def render_html(report: dict) -> str:
    """The whole report as one HTML document string."""
    sections = _sections(report)
    if report.get("environment"):
        sections.append(_section("Environment", _environment(report["environment"]), "environment"))
    name = model_name(report)
    title = "slimkit report" + (f" – {name}" if name else "")
    return _page(title, _meta(report), sections, str(report.get("schema", "")))


def render_bundle_html(reports: list[dict], *, title: str = "slimkit reports", notes: list[str] | None = None,
                       schema: str = "") -> str:
    """Several reports (e.g. one per model in the demo) on one page, with a contents list and one
    environment table (they were measured in the same run)."""
    body = []
    if reports:
        links = "".join(f"<li><a href='#r{i}'>{esc(model_name(r) or f'report {i + 1}')}</a>"
                        f"{' · ' + str(len(r.get('flags') or [])) + ' flag(s)' if r.get('flags') else ''}</li>"
                        for i, r in enumerate(reports))
        body.append(_section("Contents", f"<ol>{links}</ol>", "contents"))
    if notes:
        body.append(_section("Notes", _notes(notes), "notes"))
    for i, report in enumerate(reports):
        heading = f"<h2 class='report-title'>{esc(model_name(report) or f'report {i + 1}')}</h2>"
        body.append(f"<article id='r{i}'>{heading}{''.join(_sections(report, prefix=f'r{i}-', level=3))}</article>")
    env = next((r["environment"] for r in reports if r.get("environment")), None)
    if env:
        body.append(_section("Environment", _environment(env), "environment"))
    meta = _meta(reports[0]) if reports else ""
    return _page(title, meta, body, schema)
