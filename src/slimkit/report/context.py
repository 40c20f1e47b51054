"""How a report came about, stated at the top of the HTML page and the terminal summary: the command line,
what the figures were measured on, and which data trained and selected.

Each line is a list of (label, text) parts, e.g. [("trained on", "train.npz"), ("selected on", "val.npz")];
the terminal prints them as 'label: text, label: text' and the page the same way with the command in code.
Keys that a report lacks (older reports, `bench`, the API) are skipped.
"""

from __future__ import annotations

from typing import Any

Line = list[tuple[str, str]]


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _evaluation(ev: dict) -> str:
    """'SOURCE, N samples, batch B, sequence L, T threads' from the parts that are there."""
    parts = [str(ev["source"])] if ev.get("source") else []
    if ev.get("samples") is not None:
        parts.append(_plural(ev["samples"], "sample"))
    batch, asked = ev.get("batch_size"), ev.get("batch_size_requested")
    if batch is not None:
        parts.append(f"batch {batch}" + (f" (asked for {asked})" if asked is not None and asked != batch else ""))
    if ev.get("seq_len") is not None:
        parts.append(f"sequence {ev['seq_len']}")
    if ev.get("threads") is not None:
        parts.append(_plural(ev["threads"], "thread"))
    return ", ".join(parts)


def run_context(report: dict) -> list[Line]:
    """The lines that say how the report was made, in display order; empty when the report carries none."""
    lines: list[Line] = []
    invocation = report.get("invocation")
    if isinstance(invocation, dict) and invocation.get("command_line"):
        line = [("command", str(invocation["command_line"]))]
        if invocation.get("cwd"):
            line.append(("run in", str(invocation["cwd"])))
        lines.append(line)
    evaluation = report.get("evaluation")
    measured = _evaluation(evaluation) if isinstance(evaluation, dict) else ""
    data = report.get("data")
    data = data if isinstance(data, dict) else {}
    seen = [str(s) for s in data.get("evaluation_seen_by") or []]
    seen_note = f" (also used for {', '.join(seen)})" if seen else ""
    if measured:
        lines.append([("measured on", measured + seen_note)])
    uses = data.get("uses")
    uses = set(uses) if isinstance(uses, list) else None  # None: an older report, show what is there
    plan: Line = []
    if data.get("train") and (uses is None or "train" in uses):
        plan.append(("trained on", str(data["train"])))
    if data.get("select") and (uses is None or uses & {"train", "select", "calibrate"}):
        word = "calibrated on" if uses and "calibrate" in uses and not uses & {"train", "select"} else "selected on"
        plan.append((word, str(data["select"])))
    if data.get("evaluate") and not measured:
        plan.append(("measured on", str(data["evaluate"]) + seen_note))
    split = data.get("split")
    if isinstance(split, dict) and split.get("source"):
        plan.append(("split", f"{split['source']} into {split.get('train', '?')} train / "
                              f"{split.get('validation', '?')} validation samples (seed {split.get('seed', '?')})"))
    if plan:
        lines.append(plan)
    return lines


def line_text(line: Line) -> str:
    """A line as plain text: 'label: text, label: text'."""
    return ", ".join(f"{label}: {text}" for label, text in line)
