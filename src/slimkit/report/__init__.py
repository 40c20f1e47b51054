"""Reports: one JSON-ready dict per run, rendered as report.json, a self-contained HTML page and rich tables."""

from slimkit.report.build import build_report, to_jsonable
from slimkit.report.environment import environment
from slimkit.report.flags import compute_flags
from slimkit.report.html import render_bundle_html, render_html
from slimkit.report.table import measurement_table, passes_table, print_report
from slimkit.report.write import write_report, write_report_bundle

__all__ = [
    "build_report",
    "compute_flags",
    "environment",
    "measurement_table",
    "passes_table",
    "print_report",
    "render_bundle_html",
    "render_html",
    "to_jsonable",
    "write_report",
    "write_report_bundle",
]
