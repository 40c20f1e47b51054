"""PyTorch: the working kind training passes change. Loaded from a torch.export program (`.pt2`), TorchScript,
a `package.module:factory` reference or a module from Python; run eagerly; written as safetensors."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import numpy as np

from slimkit.errors import SlimkitError
from slimkit.formats.registry import Format, LoadOptions, Runner
from slimkit.models.base import ModelKind, TorchModel, WorkingModel
from slimkit.models.limits import sequence_error
from slimkit.models.torch_module import flatten_outputs, torch_model_from_module
from slimkit.models.wrappers import NamedInputs
from slimkit.threads import torch_threads


class TorchRunner(Runner):
    """PyTorch eager at a fixed thread count; the process's own count is restored after each call."""

    runtime = "pytorch-eager"

    def __init__(self, model: TorchModel, threads: int) -> None:
        self.threads = threads
        self.module = model.module.eval()
        self.input_specs = list(model.input_specs)
        self.max_positions = model.max_positions

    def run(self, feed):
        import torch

        with torch_threads(self.threads), torch.inference_mode():
            try:
                out = self.module(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()})
            except RuntimeError as exc:  # e.g. "The expanded size of the tensor (128) must match ... (64)"
                specific = sequence_error(self.max_positions, feed)
                if specific is not None:
                    raise specific from exc
                raise
        return [t.detach().float().numpy() if t.dtype.is_floating_point else t.numpy() for t in flatten_outputs(out)]


def write_torch(model: WorkingModel, target: Path) -> None:
    """The state dict as safetensors (no pickle), plus the Keras file the to-keras pass wrote, when there is one."""
    from safetensors.torch import save_file

    assert isinstance(model, TorchModel)
    state = {k: v.detach().contiguous() for k, v in model.module.state_dict().items()}
    save_file(state, str(target))
    if model.keras_file is not None:  # written back by the to-keras pass: ship it as model.keras too
        shutil.copyfile(model.keras_file, target.parent / "model.keras")


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


def _load_exported(path: Path, options: LoadOptions) -> WorkingModel:
    return _load_exported_program(path, task=options.task)


def _load_script(path: Path, options: LoadOptions) -> WorkingModel:
    return _load_torchscript(path, task=options.task, shapes=options.shapes, data=options.data)


FORMAT = Format(
    name="torch", kind=ModelKind.TORCH, suffixes=(".pt2",), load=_load_exported, runner=TorchRunner,
    runtime="pytorch", filename="model.safetensors", write=write_torch, description="PyTorch (torch.export)",
)
# TorchScript loads into the same kind; it has no runner or writer of its own.
TORCHSCRIPT = Format(name="torchscript", kind=ModelKind.TORCH, suffixes=(".pt", ".pth", ".ts", ".torchscript"),
                     load=_load_script, description="TorchScript")
