"""Keras 3 models (`.keras`, `.h5`) loaded without TensorFlow, through Keras's PyTorch backend.

With `KERAS_BACKEND=torch` a Keras model *is* a `torch.nn.Module` whose weights are torch
Parameters, so slimkit's exporters and training passes work on it once it is wrapped in
`KerasModule`, which gives it named tensor inputs like every other `TorchModel`.

Models load with `compile=False` and `safe_mode=True`: no Lambda layer's pickled bytecode is run.
The input file is only read. `save_keras` writes a (pruned, clustered, fine-tuned) model back to a
`.keras` file: the torch Parameters the passes changed in place are the Keras variables.
"""

from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimkit.errors import MissingExtraError, SlimkitError, first_line
from slimkit.models.base import TorchModel
from slimkit.models.wrappers import NamedInputs

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_SAVEDMODEL_HINT = "export the full model as .keras (model.save('m.keras')) or convert it with tf2onnx"


def import_keras():
    """Import Keras 3 on the PyTorch backend (set before the import), or explain why it cannot be."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    already = "keras" in sys.modules
    try:
        import keras
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing.split(".")[0] in ("keras", ""):
            raise MissingExtraError("keras", "keras") from exc
        raise SlimkitError(
            f"Keras could not be imported on the '{os.environ.get('KERAS_BACKEND')}' backend: {first_line(exc)}",
            "slimkit runs Keras on PyTorch: set KERAS_BACKEND=torch (or unset it) before starting",
        ) from exc
    version = getattr(keras, "__version__", "0")
    if int(version.split(".")[0]) < 3:
        raise SlimkitError(f"Keras {version} is installed; slimkit needs Keras 3", "pip install 'slimkit[keras]'")
    backend = keras.backend.backend()
    if backend != "torch":
        how = "was already imported" if already else "is configured"
        raise SlimkitError(
            f"Keras {how} with the '{backend}' backend; slimkit needs its PyTorch backend",
            "set KERAS_BACKEND=torch before Keras is first imported (or run slimkit in a fresh process)",
        )
    return keras


class KerasModule(NamedInputs):
    """A Keras model as an `nn.Module` taking named tensors and returning a tensor (or a tuple).

    Keras's `training` flag follows torch's `train()` / `eval()`, so Dropout and BatchNormalization
    behave as the training passes expect.
    """

    def __init__(self, keras_model, names: list[str], structure: str = "single") -> None:
        super().__init__(keras_model, names)
        self.structure = structure  # "single", "list" or "dict:<keras names joined by \0>"

    def forward(self, *args, **kwargs):
        ordered = list(args) + [kwargs[n] for n in self.names[len(args):]]
        if self.structure == "single":
            inputs: Any = ordered[0]
        elif self.structure.startswith("dict:"):
            inputs = dict(zip(self.structure[5:].split("\0"), ordered, strict=True))
        else:
            inputs = ordered
        out = self.inner(inputs, training=self.training)
        if isinstance(out, Mapping):
            out = tuple(out.values())
        if isinstance(out, list):
            out = tuple(out)
        return out


def load_keras(path: str | Path, *, task: str | None = None,
               shapes: Mapping[str, Sequence[int]] | None = None) -> TorchModel:
    """Load a `.keras` or full-model `.h5` file as a `TorchModel` (Keras on its PyTorch backend)."""
    from slimkit.models.torch_module import torch_model_from_module

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        _check_h5(path)
    elif suffix == ".keras" and not zipfile.is_zipfile(path):
        raise SlimkitError(f"{path} is not a Keras 3 .keras file (not a zip archive)",
                           "save the model with model.save('m.keras') in Keras 3")
    keras = import_keras()
    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise _load_error(path, exc) from exc
    if not hasattr(model, "inputs") or not hasattr(model, "layers"):
        raise SlimkitError(f"{path} did not load as a Keras model ({type(model).__name__})",
                           "save a keras.Model with model.save('m.keras')")
    names, _keras_names, structure, example, dims = _inputs(model, path, shapes)
    module = KerasModule(model, names, structure)
    model_task = task or _guess_task(model, path)
    try:
        wrapped = torch_model_from_module(module, example_inputs=example, input_names=names, task=model_task,
                                          source=str(path), dynamic_dims=dims)
    except SlimkitError:
        raise
    except Exception as exc:
        raise SlimkitError(f"{path}: the Keras model failed to run on PyTorch: {first_line(exc)}",
                           "check the input shapes (--shape NAME=1x...) and that every layer supports "
                           "Keras's torch backend") from exc
    wrapped.source_files = [path]
    wrapped.keras_version = keras.__version__
    return wrapped


# ---- checks before Keras touches the file ----


def _check_h5(path: Path) -> None:
    """A full-model HDF5 file carries `model_config`; one written by save_weights() does not."""
    try:
        import h5py
    except ImportError as exc:
        raise MissingExtraError("h5py", "keras") from exc
    try:
        with h5py.File(str(path), "r") as handle:
            has_config = "model_config" in handle.attrs
    except OSError as exc:
        raise SlimkitError(f"{path} is not a readable HDF5 file ({first_line(exc, 120)})",
                           "the file is truncated or not HDF5; save it again with model.save('m.keras')") from exc
    if not has_config:
        raise SlimkitError(
            f"{path} holds only weights, not a model",
            "save the full model with model.save('m.keras') or load the architecture in code "
            "and use slimkit's Python API",
        )


_UNKNOWN_PATTERNS = (
    re.compile(r"Unknown layer:? '?([A-Za-z_][\w.>]*)'?"),
    re.compile(r"Could not locate class '([A-Za-z_][\w.]*)'"),
    re.compile(r"Unknown (?:object|activation|initializer|regularizer|constraint|loss|metric)"
               r"(?: function)?:? '?([A-Za-z_][\w.]*)'?"),
)


# Layers of tf.keras / Keras 2 that Keras 3 dropped: not custom code the user could pass.
_KERAS2_ONLY = {
    "TFOpLambda": "a TensorFlow op called on a Keras tensor (tf.keras 2 only)",
    "SlicingOpLambda": "tensor slicing recorded by tf.keras 2",
    "CuDNNLSTM": "the Keras 2 cuDNN layer (use LSTM)",
    "CuDNNGRU": "the Keras 2 cuDNN layer (use GRU)",
    "LocallyConnected1D": "removed in Keras 3",
    "LocallyConnected2D": "removed in Keras 3",
    "DenseFeatures": "TensorFlow feature columns (removed in Keras 3)",
    "ThresholdedReLU": "removed in Keras 3 (use ReLU(threshold=...))",
}


def _load_error(path: Path, exc: Exception) -> SlimkitError:
    text = str(exc)
    for pattern in _UNKNOWN_PATTERNS:
        match = pattern.search(text)
        if match:
            name = match.group(1).split(">")[-1]
            if name in _KERAS2_ONLY:
                return SlimkitError(
                    f"{path} uses the Keras 2 layer '{name}' ({_KERAS2_ONLY[name]}), which Keras 3 cannot load",
                    "rebuild the model with Keras 3 layers and save it with model.save('m.keras'), "
                    "or convert the original with tf2onnx",
                )
            return SlimkitError(
                f"{path}: unknown layer '{name}': pass its code",
                "a custom Keras layer cannot be rebuilt from the file alone: load the model in Python with "
                "keras.models.load_model(path, custom_objects={...}) and hand it to slimkit.api.optimize",
            )
    if "Lambda" in text and ("safe_mode" in text or "unsafe" in text.lower()):
        return SlimkitError(
            f"{path} contains a Lambda layer, which slimkit does not deserialize (it would run stored bytecode)",
            "replace the Lambda by a registered custom layer, or load it yourself with safe_mode=False "
            "if you trust the file and pass the model to slimkit's Python API",
        )
    return SlimkitError(
        f"Keras 3 cannot load {path}: {first_line(exc)}",
        "files from Keras 2 / tf.keras may use features Keras 3 dropped; re-save the model with Keras 3 "
        "(model.save('m.keras')) or convert it to ONNX with tf2onnx",
    )


# ---- inputs ----


def _sanitize(names: list[str]) -> list[str]:
    out: list[str] = []
    for i, name in enumerate(names):
        clean = re.sub(r"\W", "_", (name or "").split(":")[0]).strip("_") or f"input_{i}"
        if clean[0].isdigit():
            clean = f"input_{clean}"
        base, n = clean, 1
        while clean in out:
            n += 1
            clean = f"{base}_{n}"
        out.append(clean)
    return out


def _inputs(model, path: Path, shapes: Mapping[str, Sequence[int]] | None):
    """Sanitized input names, Keras names, call structure, example tensors (batch 2) and dynamic dims."""
    import torch

    try:
        tensors = list(model.inputs)
    except Exception:  # an unbuilt Sequential model has no inputs until it is called
        tensors = []
    if not tensors:
        raise SlimkitError(f"{path}: the Keras model has no defined inputs (it was saved unbuilt)",
                           "give the model a keras.Input(shape=...) before saving it")
    keras_names = [getattr(t, "name", "") or f"input_{i}" for i, t in enumerate(tensors)]
    names = _sanitize(keras_names)
    struct = getattr(model, "_inputs_struct", None)
    if len(tensors) == 1 and not isinstance(struct, (Mapping, list, tuple)):
        structure = "single"
    elif isinstance(struct, Mapping):
        structure = "dict:" + "\0".join(keras_names)
    else:
        structure = "single" if len(tensors) == 1 and not isinstance(struct, (list, tuple)) else "list"
    vocab = _embedding_sizes(model)
    given = {k: list(v) for k, v in (shapes or {}).items()}
    example, dims = {}, {}
    for name, keras_name, tensor in zip(names, keras_names, tensors, strict=True):
        shape = list(tensor.shape)
        fixed = given.get(name) or given.get(keras_name)
        if fixed is not None:
            if len(fixed) != len(shape):
                raise SlimkitError(f"--shape {name} has {len(fixed)} dims but the Keras input has {len(shape)}",
                                   f"the input is {tuple(shape)} (None = any size)")
            concrete = [int(d) for d in fixed]
        else:
            if any(d is None for d in shape[1:]):
                raise SlimkitError(
                    f"cannot tell the shape of input '{name}': Keras declares {tuple(shape)}",
                    f"pass --shape {name}=1x... with every dim fixed",
                )
            concrete = [2] + [int(d) for d in shape[1:]]
        dims[name] = {axis: ("batch" if axis == 0 else f"{name}_dim{axis}")
                      for axis, d in enumerate(shape) if d is None}
        dtype = str(getattr(tensor, "dtype", "float32") or "float32")
        torch_dtype = getattr(torch, dtype, torch.float32)
        generator = torch.Generator().manual_seed(0)
        if torch_dtype.is_floating_point:
            example[name] = torch.randn(*concrete, generator=generator).to(torch_dtype)
        elif torch_dtype == torch.bool:
            example[name] = torch.zeros(*concrete, dtype=torch.bool)
        else:
            high = max(1, min(vocab)) if vocab else 2
            example[name] = torch.randint(0, high, concrete, generator=generator, dtype=torch_dtype)
    return names, keras_names, structure, example, dims


def _embedding_sizes(model) -> list[int]:
    sizes = []
    for layer in _all_layers(model):
        if type(layer).__name__ == "Embedding" and getattr(layer, "input_dim", None):
            sizes.append(int(layer.input_dim))
    return sizes


def _all_layers(model) -> list:
    out, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        out.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return out


# ---- task ----

_CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy",
                          "SparseCategoricalCrossentropy", "CategoricalCrossentropy")


def _guess_task(model, path: Path) -> str | None:
    """'classification' only on clear evidence: a softmax last layer or a saved categorical loss."""
    try:
        outputs = list(model.outputs)
    except Exception:
        return None
    if len(outputs) != 1:
        return None
    shape = tuple(outputs[0].shape)
    if len(shape) != 2 or not shape[1] or shape[1] < 2:
        return None
    last = model.layers[-1] if model.layers else None
    activation = getattr(last, "activation", None)
    activation_name = getattr(activation, "__name__", "") if activation is not None else ""
    if activation_name == "softmax" or type(last).__name__ == "Softmax":
        return "classification"
    if activation_name in ("", "linear") and _saved_loss_is_categorical(path):
        return "classification"
    return None


def _saved_loss_is_categorical(path: Path) -> bool:
    """The loss the model was compiled with, as saved in the file (read as JSON, never deserialized)."""
    text = ""
    try:
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
            text = json.dumps(config.get("compile_config") or {})
        else:
            import h5py

            with h5py.File(str(path), "r") as handle:
                raw = handle.attrs.get("training_config")
            if raw is not None:
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                text = json.dumps((json.loads(text) or {}).get("loss"))
    except Exception:
        return False
    return any(loss in text for loss in _CLASSIFICATION_LOSSES)


def is_savedmodel_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists())


def savedmodel_error(path: Path) -> SlimkitError:
    return SlimkitError(f"{path} is a TensorFlow SavedModel folder", _SAVEDMODEL_HINT)


# ---- back to a Keras file ----


def keras_model_of(model: Any):
    """The Keras model inside a `TorchModel` / `KerasModule` loaded by `load_keras` (or a SlimkitError)."""
    module = getattr(model, "module", model)
    if not isinstance(module, KerasModule):
        what = type(module).__name__
        raise SlimkitError(f"only a model loaded from a Keras file can be saved as .keras (this one is a {what})",
                           "load the .keras / .h5 file with slimkit.load, and keep to passes that change weights "
                           "in place (prune, cluster, fine-tuning); other results are saved as ONNX")
    return module.inner


def sync_keras_variables(keras_model) -> int:
    """Make every Keras variable hold the torch Parameter registered for it; returns how many were updated.

    Passes change weights in place, so normally nothing is updated; a pass that assigned a new Parameter
    to the module would otherwise be lost on save. A shape change cannot be followed by Keras layers.
    """
    import torch

    registered = dict(getattr(keras_model, "_torch_params", None) or {})
    updated = 0
    for variable in keras_model.variables:
        param = registered.get(variable.path)
        if param is None or param is variable.value:
            continue
        if tuple(param.shape) != tuple(variable.shape):
            raise SlimkitError(
                f"Keras weight '{variable.path}' changed shape {tuple(variable.shape)} -> {tuple(param.shape)}",
                "passes that change layer shapes (factorize, structured pruning) cannot be written back to "
                "Keras layers: save the result as ONNX")
        with torch.no_grad():
            variable.assign(param.detach())
        updated += 1
    return updated


def save_keras(model: Any, path: str | Path) -> Path:
    """Write the Keras model behind `model` (a `TorchModel` from `load_keras`, or its `KerasModule`) to `path`.

    `path` ends in `.keras` (Keras 3 format; `.h5` writes the legacy HDF5 format). The file is written to a
    temporary name beside `path` and moved into place, so a failure leaves no half-written file; the model's
    own source file is never overwritten.
    """
    from slimkit.fileio import check_not_input

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5"):
        raise SlimkitError(f"cannot save a Keras model as '{path.name}'", "use a .keras file name (or .h5)")
    keras_model = keras_model_of(model)
    import_keras()
    sources = [Path(p) for p in getattr(model, "source_files", []) or []]
    source = getattr(model, "source", "")
    if source and Path(source).suffix.lower() in KERAS_SUFFIXES:
        sources.append(Path(source))
    check_not_input(path, sources)
    if path.is_dir():
        raise SlimkitError(f"{path} is a folder", "give the path of the .keras file to write")
    sync_keras_variables(keras_model)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        keras_model.save(str(temp))
        os.replace(temp, path)
    except SlimkitError:
        raise
    except Exception as exc:
        raise SlimkitError(f"Keras could not save the model to {path}: {first_line(exc)}",
                           "check that the folder is writable and the model has only Keras 3 layers") from exc
    finally:
        if temp.exists():
            temp.unlink()
    return path


def keras_weight_stats(keras_model) -> dict:
    """Sparsity and number of distinct values of the kernels (>= 2-D weights) of a Keras model."""
    import numpy as np

    kernels = [(v.path, np.asarray(v.numpy())) for v in keras_model.trainable_variables if len(v.shape) >= 2]
    total = sum(w.size for _, w in kernels)
    zeros = sum(int((w == 0).sum()) for _, w in kernels)
    return {"kernels": len(kernels), "kernel_params": int(total),
            "kernel_sparsity": zeros / total if total else 0.0,
            "max_distinct_per_kernel": max((len(np.unique(w)) for _, w in kernels), default=0)}


__all__ = ["KerasModule", "load_keras", "import_keras", "save_keras", "keras_model_of", "KERAS_SUFFIXES"]
