"""Turn what a user hands us (a path, a `pkg.mod:factory` reference, an `nn.Module`) into a model kind.

No pickle from a model file is ever executed: torch files load with `weights_only=True`, Hugging
Face folders must hold safetensors, and `.pt2` / TorchScript use torch's own restricted loaders.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import SlimkitError
from slimkit.models.base import (
    InputSpec,
    OnnxModel,
    OpenVinoModel,
    SlimModel,
    TfliteModel,
    TorchModel,
    WorkingModel,
    onnx_files,
)
from slimkit.models.wrappers import NamedInputs


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
        raise SlimkitError(f"{path} is empty", "pass a model file (.onnx, .pt2, TorchScript, .xml, .tflite)")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return apply_sidecar(load_onnx(path, task=task, check=check), path)
    if suffix == ".pt2":
        return _load_exported_program(path, task=task)
    if suffix in (".pt", ".pth", ".ts", ".torchscript"):
        return _load_torchscript(path, task=task, shapes=shapes, data=data)
    if suffix == ".xml":
        return apply_sidecar(OpenVinoModel(path=path, source=str(path), task=task), path)
    if suffix == ".tflite":
        return apply_sidecar(TfliteModel(path=path, source=str(path), task=task), path)
    if suffix == ".slim":
        from slimkit.archive.container import read_archive

        read_archive(path)  # a corrupt or truncated archive is refused here, with one clear line
        return apply_sidecar(SlimModel(path=path, source=str(path), task=task), path)
    if suffix in (".keras", ".h5", ".hdf5"):
        from slimkit.models.keras import load_keras

        return load_keras(path, task=task, shapes=shapes)
    if suffix in (".safetensors", ".bin"):
        raise SlimkitError(
            f"{path} holds only weights, not a model",
            "pass the model's code as package.module:factory with --weights FILE",
        )
    raise SlimkitError(
        f"{path}: unknown model file type '{suffix}'",
        "pass .onnx, .pt2, TorchScript (.pt), OpenVINO .xml, .tflite, a Hugging Face folder or package.module:factory",
    )


_OUTPUT_NAMES = {"embedding": "sentence_embedding", "classification": "logits"}

# ---- ONNX ----


def load_onnx(path: Path, *, task: str | None = None, check: bool = True) -> OnnxModel:
    """Load an ONNX file (external data resolved beside it) and check ONNX Runtime can run it."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=True)
    except FileNotFoundError as exc:
        raise SlimkitError(
            f"{path}: an external data file is missing ({Path(str(exc.filename or exc)).name})",
            "keep the model's .data files in the same folder as the .onnx file",
        ) from exc
    except Exception as exc:
        # onnx reports a missing external data file as a ValidationError, not FileNotFoundError
        missing = [f for f in onnx_files(path)[1:] if not f.exists()]
        if missing:
            raise SlimkitError(
                f"{path}: an external data file is missing ({missing[0].name})",
                "keep the model's .data files in the same folder as the .onnx file",
            ) from exc
        raise SlimkitError(
            f"{path} is not a valid ONNX model ({type(exc).__name__})",
            "the file is truncated or not ONNX; export it again",
        ) from exc
    if len(proto.graph.node) == 0 and len(proto.graph.output) == 0:
        raise SlimkitError(f"{path} is not a valid ONNX model (empty graph)", "the file is truncated or not ONNX")
    from slimkit.models.onnx_checks import check_onnx_model

    check_onnx_model(proto, str(path), path)
    model = OnnxModel(path=path, _proto=proto, source=str(path), task=task)
    _read_slimkit_metadata(model)
    if check:
        check_onnx_runnable(model)
    return model


def check_onnx_runnable(model: OnnxModel) -> None:
    """Create an ONNX Runtime session once, so an unsupported op is reported at load time."""
    from slimkit.evaluate.runners import ort_session

    ort_session(model, threads=1)


def _read_slimkit_metadata(model: OnnxModel) -> None:
    """slimkit records the task and the position limit in the ONNX metadata when it exports a model."""
    meta = {p.key: p.value for p in model.proto.metadata_props}
    if model.task is None and meta.get("slimkit.task"):
        model.task = meta["slimkit.task"]
    from slimkit.models.limits import onnx_max_positions

    model.max_positions = onnx_max_positions(model.proto)


def apply_sidecar(model: WorkingModel, path: Path) -> WorkingModel:
    """Task, tokenizer and input names from the `slimkit.json` slimkit writes beside its artifacts."""
    from slimkit.artifacts import sidecar_for

    sidecar = sidecar_for(path)
    if not sidecar:
        return model
    if model.task is None and sidecar.get("task"):
        model.task = sidecar["task"]
    tokenizer = sidecar.get("tokenizer")
    if tokenizer and (path.parent / tokenizer).is_dir():
        model.tokenizer_dir = (path.parent / tokenizer).resolve()
    if sidecar.get("input_names"):
        model.metadata["input_names"] = list(sidecar["input_names"])
    if model.max_positions is None and isinstance(sidecar.get("max_positions"), int):
        model.max_positions = sidecar["max_positions"]
    return model


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
        found = _array_headers(data) if any(n not in shapes for n in names) else {}
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


def _load_exported_program(path: Path, *, task) -> TorchModel:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise SlimkitError(f"{path} is not a readable torch.export program ({type(exc).__name__})",
                           "save it with torch.export.save") from exc
    args, kwargs = program.example_inputs or ((), {})
    names = [spec.arg.name for spec in program.graph_signature.input_specs
             if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    module = program.module()
    # The graph is frozen in the mode it was exported in and torch makes train()/eval() raise on it;
    # make them no-ops so wrappers (and runners) can call eval() as on any module.
    module.train = types.MethodType(lambda self, mode=True: self, module)
    module.forward_names = names
    example = dict(zip(names, list(args), strict=False))
    example.update(kwargs)
    if not example:
        raise SlimkitError(f"{path} carries no example inputs", "export it with example inputs")
    # Only dims the program was exported with as dynamic are dynamic; the rest are specialized (guarded).
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    dynamic = {}
    for name in names:
        shape = getattr(placeholders[name].meta.get("val"), "shape", None) if name in placeholders else None
        if shape is not None:
            dynamic[name] = {axis: "batch" if axis == 0 else str(d)
                             for axis, d in enumerate(shape) if not isinstance(d, int)}
    wrapper = NamedInputs(module, names)
    model = torch_model_from_module(wrapper, example_inputs=example, input_names=names, task=task, source=str(path),
                                    dynamic_dims=dynamic or None)
    model.source_files = [path]
    return model


def _load_torchscript(path: Path, *, task, shapes, data=None) -> TorchModel:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise SlimkitError(
            f"{path} is not a TorchScript file ({type(exc).__name__})",
            "for a state dict use package.module:factory --weights FILE; for a torch.export program use .pt2",
        ) from exc
    try:
        names = [a.name for a in module.forward.schema.arguments[1:]]
    except Exception:
        names = ["input"]
    wrapper = NamedInputs(module, names)
    model = torch_model_from_module(wrapper, input_names=names, task=task, shapes=shapes, source=str(path),
                                    data=data)
    model.source_files = [path]
    return model


# ---- Input shapes from data ----


def shapes_from_data(source: Any) -> dict[str, list[int]]:
    """Each input array's shape in an .npz file or a folder of .npy files, with the batch dim set to 1.

    Only the arrays' headers are read (no pickles, no data). Label arrays ("labels", "label", "y") are
    left out; anything else (text, `sklearn:...`, None, Python objects, unreadable files) gives {}.
    """
    return {name: shape for name, (shape, _) in _array_headers(source).items()}


def _array_headers(source: Any) -> dict[str, tuple[list[int], np.dtype]]:
    """{input name: (shape with batch 1, dtype)} from the .npy headers of an .npz file or a .npy folder."""
    import zipfile

    from slimkit.data import LABEL_KEYS, _as_array

    if isinstance(source, Mapping):  # a dict of arrays or tensors from Python (see slimkit.data.load_data)
        firsts = {str(k): _as_array(v[:1]) for k, v in source.items() if str(k) not in LABEL_KEYS and np.ndim(v)}
        return {k: ([1, *(int(d) for d in a.shape[1:])], a.dtype) for k, a in firsts.items() if not a.dtype.hasobject}
    if not isinstance(source, (str, Path)) or str(source).startswith("sklearn:"):
        return {}
    path = Path(source)
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        if path.is_dir():
            for file in sorted(path.glob("*.npy")):
                with file.open("rb") as handle:
                    headers[file.stem] = _npy_header(handle)
        elif path.is_file() and path.suffix.lower() == ".npz":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if member.endswith(".npy"):
                        with archive.open(member) as handle:
                            headers[member[: -len(".npy")]] = _npy_header(handle)
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
    return {name: ([1, *(int(d) for d in shape[1:])], dtype) for name, (shape, dtype) in headers.items()
            if name not in LABEL_KEYS and len(shape) >= 1 and not dtype.hasobject}


def _npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an open .npy stream's header; the array itself is not read."""
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(handle)
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, _, dtype = read_header(handle)
    return shape, dtype


# ---- Folders ----


def _load_folder(path: Path, *, task) -> WorkingModel:
    from slimkit.models.keras import is_savedmodel_folder, savedmodel_error

    if is_savedmodel_folder(path):
        raise savedmodel_error(path)
    if (path / "config.json").exists():
        from slimkit.models.hf import load_hf_folder

        return load_hf_folder(path, task=task)
    for pattern in ("*.onnx", "*.xml", "*.tflite"):
        found = sorted(path.glob(pattern))
        if len(found) == 1:  # a slimkit output folder, or any folder with one model file
            return load(found[0], task=task)
    raise SlimkitError(
        f"{path} is a folder with no model slimkit recognizes",
        "pass a Hugging Face folder (config.json + safetensors) or a model file",
    )


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SlimkitError(f"{path} is not valid JSON ({exc})", "fix or regenerate the file") from exc


__all__ = ["load", "load_onnx", "torch_model_from_module", "load_weights", "flatten_outputs", "shapes_from_data"]
