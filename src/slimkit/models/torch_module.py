"""Wrap an `nn.Module` (from a factory reference, a file or Python) as a `TorchModel`: input names from
`forward`, example inputs from the caller, the data's array headers or `--shape`, outputs flattened.

No pickle is ever executed: weights load from safetensors or with `weights_only=True`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import SlimkitError
from slimkit.models.base import InputSpec, TorchModel
from slimkit.models.input_shapes import array_headers

_OUTPUT_NAMES = {"embedding": "sentence_embedding", "classification": "logits"}

# ---- PyTorch ----


def torch_model_from_module(
    module,
    *,
    example_inputs: Any = None,
    input_names: Sequence[str] | None = None,
    task: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    source: str = "",
    dynamic_dims: Mapping[str, Mapping[int, str]] | None = None,
    data: Any = None,
) -> TorchModel:
    """Wrap an `nn.Module`. Input names default to `forward`'s parameter names.

    Without example inputs, each input's shape comes from `shapes`, else from `data` (see `shapes_from_data`).
    """
    import torch

    module.eval()
    names = list(input_names) if input_names else forward_input_names(module)
    example = _example_dict(module, example_inputs, names, shapes, data)
    specs = []
    for name in names:
        tensor = example[name]
        dims: list[Any] = list(tensor.shape)
        for axis, label in (dynamic_dims or {}).get(name, {}).items():
            dims[axis] = label
        if not dynamic_dims and dims:
            dims[0] = "batch"
        specs.append(InputSpec(name, str(tensor.dtype).replace("torch.", ""), tuple(dims)))
    with torch.inference_mode():
        out = module(**example)
    outputs = flatten_outputs(out)
    if task is None and len(outputs) == 1 and outputs[0].ndim == 2 and getattr(module, "is_classifier", False):
        task = "classification"
    if len(outputs) == 1:
        output_names = [_OUTPUT_NAMES.get(task or "", "output")]
    else:
        output_names = [f"output_{i}" for i in range(len(outputs))]
    return TorchModel(
        module=module, input_specs=specs, example_inputs=example, output_names=output_names,
        task=task, source=source,
    )


def forward_input_names(module) -> list[str]:
    params = inspect.signature(module.forward).parameters.values()
    names = [
        p.name for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is inspect.Parameter.empty
    ]
    if not names:
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names


def flatten_outputs(out) -> list:
    """Model outputs as a flat list of tensors (tuples, lists, dicts and HF ModelOutputs)."""
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        flat = []
        for item in out:
            flat.extend(flatten_outputs(item))
        return flat
    return [out]


def _example_dict(module, example_inputs, names, shapes, data=None) -> dict:
    import torch

    if example_inputs is None:
        example_inputs = getattr(module, "example_inputs", None)
        if callable(example_inputs):
            example_inputs = example_inputs()
    if example_inputs is None:
        shapes = dict(shapes or {})
        found = array_headers(data) if any(n not in shapes for n in names) else {}
        missing = [n for n in names if n not in shapes and n not in found]
        if missing:
            in_data = f"; the data has no array named '{missing[0]}'" if data is not None else ""
            raise SlimkitError(
                f"cannot tell the shape of input '{missing[0]}'",
                f"pass --shape {missing[0]}=1x... (or example_inputs= from Python){in_data}",
            )
        example = {}
        for n in names:
            if n in shapes:  # an explicit shape wins over the data's
                example[n] = torch.randn(*[int(d) for d in shapes[n]])
                continue
            shape, dtype = found[n]
            if dtype.kind in "iub":  # token ids, masks: zeros of the data's integer type are valid inputs
                example[n] = torch.zeros(shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype)
            else:
                example[n] = torch.randn(*shape)
        return example
    if isinstance(example_inputs, Mapping):
        example = {k: _as_tensor(v) for k, v in example_inputs.items()}
    else:
        if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
            example_inputs = (example_inputs,)
        if len(example_inputs) != len(names):
            raise SlimkitError(
                f"{len(example_inputs)} example inputs for {len(names)} forward parameters {names}",
                "pass one example tensor per input",
            )
        example = {n: _as_tensor(v) for n, v in zip(names, example_inputs, strict=True)}
    unknown = set(example) - set(names)
    if unknown:
        raise SlimkitError(f"example inputs name unknown inputs {sorted(unknown)}", f"forward takes {names}")
    return {n: example[n] for n in names if n in example}


def _as_tensor(value):
    import torch

    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def _looks_like_factory(text: str) -> bool:
    if ":" not in text or text.count(":") != 1:
        return False
    mod, _, attr = text.partition(":")
    return bool(mod) and bool(attr) and all(part.isidentifier() for part in mod.split(".")) and attr.isidentifier()


def _load_factory(ref: str, *, weights, task, shapes, data=None) -> TorchModel:
    """`package.module:factory` from the current directory or PYTHONPATH, with optional weights."""
    mod_name, _, attr = ref.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise SlimkitError(
            f"cannot import '{mod_name}' ({exc})", "run from the folder that holds it or set PYTHONPATH"
        ) from exc
    factory = getattr(mod, attr, None)
    if factory is None:
        raise SlimkitError(f"module '{mod_name}' has no attribute '{attr}'", "check the factory name")
    import torch

    # A module instance is used as is; a class or a function is called (an nn.Module class has `forward` too).
    module = factory if isinstance(factory, torch.nn.Module) else factory() if callable(factory) else factory
    if not isinstance(module, torch.nn.Module):
        raise SlimkitError(f"{ref} did not return a torch nn.Module", "the factory must return an nn.Module")
    source_files = []
    if weights is not None:
        load_weights(module, Path(weights))
        source_files.append(Path(weights))
    model = torch_model_from_module(module, task=task, shapes=shapes, source=ref, data=data)
    model.source_files = source_files
    return model


def load_weights(module, path: Path) -> None:
    """Load a `.safetensors` file or a state dict saved with torch.save (read with weights_only=True)."""
    import torch

    if not path.exists():
        raise SlimkitError(f"no such weights file: {path}", "check the --weights path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SlimkitError(
            f"{path} is not a readable weights file ({type(exc).__name__})",
            "save a state dict with safetensors or torch.save(model.state_dict())",
        ) from exc
    if not isinstance(state, Mapping):
        raise SlimkitError(f"{path} does not hold a state dict", "save model.state_dict(), not the model")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:2]
        raise SlimkitError(f"{path} does not fit the model: {' '.join(first)}", "check the factory and weights") from exc


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SlimkitError(f"{path} is not valid JSON ({exc})", "fix or regenerate the file") from exc


__all__ = ["torch_model_from_module", "load_weights", "flatten_outputs", "forward_input_names"]
