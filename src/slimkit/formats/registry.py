"""The format registry: one record per model file format, read by loading, measurement, artifacts and `--to`.

A format module (a module of `slimkit.formats`, or a third-party module named in the `slimkit.formats` entry
point group) defines `FORMAT = Format(...)`: the kind of model it loads into, its file suffixes, its loader,
its runner, its writer, and, for an output format, the pass that converts to it and how a recipe is retargeted
to end in it. Nothing else branches on formats: adding one is one module (see `formats/tflite.py`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import SlimkitError
from slimkit.models.base import InputSpec, WorkingModel

ENTRY_POINT_GROUP = "slimkit.formats"

Step = tuple[str, dict[str, Any]]


class Runner:
    """Runs a model on feed dicts keyed by input name. `runtime` names what actually executes it."""

    runtime = "?"
    input_specs: list[InputSpec]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class LoadOptions:
    """What a loader may need besides the path (shapes and data only matter for PyTorch files)."""

    task: str | None = None
    shapes: Mapping[str, Any] | None = None
    data: Any = None
    check: bool = True


@dataclass(frozen=True)
class Retarget:
    """How a recipe ends in this format (`--to NAME`), read by `pipeline.retarget`.

    `equivalents` map a pass that has a better-suited twin on this format to that twin (with its config
    carried over); `merge_into_converter` passes become options of the conversion itself (fp16 weights in a
    TFLite flatbuffer); `dropped` passes have no meaning here (ONNX Runtime-only fusion). Passes that make
    another format are refused before any work.
    """

    equivalents: Mapping[str, Callable[[dict], Step]] = field(default_factory=dict)
    merge_into_converter: Mapping[str, Callable[[dict], dict]] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Format:
    """One model file format. `runner`/`write` may be None for input-only formats (Keras loads into PyTorch)."""

    name: str
    kind: str
    suffixes: tuple[str, ...] = ()
    load: Callable[[Path, LoadOptions], WorkingModel] | None = None
    runner: Callable[[WorkingModel, int], Runner] | None = None
    runtime: str = ""
    filename: str = ""
    write: Callable[[WorkingModel, Path], None] | None = None
    # The pass that makes this format, and the built-in recipe that makes its plain fp32 artifact: what an
    # artifact of this format is judged against (see `slimkit.baseline`).
    converter: str | None = None
    plain_recipe: str | None = None
    retarget: Retarget | None = None
    # Offered as `--to NAME` (convert and optimize); other formats are written only as a recipe's result.
    output: bool = False
    # More `convert --to` names that make this format with another built-in recipe (ONNX: fp16).
    convert_variants: Mapping[str, str] = field(default_factory=dict)
    # A runtime that also runs ONNX files as they are (OpenVINO reads them): `bench --runtime NAME` wraps an
    # ONNX model with this to measure it there.
    run_onnx: Callable[[WorkingModel], WorkingModel] | None = None
    # How messages name it ("TFLite"), and what `--to` help says of it.
    label: str = ""
    description: str = ""


_FORMATS: dict[str, Format] = {}
_DISCOVERED = False


def register_format(fmt: Format, *, origin: str = "") -> Format:
    """Add a format; a second format of the same name, or a suffix claimed twice, is an error."""
    if fmt.name in _FORMATS:
        raise SlimkitError(f"two formats are named '{fmt.name}' ({origin or 'a plug-in'} and an earlier one)",
                           "rename one of them")
    for other in _FORMATS.values():
        shared = set(fmt.suffixes) & set(other.suffixes)
        if shared:
            raise SlimkitError(f"formats '{other.name}' and '{fmt.name}' both claim {sorted(shared)}",
                               "give each suffix to one format")
    _FORMATS[fmt.name] = fmt
    return fmt


def _discover() -> None:
    """Import every module of this package and every `slimkit.formats` entry point; each defines FORMAT."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module("slimkit.formats")
    modules = [importlib.import_module(f"slimkit.formats.{info.name}")
               for info in pkgutil.iter_modules(package.__path__) if info.name not in ("registry", "loading")]
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        modules.append(entry.load())
    for module in modules:
        fmt = getattr(module, "FORMAT", None)
        if isinstance(fmt, Format):
            register_format(fmt, origin=module.__name__)


def all_formats() -> list[Format]:
    _discover()
    return list(_FORMATS.values())


def format_named(name: str) -> Format:
    _discover()
    if name not in _FORMATS:
        raise SlimkitError(f"unknown format '{name}'", f"choose one of: {', '.join(sorted(_FORMATS))}")
    return _FORMATS[name]


def output_formats() -> list[str]:
    """The names `--to` accepts, in registration order."""
    return [f.name for f in all_formats() if f.output]


def convert_targets() -> dict[str, tuple[str, Format]]:
    """`convert --to` names: each output format (its plain recipe) and its variants -> (recipe, format)."""
    targets: dict[str, tuple[str, Format]] = {}
    for fmt in all_formats():
        if fmt.output and fmt.plain_recipe:
            targets[fmt.name] = (fmt.plain_recipe, fmt)
            targets.update({name: (recipe, fmt) for name, recipe in fmt.convert_variants.items()})
    return targets


def bench_runtimes() -> dict[str, Callable[[WorkingModel], WorkingModel]]:
    """`bench --runtime` names -> how an ONNX model is handed to that runtime (ONNX Runtime: as it is)."""
    runtimes: dict[str, Callable[[WorkingModel], WorkingModel]] = {format_of_kind("onnx").runtime: lambda m: m}
    runtimes.update({f.runtime: f.run_onnx for f in all_formats() if f.run_onnx is not None})
    return runtimes


def format_of_kind(kind: str) -> Format:
    """The format that runs and writes models of `kind` (the one with a runner)."""
    for fmt in all_formats():
        if fmt.kind == kind and fmt.runner is not None:
            return fmt
    raise SlimkitError(f"no runtime for model kind {kind}", "this kind of model cannot be measured or written")


def format_for_suffix(suffix: str) -> Format | None:
    suffix = suffix.lower()
    for fmt in all_formats():
        if suffix in fmt.suffixes and fmt.load is not None:
            return fmt
    return None


def known_suffixes() -> list[str]:
    return [s for f in all_formats() if f.load is not None for s in f.suffixes]


def make_runner(model: WorkingModel, threads: int = 2) -> Runner:
    """A runner for any model kind, from its format."""
    factory = format_of_kind(str(model.kind)).runner
    assert factory is not None
    return factory(model, threads)


def runtime_of_kind(kind: str) -> str:
    return format_of_kind(kind).runtime


def artifact_filename(kind: str) -> str:
    return format_of_kind(kind).filename
