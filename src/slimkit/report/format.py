"""Cell text shared by the terminal tables and the HTML page, so both show the same numbers the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slimkit.report.flags import (
    SMALLER_SIZE_RATIO,
    accuracy_change,
    baseline_of,
    speed_verdict,
    value,
)

DASH = "–"


@dataclass(frozen=True)
class Cell:
    """Display text plus a tone ('good', 'bad', 'warn', 'ref' or '') that each renderer styles its own way."""

    text: str
    tone: str = ""


# (key, header, right-aligned) for the measurements table, in display order.
MEASUREMENT_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("model", "model", False),
    ("runtime", "runtime", False),
    ("baseline", "vs", False),
    ("size", "size", True),
    ("size_ratio", "size vs base", True),
    ("p50", "p50 ms", True),
    ("p50_ratio", "p50 vs base", True),
    ("p90", "p90 ms", True),
    ("cosine_mean", "cos mean", True),
    ("cosine_min", "cos min", True),
    ("max_abs_err", "max abs err", True),
    ("top1", "top-1 agree", True),
    ("accuracy", "accuracy", True),
    ("flags", "flags", False),
)


def human_size(n: float | None) -> str:
    """Bytes in decimal units, e.g. 87000000 -> '87.0 MB'."""
    if n is None:
        return DASH
    if abs(n) < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    return DASH  # unreachable


def fmt_ratio(r: float | None) -> str:
    """Two decimals, or two significant digits below 0.1 so a large speed-up never reads 0.00x."""
    if r is None:
        return DASH
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return DASH
    if ms >= 100:
        return f"{ms:.1f}"
    return f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def fmt_fixed(v: float | None, digits: int = 5) -> str:
    return DASH if v is None else f"{v:.{digits}f}"


def fmt_sci(v: float | None) -> str:
    return DASH if v is None else f"{v:.2e}"


def fmt_pct(v: float | None) -> str:
    return DASH if v is None else f"{100 * v:.1f}%"


def _short(v: Any, key: str = "") -> str:
    """One stats value as short text; a byte count (key `size_bytes`, `file_bytes_before`, ...) in kB/MB."""
    words = key.lower().split("_")
    if ("bytes" in words or words[-1].endswith("bytes")) and isinstance(v, int | float) and not isinstance(v, bool):
        return human_size(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list | tuple) and all(isinstance(x, int | str) for x in v):
        return "x".join(str(x) for x in v) if all(isinstance(x, int) for x in v) else ",".join(map(str, v))
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"), default=str)
    return str(v)


def outcome_lead(outcome: Any) -> str | None:
    """What a pass's recorded outcome (report.json's `outcome`) puts before its stats: why it was skipped,
    how far off a missed target was, or that the target was met; None for a pass that just did its work."""
    if not isinstance(outcome, dict):
        return None
    status, reason = outcome.get("status"), outcome.get("reason")
    if status == "skipped":
        return f"skipped: {reason}"
    if status == "missed":
        return f"target missed: {reason}"
    if status == "met":
        return "target met"
    return None


def is_skipped(outcome: Any) -> bool:
    return isinstance(outcome, dict) and outcome.get("status") == "skipped"


def summarize_stats(stats: Any, limit: int = 90, outcome: Any = None) -> str:
    """A pass's stats dict as one short 'key=value, ...' line, led by its outcome (see `outcome_lead`); a
    skipped pass shows only why."""
    lead = outcome_lead(outcome)
    if is_skipped(outcome):
        text = str(lead)
    elif not stats:
        text = lead or DASH
    else:
        if isinstance(stats, dict):
            body = ", ".join(f"{k}={_short(v, str(k))}" for k, v in stats.items())
        else:
            body = _short(stats)
        text = f"{lead}; {body}" if lead else body
    return text if len(text) <= limit else text[: limit - 1] + "…"


def model_name(report: dict) -> str:
    """What the report is about: the input model's source (or 'model', as `bench` and the API write it)."""
    info = report.get("input") or {}
    return str(info.get("source") or info.get("model") or "")


def ratios_by_label(report: dict) -> dict[str, dict]:
    return {str(r.get("model")): r for r in report.get("ratios") or []}


def flags_by_label(report: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.get("flags") or []:
        out.setdefault(str(f.get("model")), []).append(str(f.get("flag")))
    return out


def _ratio_cell(r: float | None, good: bool, bad: bool) -> Cell:
    return Cell(fmt_ratio(r), "good" if good else "bad" if bad else "")


def _p50_cell(rel: dict) -> Cell:
    """The latency ratio with its spread over rounds; "no measurable difference" when the spread includes 1.0."""
    p50_r, spread, verdict = rel.get("p50_ratio"), rel.get("p50_ratio_spread"), speed_verdict(rel)
    if p50_r is None:
        return Cell(DASH)
    text = fmt_ratio(p50_r) + (f" ({fmt_ratio(spread[0])[:-1]}-{fmt_ratio(spread[1])[:-1]})" if spread else "")
    if verdict == "same" and spread and spread[0] <= 1.0 <= spread[1]:
        text += " no measurable difference"
    return Cell(text, "good" if verdict == "faster" else "bad" if verdict == "slower" else "")


def _accuracy_cell(m: dict, reference: dict | None) -> Cell:
    """Accuracy with its 95% interval; red only for a drop the interval can tell from noise."""
    acc = value(m, "metrics", "accuracy")
    interval = (m.get("metrics") or {}).get("accuracy_ci95")
    text = fmt_pct(acc)
    if acc is not None and isinstance(interval, list) and len(interval) == 2:
        text += f" ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})"
    change = accuracy_change(m, reference) if reference is not None else None
    return Cell(text, "bad" if change == "drop" else "good" if change == "gain" else "")


def measurement_rows(report: dict) -> list[dict[str, Cell]]:
    """One dict of cells per measurement, keyed like MEASUREMENT_COLUMNS; ratios are against each row's
    baseline (the `vs` column), fidelity against the reference."""
    reference = report.get("reference")
    measurements = report.get("measurements") or []
    ratios = ratios_by_label(report)
    flags = flags_by_label(report)
    rows = []
    for m in measurements:
        label = str(m.get("label") or m.get("model") or "?")
        is_ref = reference is not None and label == reference
        base = None if is_ref else baseline_of(m, measurements, reference)
        rel = ratios.get(label, {})
        size_r = rel.get("size_ratio")
        if is_ref:
            size_cell = p50_cell = Cell("ref", "ref")
        else:
            size_cell = _ratio_cell(size_r, size_r is not None and size_r <= SMALLER_SIZE_RATIO, False)
            p50_cell = _p50_cell(rel)
        model_flags = flags.get(label, [])
        rows.append({
            "model": Cell(label, "ref" if is_ref else ""),
            "runtime": Cell(str(m.get("runtime") or DASH)),
            "baseline": Cell("ref", "ref") if is_ref else Cell(str(base.get("label")) if base else DASH),
            "size": Cell(human_size(value(m, "size_bytes"))),
            "size_ratio": size_cell,
            "p50": Cell(fmt_ms(value(m, "latency_ms", "p50"))),
            "p50_ratio": p50_cell,
            "p90": Cell(fmt_ms(value(m, "latency_ms", "p90"))),
            "cosine_mean": Cell(fmt_fixed(value(m, "fidelity", "cosine_mean"))),
            "cosine_min": Cell(fmt_fixed(value(m, "fidelity", "cosine_min"))),
            "max_abs_err": Cell(fmt_sci(value(m, "fidelity", "max_abs_err"))),
            "top1": Cell(fmt_pct(value(m, "fidelity", "top1_agreement"))),
            "accuracy": _accuracy_cell(m, base),
            "flags": Cell(", ".join(model_flags) if model_flags else DASH, "warn" if model_flags else ""),
        })
    return rows


def pass_rows(report: dict) -> list[dict[str, str]]:
    """Pass name (marked when the pipeline inserted it), kinds, seconds and a one-line stats summary."""
    rows = []
    for p in report.get("passes") or []:
        name = str(p.get("pass", "?")) + (" (inserted)" if p.get("inserted") else "")
        if p.get("artifact"):  # the demo runs several recipes into one report
            name = f"{p['artifact']}: {name}"
        kinds = f"{p['kind_in']} → {p['kind_out']}" if p.get("kind_in") and p.get("kind_out") else DASH
        seconds = value(p, "seconds")
        rows.append({"pass": name, "kinds": kinds, "seconds": DASH if seconds is None else f"{seconds:.2f}",
                     "stats": summarize_stats(p.get("stats"), outcome=p.get("outcome"))})
    return rows


# ---- accuracy-aware search (int8-auto): what was tried and how sensitive each layer is ----

TRIED_COLUMNS = ("kept float", "cos mean", "cos min", "accuracy", "p50 ms", "vs float", "size", "meets")
SENSITIVITY_COLUMNS = ("layer", "op", "params", "loss alone", "cos mean")


def search_sections(report: dict, top: int = 15) -> list[tuple[str, list[tuple[str, ...]], list[tuple[str, ...]]]]:
    """(pass name, tried rows, sensitivity rows) for each pass that searched configurations."""
    sections = []
    for step in report.get("passes") or []:
        stats = step.get("stats") if isinstance(step.get("stats"), dict) else {}
        if not stats.get("tried"):
            continue
        tried = [(
            str(t.get("kept_float", 0)) + (f" ({t['variant']})" if t.get("variant") else ""), fmt_fixed(t.get("cosine_mean")), fmt_fixed(t.get("cosine_min")),
            fmt_pct(t.get("accuracy")), fmt_ms(t.get("p50_ms")), fmt_ratio(t.get("latency_ratio")),
            human_size(t.get("size_bytes")), "yes" if t.get("meets") else "no",
        ) for t in stats["tried"]]
        sens = [(
            str(r["layer"]), str(r["op_type"]), f"{r['params']:,}", f"{r['loss']:.2e}", fmt_fixed(r.get("cosine_mean")),
        ) for r in (stats.get("sensitivity") or [])[:top]]
        sections.append((str(step.get("pass")), tried, sens))
    return sections


def training_curves(report: dict) -> list[tuple[str, dict[str, list[float | None]]]]:
    """(pass, {series: per-epoch values}) for every pass that trained: its loss parts and its eval score.

    An epoch without a real value is None: a NaN/Inf (null in report.json) in any series, and in the score
    the sentinel -2.0 that passes/recovery.py records for epochs before the model is ready to be scored
    (e.g. before pruning reaches its target), which sits below any accuracy or cosine.
    """
    score_sentinel = -2.0

    def real(k: str, v: Any) -> float | None:
        if not isinstance(v, int | float) or isinstance(v, bool) or v != v or abs(v) == float("inf"):
            return None
        return None if k in ("score", "eval_score") and float(v) == score_sentinel else float(v)

    out = []
    for step in report.get("passes") or []:
        stats = step.get("stats") if isinstance(step, dict) else None
        if not isinstance(stats, dict):
            continue
        history = stats.get("history") or (stats.get("training") or {}).get("history")
        if not history or not all(isinstance(row, dict) for row in history):
            continue
        keys = [k for k in history[0] if k not in ("epoch", "steps", "lr")
                and all(row.get(k) is None or isinstance(row.get(k), int | float) for row in history)]
        series = {k: [real(k, row.get(k)) for row in history] for k in keys}
        series = {k: vals for k, vals in series.items() if any(v is not None for v in vals)}
        if series:
            out.append((str(step.get("pass", "?")), series))
    return out
