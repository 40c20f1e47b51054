"""Assemble one report dict: what was run, on what, what came out, how it measured, and what to watch.

The dict is the single source for report.json, the HTML page and the terminal tables, so it is made
JSON-ready here once (numpy scalars, paths and enums converted, non-finite floats become null).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from slimkit.report.environment import environment
from slimkit.report.flags import compute_flags, find_reference, ratios

SCHEMA = "slimkit.report/1"


def to_jsonable(obj: Any) -> Any:
    """A copy of `obj` that json.dumps accepts and that round-trips as strict JSON (no NaN/Infinity)."""
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((to_jsonable(v) for v in obj), key=str)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "model_dump"):  # pydantic configs
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    return str(obj)


def compute_ratios(measurements: list[dict], reference_label: str | None) -> list[dict]:
    """Size and p50 ratios of each candidate against the reference, for candidates that have either."""
    reference = find_reference(measurements, reference_label)
    if reference is None:
        return []
    out = []
    for m in measurements:
        if m.get("label") == reference_label:
            continue
        rel = ratios(m, reference)
        if rel:
            out.append({"model": m.get("label"), **rel})
    return out


def build_report(
    *,
    command: str,
    input_model: dict,
    measurements: list[dict],
    reference_label: str | None,
    recipe: dict | None = None,
    passes: list[dict] | None = None,
    artifact: dict | None = None,
    threads: int = 2,
    notes: list[str] | None = None,
    data: dict | None = None,
) -> dict:
    """The full report dict (schema slimkit.report/1), JSON-ready."""
    measurements = to_jsonable(list(measurements))
    notes = [str(n) for n in notes or []]
    if reference_label is not None and find_reference(measurements, reference_label) is None:
        notes.append(f"The reference '{reference_label}' is not among the measurements, "
                     "so no ratios or reference comparisons were made.")
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return to_jsonable({
        "schema": SCHEMA,
        "created": created,
        "command": command,
        "input": input_model,
        "recipe": recipe,
        "passes": passes or [],
        "data": data,
        "artifact": artifact,
        "reference": reference_label,
        "measurements": measurements,
        "ratios": compute_ratios(measurements, reference_label),
        "flags": compute_flags(measurements, reference_label),
        "notes": notes,
        "environment": environment(threads),
    })
