"""Keras `.keras` / `.h5` files, read without TensorFlow into the PyTorch kind (see `slimkit.models.keras`);
`to-keras` writes one back."""

from __future__ import annotations

from pathlib import Path

from slimkit.formats.registry import Format, LoadOptions
from slimkit.models.base import ModelKind, WorkingModel


def _load(path: Path, options: LoadOptions) -> WorkingModel:
    from slimkit.models.keras import load_keras

    return load_keras(path, task=options.task, shapes=options.shapes)


FORMAT = Format(name="keras", kind=ModelKind.TORCH, suffixes=(".keras", ".h5", ".hdf5"), load=_load,
                converter="to-keras", description="Keras 3 / legacy HDF5, loaded into PyTorch")
