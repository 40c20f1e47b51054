"""Writing artifacts: canonical file names, the tokenizer beside them, and atomic replacement.

Outputs are staged in a hidden folder next to the target and moved into place only when complete,
so a failed run leaves no half-written artifact, and the user's input files are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from slimkit.errors import SlimkitError
from slimkit.fileio import check_not_input
from slimkit.formats.registry import format_of_kind
from slimkit.models.base import OpenVinoModel, WorkingModel
from slimkit.models.sidecar import SIDECAR, sidecar_for

_MARKERS = ("report.json", SIDECAR)


def write_artifact(model: WorkingModel, folder: Path, filename: str | None = None) -> Path:
    """Write `model` into `folder` under a canonical name (plus tokenizer and sidecar); returns the main file."""
    folder.mkdir(parents=True, exist_ok=True)
    fmt = format_of_kind(str(model.kind))
    name = filename or fmt.filename
    target = folder / name
    if fmt.write is None:
        raise SlimkitError(f"slimkit cannot write {fmt.name} models", "convert the model to an output format first")
    fmt.write(model, target)
    tokenizer = None
    if model.tokenizer_dir is not None:
        tokenizer = "tokenizer" if name.startswith("model.") else f"{Path(name).stem}.tokenizer"
        _copy_tokenizer(Path(model.tokenizer_dir), folder / tokenizer)
    sidecar = {
        "kind": str(model.kind),
        "task": model.task,
        "tokenizer": tokenizer,
        "input_names": _input_names(model),
        "source": model.source,
    }
    if model.max_positions:
        sidecar["max_positions"] = model.max_positions
    if isinstance(model, OpenVinoModel) and model.precision:
        sidecar["inference_precision"] = model.precision  # also in the IR's runtime_options
    sidecar_path = folder / (SIDECAR if name.startswith("model.") else f"{Path(name).stem}.{SIDECAR}")
    sidecar_path.write_text(json.dumps(sidecar, indent=2))
    return target


def _input_names(model: WorkingModel) -> list[str] | None:
    names = getattr(model, "input_names", None)
    if names:
        return list(names)
    specs = getattr(model, "input_specs", None)
    return [s.name for s in specs] if specs else None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                    "merges.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json",
                    "config.json")


def _copy_tokenizer(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)


def check_output_folder(target: Path, *, overwrite: bool = False) -> None:
    """Refuse an output folder that is a file, holds someone else's files, or (without `overwrite`) holds an
    earlier slimkit output: a user who points -o at last week's result expects a refusal, not a loss."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise SlimkitError(f"output {target} exists and is a file", "pass a folder path to -o")
    if not target.exists() or not any(target.iterdir()):
        return
    if not any((target / m).exists() for m in _MARKERS):
        raise SlimkitError(f"output folder {target} exists and is not a slimkit output",
                           "choose a new or empty folder; slimkit only replaces its own outputs")
    if not overwrite:
        raise SlimkitError(f"output folder {target} already holds a slimkit output",
                           "pass --overwrite (overwrite=True) to replace it, or choose a new folder")


def check_output_file(target: Path, *, overwrite: bool = False) -> None:
    """Refuse to replace an existing file unless `overwrite`."""
    target = Path(target)
    if target.is_dir():
        raise SlimkitError(f"output {target} is a folder", f"name the file, like {target / 'model.onnx'}")
    if target.exists() and not overwrite:
        raise SlimkitError(f"output {target} already exists",
                           "pass --overwrite (overwrite=True) to replace it, or choose a new name")


def output_warnings(output_file: Path, inputs: list[Path]) -> list[str]:
    """A warning when an output file goes into the input model's own folder, where its sidecar (slimkit.json)
    and tokenizer land beside the user's files."""
    out = Path(output_file).resolve()
    for item in inputs:
        folder = Path(item).resolve().parent
        if Path(item).is_file() and out.parent == folder:
            return [f"{output_file} was written into the input model's folder {folder}, with slimkit.json beside "
                    "it; keep outputs in their own folder so they cannot be mixed up with inputs"]
    return []


@contextlib.contextmanager
def staged_folder(target: Path, inputs: list[Path] | None = None, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder; on success it replaces `target` in one rename. An earlier slimkit output
    there is replaced only with `overwrite`."""
    target = Path(target)
    check_not_input(target, inputs or [])
    check_output_folder(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def publish_files(stage: Path, target_file: Path) -> None:
    """Move a staged artifact (main file, companions, tokenizer, sidecar) beside `target_file`."""
    target_file.parent.mkdir(parents=True, exist_ok=True)
    for item in sorted(stage.iterdir()):
        destination = target_file.parent / item.name
        if item.is_dir():
            if destination.exists():
                shutil.rmtree(destination)
            os.replace(item, destination)
        else:
            os.replace(item, destination)


__all__ = ["SIDECAR", "check_not_input", "check_output_file", "check_output_folder", "output_warnings",
           "publish_files", "sidecar_for", "staged_folder", "write_artifact"]
