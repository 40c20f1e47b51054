"""PyTorch (a Keras model on the torch backend) -> `.keras` file, checked by reloading it.

After passes that change weights in place (`prune`, `cluster` on the PyTorch model, fine-tuning) a model
loaded from `.keras` / `.h5` is still a Keras model: this pass writes it back with `model.save`, reloads
the file with Keras and compares its outputs with the PyTorch module on the example inputs. The model it
returns is the same module, with the written file as its source file (and its `keras_file`).
"""

from __future__ import annotations

import numpy as np

from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, TorchModel, WorkingModel
from slimkit.models.keras import import_keras, keras_model_of, keras_weight_stats, save_keras
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register


class ToKerasConfig(PassConfig):
    """No options: the file is written in the Keras 3 `.keras` format."""


@register
class ToKeras(Pass):
    name = "to-keras"
    accepts = frozenset({ModelKind.TORCH})
    returns = ModelKind.TORCH
    Config = ToKerasConfig
    description = "a Keras model (pruned, clustered or fine-tuned in place) written back as .keras, verified"

    # Reloaded outputs must match the module's: same weights, same layers, so only float noise is allowed.
    tolerance = 1e-4

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        import torch

        if not isinstance(model, TorchModel):
            raise SlimkitError("to-keras needs the PyTorch form of a Keras model", "put to-keras before to-onnx")
        keras_model_of(model)  # a clear error for a model that is not Keras
        path = save_keras(model, ctx.scratch(self.name) / "model.keras")
        keras = import_keras()
        reloaded = keras.models.load_model(str(path), compile=False, safe_mode=True)
        module = model.module
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                example = [model.example_inputs[n] for n in model.input_names]
                expected = _as_list(module(*example))
                got = _as_list(reloaded(_keras_call_inputs(module.structure, example), training=False))
        finally:
            module.train(was_training)
        diff = max((float(np.abs(_numpy(e) - _numpy(g)).max()) for e, g in zip(expected, got, strict=True)),
                   default=0.0)
        if not diff <= self.tolerance:
            raise SlimkitError(f"to-keras: the reloaded .keras file differs from the model by {diff:.2e}",
                               "a layer's state is not saved by Keras; keep the ONNX artifact instead")
        result = model.with_module(module)
        result.source_files = [path]
        result.keras_file = path
        return PassResult(result, {"path": str(path), "file_bytes": path.stat().st_size,
                                   "keras_version": keras.__version__, "max_abs_diff_reloaded": diff,
                                   **keras_weight_stats(reloaded)})


def _keras_call_inputs(structure: str, tensors: list):
    """The inputs in the form `KerasModule` hands them to the Keras model (one tensor, a dict or a list)."""
    if structure == "single":
        return tensors[0]
    if structure.startswith("dict:"):
        return dict(zip(structure[5:].split("\0"), tensors, strict=True))
    return list(tensors)


def _as_list(out) -> list:
    if isinstance(out, dict):
        return list(out.values())
    if isinstance(out, (list, tuple)):
        return list(out)
    return [out]


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)
