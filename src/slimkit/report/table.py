"""The report in the terminal: rich tables for measurements and passes, then the flags in words.

All cell text is passed as `Text`, never as markup, so a model label like '[bold]' prints literally.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from slimkit.report.context import line_text, run_context
from slimkit.report.format import (
    MEASUREMENT_COLUMNS,
    SENSITIVITY_COLUMNS,
    TRIED_COLUMNS,
    measurement_rows,
    model_name,
    pass_rows,
    search_sections,
)

_TONE_STYLE = {"good": "green", "bad": "red", "warn": "yellow", "ref": "bold", "": ""}


def measurement_table(report: dict, title: str = "Measurements") -> Table:
    """One row per measured model; ratios are against the report's reference.

    Labels (model, runtime, vs) never wrap: a long path (`bench runs/a/model.onnx ...`) shows as `…/a/model.onnx`,
    the fewest trailing parts (folder and file name at least) that keep the labels apart; report.json keeps it
    whole. A header wider than its numbers takes several lines; only long multi-word cells (a ratio with its
    range, an accuracy with its interval, flags) wrap, at spaces, when the table is too wide.
    """
    import textwrap
    from pathlib import PurePath

    from rich.cells import cell_len

    rows = measurement_rows(report)
    labels = list(dict.fromkeys(row[key].text for row in rows for key in ("model", "baseline")))
    parts = {label: PurePath(label).parts for label in labels}
    shown = {}
    for label in labels:
        mine = parts[label]
        shown[label] = label
        if len(label) <= 32 or len(mine) < 3:
            continue
        for depth in range(2, len(mine)):
            if not any(other != label and parts[other][-depth:] == mine[-depth:] for other in labels):
                shown[label] = "…/" + str(PurePath(*mine[-depth:]))
                break
    table = Table(title=title, title_justify="left", header_style="bold")
    for key, header, right in MEASUREMENT_COLUMNS:
        cells = [shown.get(row[key].text, row[key].text) for row in rows] or [""]
        widest = max(cell_len(c) for c in cells)
        label = key in ("model", "runtime", "baseline")
        wraps = not label and (not right or (widest > 12 and any(" " in c for c in cells)))  # flags always
        if right and cell_len(header) > widest + 1:  # a header wider than its numbers: one word a line
            header = "\n".join(textwrap.wrap(header, width=max(widest, 4), break_long_words=False))
        longest_word = max((cell_len(w) for c in cells for w in c.split()), default=0)
        table.add_column(Text(header), justify="right" if right else "left", no_wrap=not wraps, overflow="fold",
                         min_width=(longest_word if wraps else None) if right else 8)  # numbers never fold
    for row in rows:
        table.add_row(*(Text(shown.get(row[key].text, row[key].text) if key in ("model", "baseline")
                             else row[key].text, style=_TONE_STYLE.get(row[key].tone, ""))
                        for key, _h, _r in MEASUREMENT_COLUMNS))
    return table


def passes_table(report: dict, title: str = "Passes") -> Table:
    """What each pass did and how long it took."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("pass")
    table.add_column("kinds")
    table.add_column("seconds", justify="right")
    table.add_column("stats", overflow="fold")
    for row in pass_rows(report):
        table.add_row(Text(row["pass"]), Text(row["kinds"]), Text(row["seconds"]), Text(row["stats"]))
    return table


def search_tables(report: dict) -> list[Table]:
    """Accuracy-aware passes: the configurations tried, and the per-layer sensitivity table."""
    tables = []
    for name, tried, sens in search_sections(report):
        for title, columns, rows in ((f"{name}: configurations tried", TRIED_COLUMNS, tried),
                                     (f"{name}: layer sensitivity (quantized alone)", SENSITIVITY_COLUMNS, sens)):
            if not rows:
                continue
            table = Table(title=title, title_justify="left", header_style="bold")
            for i, col in enumerate(columns):
                table.add_column(col, justify="left" if i == 0 and columns is SENSITIVITY_COLUMNS else "right")
            for row in rows:
                table.add_row(*(Text(c) for c in row))
            tables.append(table)
    return tables


def print_report(report: dict, console: Console | None = None) -> None:
    """Print the passes (if any), the measurements, the flag messages and the notes."""
    console = console or Console()
    header = Text("slimkit report", style="bold")
    if report.get("command"):
        header.append(f"  {report['command']}", style="dim")
    console.print(header)
    name = model_name(report)
    if name:
        console.print(Text(f"input: {name}"))
    artifact = report.get("artifact") or {}
    where = artifact.get("path") or artifact.get("folder")
    if where:
        console.print(Text(f"artifact: {where}"))
    for line in run_context(report):  # command line, what it was measured on, which data trained and selected
        console.print(Text(line_text(line)))
    if report.get("passes"):
        console.print(passes_table(report))
    for table in search_tables(report):
        console.print(table)
    console.print(measurement_table(report))
    flags = report.get("flags") or []
    if flags:
        console.print(Text("Flags", style="bold yellow"))
        for f in flags:
            line = Text("  ! ", style="yellow")
            line.append(f"{f.get('model')} ", style="bold")
            line.append(f"[{f.get('flag')}] ", style="yellow")
            line.append(str(f.get("message", "")))
            console.print(line)
    for note in report.get("notes") or []:
        console.print(Text(f"note: {note}", style="dim"))
