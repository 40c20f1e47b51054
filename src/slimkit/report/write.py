"""Write report.json and report.html so that a crash or a full disk never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from slimkit.report.build import to_jsonable
from slimkit.report.html import render_bundle_html, render_html

BUNDLE_SCHEMA = "slimkit.reports/1"


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temp file in the same folder (same filesystem), then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(folder: Path, report: dict) -> tuple[Path, Path]:
    """Write `folder`/report.json (indent 2) and `folder`/report.html; returns both paths."""
    data = to_jsonable(report)
    return _write_pair(Path(folder), data, render_html(data))


def write_report_bundle(folder: Path, reports: list[dict], *, title: str = "slimkit reports",
                        notes: list[str] | None = None, schema: str = BUNDLE_SCHEMA) -> tuple[Path, Path]:
    """Several reports as one report.json ({schema, title, reports, notes}) and one report.html page."""
    data = to_jsonable({"schema": schema, "title": title, "reports": list(reports), "notes": list(notes or [])})
    html_text = render_bundle_html(data["reports"], title=title, notes=data["notes"], schema=schema)
    return _write_pair(Path(folder), data, html_text)


def _write_pair(folder: Path, data: dict, html_text: str) -> tuple[Path, Path]:
    # Both texts exist before either file is touched, so a rendering error writes neither.
    json_text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "report.html"
    _atomic_write(json_path, json_text)
    _atomic_write(html_path, html_text)
    return json_path, html_path
