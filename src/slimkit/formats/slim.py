"""`.slim`: slimkit's Deep Compression archive (pruned, weight-shared, entropy-coded ONNX). Measured by
restoring the ONNX model it holds, bit-exactly, and running that with ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

from slimkit.formats.onnx import OrtRunner
from slimkit.formats.registry import Format, LoadOptions, Runner
from slimkit.models.base import ModelKind, SlimModel, WorkingModel
from slimkit.models.sidecar import apply_sidecar


def _load(path: Path, options: LoadOptions) -> WorkingModel:
    from slimkit.archive.container import read_archive

    read_archive(path)  # a corrupt or truncated archive is refused here, with one clear line
    return apply_sidecar(SlimModel(path=path, source=str(path), task=options.task), path)


def _runner(model: WorkingModel, threads: int) -> Runner:
    assert isinstance(model, SlimModel)
    runner = OrtRunner(model.restore(), threads)
    runner.runtime = "onnxruntime (restored from .slim)"
    return runner


def write_slim(model: WorkingModel, target: Path) -> None:
    assert isinstance(model, SlimModel) and model.path is not None
    shutil.copyfile(model.path, target)


FORMAT = Format(
    name="slim", kind=ModelKind.SLIM, suffixes=(".slim",), load=_load, runner=_runner, runtime="onnxruntime",
    filename="model.slim", write=write_slim, converter="to-slim", plain_recipe="onnx",
    description="slimkit Deep Compression archive",
)
