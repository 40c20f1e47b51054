"""The `slimkit.json` sidecar slimkit writes beside its artifacts: task, tokenizer, input names, limits.

Loaders read it back so a model written by slimkit loads with what slimkit knew about it.
"""

from __future__ import annotations

import json
from pathlib import Path

from slimkit.models.base import WorkingModel

SIDECAR = "slimkit.json"


def sidecar_for(path: Path) -> dict | None:
    """The sidecar slimkit wrote beside a model file, if any."""
    for candidate in (path.parent / f"{path.stem}.{SIDECAR}", path.parent / SIDECAR):
        if candidate.exists():
            try:
                return json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError):
                return None
    return None


def apply_sidecar(model: WorkingModel, path: Path) -> WorkingModel:
    """Task, tokenizer and position limit from the `slimkit.json` slimkit writes beside its artifacts (the input
    names it records are read by the formats that need them: TFLite)."""
    sidecar = sidecar_for(path)
    if not sidecar:
        return model
    if model.task is None and sidecar.get("task"):
        model.task = sidecar["task"]
    tokenizer = sidecar.get("tokenizer")
    if tokenizer and (path.parent / tokenizer).is_dir():
        model.tokenizer_dir = (path.parent / tokenizer).resolve()
    if model.max_positions is None and isinstance(sidecar.get("max_positions"), int):
        model.max_positions = sidecar["max_positions"]
    return model
