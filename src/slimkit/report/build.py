"""Assemble one report dict: what was run, on what, what came out, how it measured, and what to watch.

The dict is the single source for report.json, the HTML page and the terminal tables, so it is made
JSON-ready here once (numpy scalars, paths and enums converted, non-finite floats become null).
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from slimkit.report.environment import environment
from slimkit.report.flags import baseline_of, compute_flags, find_reference, ratios

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
    """Size and p50 ratios of each candidate against its baseline (see `baseline_of`), for candidates that
    have either. An entry names its baseline when that is not the report's reference."""
    if find_reference(measurements, reference_label) is None:
        return []
    out = []
    for m in measurements:
        if m.get("label") == reference_label:
            continue
        base = baseline_of(m, measurements, reference_label)
        rel = ratios(m, base) if base is not None else {}
        if rel:
            named = {"baseline": base.get("label")} if base.get("label") != reference_label else {}
            out.append({"model": m.get("label"), **named, **rel})
    return out


def evaluation_summary(measurements: list[dict]) -> tuple[dict | None, list[str]]:
    """What the figures were measured on (source, samples, batch, input shapes, threads), read from the first
    measurement (all share one evaluator), and a note when the requested batch size could not be used."""
    first = next((m for m in measurements if isinstance(m.get("data"), dict)), None)
    if first is None:
        return None, []
    data = first["data"]
    inputs = data.get("inputs") or {}
    ids = inputs.get("input_ids")
    summary = {
        "source": data.get("source"), "samples": data.get("samples"), "labelled": data.get("labelled"),
        "generated": data.get("generated"), "batch_size": first.get("batch_size"),
        "batch_size_requested": data.get("batch_size_requested", first.get("batch_size")),
        "inputs": inputs, "seq_len": ids[1] if isinstance(ids, list) and len(ids) == 2 else None,
        "threads": first.get("threads"),
    }
    notes = []
    requested, used = summary["batch_size_requested"], summary["batch_size"]
    if isinstance(requested, int) and isinstance(used, int) and used < requested:
        notes.append(f"batch size {requested} was asked for, but the evaluation data has {data.get('samples')} "
                     f"samples, so latency was timed at batch {used}")
    return summary, notes


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
    invocation: dict | None = None,
) -> dict:
    """The full report dict (schema slimkit.report/1), JSON-ready. `invocation` records how it was made
    (the command line, the working folder); see `invocation_now`."""
    measurements = to_jsonable(list(measurements))
    notes = [str(n) for n in notes or []]
    evaluation, evaluation_notes = evaluation_summary(measurements)
    notes.extend(evaluation_notes)
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
        "evaluation": evaluation,
        "invocation": invocation if invocation is not None else invocation_now(),
        "artifact": artifact,
        "reference": reference_label,
        "measurements": measurements,
        "ratios": compute_ratios(measurements, reference_label),
        "flags": compute_flags(measurements, reference_label),
        "notes": notes,
        "environment": environment(threads),
    })


def invocation_now() -> dict:
    """The command line that is running (as a shell would take it) and the working folder, for the report:
    the slimkit command when the CLI set it (see `set_command_line`), else this process's own argv."""
    import os
    import shlex
    import sys

    argv = _COMMAND_LINE.get()
    if argv is None:
        argv = [os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]] if sys.argv else []
    return {"command_line": shlex.join(argv), "cwd": os.getcwd()}


_COMMAND_LINE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("slimkit_command_line",
                                                                                  default=None)


def set_command_line(argv: list[str]) -> None:
    """Record the command being run (the CLI calls this with `slimkit` and its arguments)."""
    _COMMAND_LINE.set([str(a) for a in argv])
