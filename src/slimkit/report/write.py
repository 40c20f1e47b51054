"""Write report.json and report.html so that a crash or a full disk never leaves a half-written file."""

from __future__ import annotations

import json
from pathlib import Path

from slimkit.fileio import write_atomic
from slimkit.report.build import to_jsonable
from slimkit.report.html import render_bundle_html, render_html

BUNDLE_SCHEMA = "slimkit.reports/1"


def _atomic_write(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def write_report(folder: Path, report: dict, stem: str = "report") -> tuple[Path, Path]:
    """Write `folder`/STEM.json (indent 2) and `folder`/STEM.html; returns both paths."""
    data = to_jsonable(report)
    return write_pair(Path(folder), data, render_html(data), stem)


def write_report_bundle(folder: Path, reports: list[dict], *, title: str = "slimkit reports",
                        notes: list[str] | None = None, schema: str = BUNDLE_SCHEMA) -> tuple[Path, Path]:
    """Several reports as one report.json ({schema, title, reports, notes}) and one report.html page."""
    data = to_jsonable({"schema": schema, "title": title, "reports": list(reports), "notes": list(notes or [])})
    html_text = render_bundle_html(data["reports"], title=title, notes=data["notes"], schema=schema)
    return write_pair(Path(folder), data, html_text)


def write_pair(folder: Path, data: dict, html_text: str, stem: str = "report") -> tuple[Path, Path]:
    """STEM.json and STEM.html in `folder`, each written whole then renamed (the search's report uses it too)."""
    # Both texts exist before either file is touched, so a rendering error writes neither.
    json_text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / f"{stem}.json", folder / f"{stem}.html"
    _atomic_write(json_path, json_text)
    _atomic_write(html_path, html_text)
    return json_path, html_path
