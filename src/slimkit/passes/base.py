"""The pass contract: declared input/output kinds, a strict config, `run(model, ctx) -> PassResult`, and the
registry that finds passes: every module of `slimkit.passes`, plus entry points in the group `slimkit.passes`
(how a third-party package adds its own).

A pass never mutates its input model and never writes outside `ctx.workdir`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from slimkit.config import ConfigError, PassConfig
from slimkit.errors import SlimkitError, first_line
from slimkit.models.base import ModelKind, WorkingModel
from slimkit.models.limits import DEFAULT_SEQUENCE
from slimkit.passes.outcome import Outcome
from slimkit.scratch import make_scratch
from slimkit.settings import MeasureSettings

ENTRY_POINT_GROUP = "slimkit.passes"

# The order in which a searched chain applies techniques: remove units (structure), recover from that by
# distillation (recover, only after structure), factorize layers, share weights (share), then lower the
# precision (quantize). Format conversions are placed by the search between them where kinds require.
SEARCH_STAGES = ("structure", "recover", "factorize", "share", "quantize")


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
    """The model a pass returns, the numbers the report shows (`stats`), and what became of the pass
    (`outcome`: done, met or missed a target, or skipped), which the pipeline and the CLI act on."""

    model: WorkingModel
    stats: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=Outcome)


class Pass:
    """Subclasses set `name`, `accepts`, `returns` and `Config`, and implement `run`.

    `returns = None` means the pass returns the kind it was given (it works on several kinds).
    """

    name: ClassVar[str]
    accepts: ClassVar[frozenset[ModelKind]]
    returns: ClassVar[ModelKind | None]
    Config: ClassVar[type[PassConfig]] = PassConfig
    description: ClassVar[str] = ""
    # Quantization: a pass that `quantizes` leaves quantized ops in the model; one that `needs_float` refuses
    # such a model (quantizing twice only adds error). The pipeline refuses the second before any work.
    quantizes: ClassVar[bool] = False
    needs_float: ClassVar[bool] = False
    # The search (`slimkit.searching`): the stage of a searched chain this pass can fill (one of SEARCH_STAGES;
    # None keeps it out), the config it starts from there (its `searchable` fields are then varied), passes
    # that must run right before it, and whether it trains (such candidates are tried after the cheap ones).
    search_stage: ClassVar[str | None] = None
    search_config: ClassVar[dict[str, Any]] = {}
    search_needs: ClassVar[tuple[str, ...]] = ()
    search_trains: ClassVar[bool] = False
    # Configs this pass needs of other passes in the same searched chain, e.g. a TFLite quantizer needs the fp32
    # flatbuffer ({"to-tflite": {"precision": "fp32"}}); they override what the sampler chose for them.
    search_fixes: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: Mapping[str, Any] | PassConfig | None = None) -> None:
        self.config = make_config(self.name, self.Config, config)

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:  # pragma: no cover - interface
        raise NotImplementedError

    def output_kind(self, input_kind: ModelKind) -> ModelKind:
        return input_kind if self.returns is None else self.returns

    def check_input(self, kind: ModelKind) -> None:
        """Refuse, with a SlimkitError, a configuration that cannot work on a model of this kind (e.g.
        fine-tuning an ONNX model). The pipeline calls it while planning, before any pass runs."""

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
    """The validated config of a pass; any problem is one SlimkitError that names the pass and the key."""
    if isinstance(config, config_cls):
        return config
    values = dict(config or {})
    accepted = ", ".join(config_cls.model_fields) or "none"
    try:
        return config_cls(**values)
    except ConfigError as exc:  # a validator's own message, which names the key
        raise ConfigError(exc.key, f"pass '{pass_name}': {exc.problem}", exc.hint) from None
    except SlimkitError as exc:
        raise SlimkitError(f"pass '{pass_name}': {exc.problem}", exc.hint) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err.get("loc", ())) or "?"
        if err.get("type") == "extra_forbidden":
            raise ConfigError(key, f"pass '{pass_name}': unknown key '{key}'",
                              f"accepted keys: {accepted}") from None
        if err.get("type") == "missing":
            raise ConfigError(key, f"pass '{pass_name}': missing key '{key}'",
                              f"accepted keys: {accepted}") from None
        given = f" ({_short(err['input'])})" if "input" in err and not isinstance(err["input"], dict) else ""
        raise ConfigError(key, f"pass '{pass_name}': bad value for '{key}'{given}: {err.get('msg')}",
                          f"accepted keys: {accepted}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


_REGISTRY: dict[str, type[Pass]] = {}
_discovered = False


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make the pass available to recipes under `cls.name`. A second class with a name
    already taken is refused (naming both), rather than silently replacing the first."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise SlimkitError(f"pass class {_qualified(cls)} has no name", "set a class attribute name = '...'")
    current = _REGISTRY.get(name)
    # The same class again (an entry point naming a class its module already registered, or a module
    # reloaded) is no conflict; another class under the same name is.
    if current is not None and _qualified(current) != _qualified(cls):
        raise SlimkitError(f"two passes are named '{name}': {_qualified(current)} and {_qualified(cls)}",
                           "rename one of them (the name recipes use is the class attribute `name`)")
    _REGISTRY[name] = cls
    return cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def get_pass(name: str) -> type[Pass]:
    discover_passes()
    if name not in _REGISTRY:
        raise SlimkitError(f"unknown pass '{name}'", f"available passes: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def available_passes() -> dict[str, type[Pass]]:
    discover_passes()
    return dict(sorted(_REGISTRY.items()))


def discover_passes(*, again: bool = False) -> None:
    """Import every module of `slimkit.passes` (each registers its passes) and load the entry points of the
    group `slimkit.passes` that installed packages declare (a module that registers passes, or a Pass class).

    Done once per process; `again` repeats it (after installing a plugin in a running interpreter).
    """
    global _discovered
    if _discovered and not again:
        return
    import importlib
    import pkgutil

    package = __name__.rpartition(".")[0]  # slimkit.passes, scanned on disk (importing it here would be a cycle)
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    for entry in _entry_points():
        try:
            loaded = entry.load()
        except Exception as exc:  # a broken plugin is the user's environment: name it, do not crash
            raise SlimkitError(f"the pass plugin '{entry.name}' ({entry.value}) failed to load: "
                               f"{first_line(exc)}", "fix or uninstall the package that declares it") from exc
        if isinstance(loaded, type) and issubclass(loaded, Pass):
            register(loaded)
    _discovered = True


def _entry_points() -> list:
    from importlib.metadata import entry_points

    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
