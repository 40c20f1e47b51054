"""The pass contract: declared input/output kinds, a strict config, `run(model, ctx) -> PassResult`.

A pass never mutates its input model and never writes outside `ctx.workdir`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, WorkingModel
from slimkit.models.limits import DEFAULT_SEQUENCE
from slimkit.scratch import make_scratch
from slimkit.settings import MeasureSettings


class PassConfig(BaseModel):
    """Base of every pass config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Context:
    """What passes may use besides the model. Nothing reads globals."""

    data: Any = None
    # Training passes learn from `train_data` (default: `data`) and evaluate on `data` when both are given.
    train_data: Any = None
    reference: WorkingModel | None = None
    # How models are run and measured (threads, batch, sequence length, shapes): the run's, as one unit.
    settings: MeasureSettings = field(default_factory=MeasureSettings)
    seed: int = 0
    # Where passes write their files. Left out, a scratch folder is made on first use (not when the Context is
    # built) and removed at interpreter exit; see `slimkit.scratch`. Read it as `ctx.workdir` as before.
    workdir: Path = field(default=None, repr=False, compare=False)  # type: ignore[assignment]  # see below
    progress: Callable[[str], None] = lambda message: None
    # Training passes write a checkpoint per epoch under checkpoint_dir/<pass> and resume from it.
    checkpoint_dir: Path | None = None
    resume: bool = False

    @property
    def threads(self) -> int:
        return self.settings.threads

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def seq_len(self) -> int:
        return self.settings.seq_len or DEFAULT_SEQUENCE

    @property
    def shapes(self) -> Mapping[str, Sequence[int]] | None:
        return self.settings.shapes

    def scratch(self, name: str) -> Path:
        """A fresh sub-folder of the work dir for one pass's files."""
        folder = self.workdir / name
        index = 1
        while folder.exists():
            index += 1
            folder = self.workdir / f"{name}-{index}"
        folder.mkdir(parents=True)
        return folder


def _get_workdir(ctx: Context) -> Path:
    if ctx._workdir is None:
        ctx._workdir = make_scratch()
    return ctx._workdir


def _set_workdir(ctx: Context, value: str | Path | None) -> None:
    ctx._workdir = None if value is None else Path(value)


Context._workdir = None  # type: ignore[attr-defined]
# After @dataclass has generated __init__ (whose `workdir=None` default goes through the setter).
Context.workdir = property(_get_workdir, _set_workdir)  # type: ignore[assignment]


@dataclass
class PassResult:
    model: WorkingModel
    stats: dict[str, Any] = field(default_factory=dict)


class Pass:
    """Subclasses set `name`, `accepts`, `returns` and `Config`, and implement `run`.

    `returns = None` means the pass returns the kind it was given (it works on several kinds).
    """

    name: ClassVar[str]
    accepts: ClassVar[frozenset[ModelKind]]
    returns: ClassVar[ModelKind | None]
    Config: ClassVar[type[PassConfig]] = PassConfig
    description: ClassVar[str] = ""

    def __init__(self, config: Mapping[str, Any] | PassConfig | None = None) -> None:
        self.config = make_config(self.name, self.Config, config)

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:  # pragma: no cover - interface
        raise NotImplementedError

    def output_kind(self, input_kind: ModelKind) -> ModelKind:
        return input_kind if self.returns is None else self.returns

    def data_use(self) -> frozenset[str]:
        """How this configured pass uses the data: "train" (learns from ctx.train_data and picks its best
        epoch on ctx.data), "select" (chooses among candidates on ctx.data), "calibrate" (sets ranges from it).

        The pipeline splits a lone --data for passes that train, and the report flags a measurement taken
        on data any pass has seen.
        """
        return frozenset()

    def relaxed(self) -> dict[str, Any] | None:
        """Config changes one step gentler (less pruned, more clusters, ...), or None when there is none.

        The pipeline backs off along this ladder when `--max-drop` / `--min-cosine` is missed on the
        validation data after this pass.
        """
        return None


def make_config(pass_name: str, config_cls: type[PassConfig], config: Any) -> PassConfig:
    if isinstance(config, config_cls):
        return config
    values = dict(config or {})
    try:
        return config_cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err.get("loc", ())) or "?"
        accepted = ", ".join(config_cls.model_fields) or "none"
        if err.get("type") == "extra_forbidden":
            raise SlimkitError(f"pass '{pass_name}': unknown key '{key}'", f"accepted keys: {accepted}") from None
        raise SlimkitError(f"pass '{pass_name}': bad value for '{key}': {err.get('msg')}",
                           f"accepted keys: {accepted}") from None


_REGISTRY: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    _REGISTRY[cls.name] = cls
    return cls


def get_pass(name: str) -> type[Pass]:
    _load_builtin_passes()
    if name not in _REGISTRY:
        raise SlimkitError(f"unknown pass '{name}'", f"available passes: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def available_passes() -> dict[str, type[Pass]]:
    _load_builtin_passes()
    return dict(sorted(_REGISTRY.items()))


def _load_builtin_passes() -> None:
    import importlib

    for module in ("convert", "fp16", "fusion", "quantize", "mixed_precision", "fake_quant", "cluster", "factorize",
                   "prune", "sparse_storage", "prune_structured", "distill", "archive", "to_keras", "openvino_quant"):
        importlib.import_module(f"slimkit.passes.{module}")
