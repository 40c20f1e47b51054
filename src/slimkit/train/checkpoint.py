"""Checkpoints that are safe to load (`weights_only=True`: tensors, numbers, strings, lists, dicts)
and that refuse to resume a different model, config or data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.errors import SlimkitError, first_line
from slimkit.train.config import TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def config_hash(config: TrainConfig) -> str:
    """A stable fingerprint of every training setting: resuming under other settings is refused."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write `folder/checkpoint.pt` atomically: a crash mid-write leaves the previous checkpoint intact."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_NAME
    tmp = folder / f".{CHECKPOINT_NAME}.tmp"
    with open(tmp, "wb") as handle:
        torch.save({"format": FORMAT, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """Read the checkpoint in `folder` without unpickling arbitrary objects."""
    path = Path(folder) / CHECKPOINT_NAME
    if not path.is_file():
        raise SlimkitError(f"no checkpoint in {folder}", "run without --resume first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SlimkitError(f"checkpoint {path} is unreadable ({first_line(exc, 120)})",
                           "delete it and run without --resume") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SlimkitError(f"{path} is not a slimkit training checkpoint", "delete it and run without --resume")
    return state


def check_compatible(state: dict[str, Any], module: nn.Module, extra: list[nn.Parameter], config: TrainConfig,
                     num_samples: int, path: Path) -> None:
    """Refuse a checkpoint made for another model (keys/shapes), another config or other data.

    `extra` are optimized tensors outside the module (e.g. a distillation projection), named extra.0, ...
    """
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    ours.update({f"extra.{i}": tuple(p.shape) for i, p in enumerate(extra)})
    theirs = {k: tuple(v.shape) for k, v in state["weights"]["model"].items()}
    theirs.update({f"extra.{i}": tuple(v.shape) for i, v in enumerate(state["weights"]["extra"])})
    if ours != theirs:
        diff = sorted(set(ours) ^ set(theirs)) or [k for k in ours if ours[k] != theirs[k]]
        key = diff[0]
        raise SlimkitError(
            f"checkpoint {path} is for a different model ('{key}': here {ours.get(key, 'missing')}, "
            f"checkpoint {theirs.get(key, 'missing')})",
            "resume with the model it was made from, or use a new checkpoint folder",
        )
    if state["config_hash"] != config_hash(config):
        saved = state["config"]
        changed = [k for k, v in config.model_dump(mode="json").items() if saved.get(k) != v]
        raise SlimkitError(f"checkpoint {path} was made with other training settings (changed: {changed})",
                           "resume with the same settings, or use a new checkpoint folder")
    if state["num_samples"] != num_samples:
        raise SlimkitError(
            f"checkpoint {path} was made on {state['num_samples']} training samples, this run has {num_samples}",
            "resume with the same data, or use a new checkpoint folder")
