"""Turn what a user hands us (a path, a `pkg.mod:factory` reference, an `nn.Module`) into a model kind.

Files are dispatched by suffix through the format registry. No pickle from a model file is ever executed:
torch files load with `weights_only=True`, Hugging Face folders must hold safetensors, and `.pt2` /
TorchScript use torch's own restricted loaders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimkit.errors import SlimkitError
from slimkit.formats.registry import LoadOptions, all_formats, format_for_suffix, known_suffixes
from slimkit.models.base import WorkingModel
from slimkit.models.torch_module import _load_factory, _looks_like_factory, torch_model_from_module

# Files that hold weights but no graph: a model needs its code too.
_WEIGHTS_ONLY = (".safetensors", ".bin")


def load(
    source: Any,
    *,
    example_inputs: Any = None,
    input_names: Sequence[str] | None = None,
    weights: str | Path | None = None,
    task: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    check: bool = True,
    data: Any = None,
) -> WorkingModel:
    """Load a model from a path, a `package.module:factory` reference or an `nn.Module`.

    For a PyTorch model that cannot tell an input's shape itself, `shapes` gives it, else the array of
    that name in `data` (an .npz file or a folder of .npy files), at batch size 1.
    """
    import torch

    if isinstance(source, WorkingModel):
        return source
    if isinstance(source, torch.nn.Module):
        return torch_model_from_module(
            source, example_inputs=example_inputs, input_names=input_names, task=task, shapes=shapes,
            source=type(source).__name__, data=data,
        )
    text = str(source)
    path = Path(text)
    if not path.exists():
        if _looks_like_factory(text):
            return _load_factory(text, weights=weights, task=task, shapes=shapes, data=data)
        raise SlimkitError(f"no such file or folder: {text}", "check the path")
    if path.is_dir():
        return _load_folder(path, task=task)
    if path.stat().st_size == 0:
        raise SlimkitError(f"{path} is empty", f"pass a model file ({', '.join(known_suffixes())})")
    suffix = path.suffix.lower()
    fmt = format_for_suffix(suffix)
    if fmt is not None and fmt.load is not None:
        return fmt.load(path, LoadOptions(task=task, shapes=shapes, data=data, check=check))
    if suffix in _WEIGHTS_ONLY:
        raise SlimkitError(
            f"{path} holds only weights, not a model",
            "pass the model's code as package.module:factory with --weights FILE",
        )
    raise SlimkitError(
        f"{path}: unknown model file type '{suffix}'",
        f"pass a model file ({', '.join(known_suffixes())}), a Hugging Face folder or package.module:factory",
    )


def _load_folder(path: Path, *, task) -> WorkingModel:
    from slimkit.models.keras import is_savedmodel_folder, savedmodel_error

    if is_savedmodel_folder(path):
        raise savedmodel_error(path)
    if (path / "config.json").exists():
        from slimkit.models.hf import load_hf_folder

        return load_hf_folder(path, task=task)
    for fmt in all_formats():  # a slimkit output folder, or any folder with one model file of an output format
        for suffix in fmt.suffixes if fmt.output else ():
            found = sorted(path.glob(f"*{suffix}"))
            if len(found) == 1:
                return load(found[0], task=task)
    raise SlimkitError(
        f"{path} is a folder with no model slimkit recognizes",
        "pass a Hugging Face folder (config.json + safetensors) or a model file",
    )
