"""PyTorch state dict <-> `.slim` archive.

The structure blob is a small JSON document (the state dict's key order and any torch dtype numpy lacks);
the factory that rebuilds the module ("package.module:callable") is stored in the metadata. Loading with
a stored factory imports that module and calls it: only do that for archives you trust, or pass `module`.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from slimkit.archive.container import read_archive, write_archive
from slimkit.errors import SlimkitError

STRUCTURE_KIND = "torch-state-dict"
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# torch dtypes numpy has no type for, stored as the same-width unsigned bit pattern.
_VIEWED = {"bfloat16": "int16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}


def save_torch_archive(state_dict: dict, path: str | Path, *, factory: str | None,
                       metadata: dict | None = None) -> dict:
    """Write a state dict as a .slim archive; `factory` lets `load_torch_archive` rebuild the module alone."""
    import torch

    if factory is not None and not _FACTORY.match(factory):
        raise SlimkitError(f"factory {factory!r} is not of the form 'package.module:callable'",
                           "pass e.g. factory='slimkit.demo_models:DigitsMLP', or None")
    tensors = {}
    viewed = {}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise SlimkitError(f"state dict entry '{name}' is a {type(value).__name__}, not a tensor",
                               "archive only tensors (drop or convert extra state first)")
        t = value.detach().cpu().contiguous()
        dname = str(t.dtype).removeprefix("torch.")
        if dname in _VIEWED:
            viewed[name] = dname
            t = t.view(getattr(torch, _VIEWED[dname]))
        tensors[name] = t.numpy()
    structure = json.dumps({"keys": list(tensors), "dtypes": viewed}, separators=(",", ":")).encode()
    meta = dict(metadata or {})
    meta["factory"] = factory
    return write_archive(path, tensors, structure=structure, structure_kind=STRUCTURE_KIND, metadata=meta)


def load_torch_state(path: str | Path) -> tuple[dict, dict]:
    """Read an archive written by `save_torch_archive`: (state dict of torch tensors, metadata)."""
    import torch

    archive = read_archive(path)
    if archive.structure_kind != STRUCTURE_KIND:
        raise SlimkitError(f"{path} holds a '{archive.structure_kind}' model, not a PyTorch state dict",
                           "load it with the matching loader (load_onnx_archive for ONNX models)")
    try:
        structure = json.loads(archive.structure)
        keys, dtypes = structure["keys"], structure["dtypes"]
        state = {}
        for key in keys:
            t = torch.from_numpy(archive.tensors[key])
            if key in dtypes:
                t = t.view(getattr(torch, dtypes[key]))
            state[key] = t
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise SlimkitError(f"{path} is not a valid .slim archive: bad state-dict structure ({exc})",
                           "re-create the archive") from exc
    return state, archive.metadata


def load_torch_archive(path: str | Path, module=None):
    """Load the archive into `module`, or into a module built by the archive's stored factory."""
    from torch import nn

    state, metadata = load_torch_state(path)
    if module is None:
        factory = metadata.get("factory")
        if not factory:
            raise SlimkitError(f"{path} does not say how to build its module (no factory stored)",
                               "pass the module to load into: load_torch_archive(path, module=MyNet())")
        module = _build(factory, path)
    if not isinstance(module, nn.Module):
        raise SlimkitError(f"expected a torch.nn.Module to load {path} into, got {type(module).__name__}",
                           "pass an nn.Module instance")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise SlimkitError(f"the weights in {path} do not fit {type(module).__name__}: "
                           f"{str(exc).splitlines()[0]}", "pass the module architecture the archive was "
                           "saved from") from exc
    return module.eval()


def _build(factory: str, path: str | Path):
    module_name, _, attr = factory.partition(":")
    hint = "make that package importable, or pass the module: load_torch_archive(path, module=MyNet())"
    if not _FACTORY.match(factory):
        raise SlimkitError(f"{path} names an invalid factory {factory!r}", hint)
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SlimkitError(f"cannot find the factory '{factory}' stored in {path}: {exc}", hint) from exc
    return obj()
