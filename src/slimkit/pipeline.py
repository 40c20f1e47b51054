"""Recipes (YAML lists of passes) and the pipeline that checks and runs them.

The whole chain of model kinds is checked before any pass runs; where a pass needs ONNX and the
model is still PyTorch, `to-onnx` is inserted (and recorded as inserted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slimkit.errors import SlimkitError
from slimkit.formats import all_formats, format_named, output_formats
from slimkit.models.base import ModelKind, WorkingModel
from slimkit.passes.base import Context, Pass, get_pass
from slimkit.passes.outcome import Outcome, targets_missed

_RECIPE_KEYS = {"name", "description", "passes"}


@dataclass
class Recipe:
    name: str
    description: str
    steps: list[tuple[str, dict[str, Any]]]
    source: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source,
                "passes": [{"pass": n, **cfg} for n, cfg in self.steps]}


def retarget(recipe: Recipe, to: str) -> Recipe:
    """The recipe with its artifact converted to format `to` at the end, by the rules that format declares
    (`Format.retarget` in `slimkit.formats`): passes dropped or swapped for the format's own twins, options merged
    into its converter, and a recipe whose work cannot reach the format refused before any work."""
    fmt = format_named(to)
    if not fmt.output:
        raise SlimkitError(f"{to} is not an output format", f"choose one of: {', '.join(output_formats())}")
    names = [n for n, _ in recipe.steps]
    if fmt.converter is None or fmt.retarget is None or fmt.converter in names:
        return recipe  # the format is the recipes' own (ONNX), or the recipe already ends there
    rules = fmt.retarget
    converter = get_pass(fmt.converter)
    label = fmt.label or fmt.name
    # A step that makes another format (to-slim, to-tflite, ...) cannot be followed by this one's converter.
    other = {f.converter for f in all_formats()
             if f.converter and f.name != fmt.name and f.kind not in converter.accepts}
    blocked = [n for n in names if n in other and n not in rules.dropped]
    if blocked:
        raise SlimkitError(f"recipe {recipe.name} cannot end in {label}: {', '.join(blocked)} makes another format",
                           f"drop --to {to}, or use a recipe that ends in ONNX")
    before: list[tuple[str, dict]] = []
    after: list[tuple[str, dict]] = []
    converter_config: dict[str, Any] = {}
    for name, cfg in recipe.steps:
        if name in rules.dropped:
            continue
        if name in rules.merge_into_converter:
            converter_config.update(rules.merge_into_converter[name](cfg or {}))
        elif name in rules.equivalents:
            after.append(rules.equivalents[name](cfg or {}))
        else:
            before.append((name, cfg))
    # Work before the converter must leave the model in a kind the converter takes (TFLite: PyTorch).
    if ModelKind.ONNX not in converter.accepts:
        start = next(iter(converter.accepts))
        stuck = [n for n, _ in before if start not in get_pass(n).accepts
                 or get_pass(n)().output_kind(start) != start]
        if stuck:
            raise SlimkitError(f"recipe {recipe.name} cannot end in {label}: {', '.join(stuck)} work on ONNX",
                               f"{label} is converted from PyTorch: use recipes that change the PyTorch model "
                               "(prune-channels-30, distill, ...), fp16, or --to another format")
    return Recipe(f"{recipe.name}+{fmt.name}", recipe.description,
                  before + [(fmt.converter, converter_config)] + after, recipe.source)


def builtin_recipes() -> dict[str, Path]:
    folder = resources.files("slimkit") / "recipes"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def load_recipe(name_or_path: str | Path | Recipe) -> Recipe:
    """A built-in recipe by name, or a user recipe by path to a YAML file."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    text = str(name_or_path)
    builtins = builtin_recipes()
    if text in builtins:
        path = builtins[text]
    elif text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text)
        if not path.exists():
            raise SlimkitError(f"no such recipe file: {path}", "check the --recipe path")
    else:
        raise SlimkitError(f"unknown recipe '{text}'", f"built-in recipes: {', '.join(sorted(builtins))}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SlimkitError(f"recipe {path} is not valid YAML ({exc.__class__.__name__})", "fix the YAML") from exc
    return parse_recipe(raw, source=str(path), default_name=path.stem)


def parse_recipe(raw: Any, *, source: str = "<dict>", default_name: str = "custom") -> Recipe:
    if not isinstance(raw, dict):
        raise SlimkitError(f"recipe {source} must be a mapping with a 'passes' list", "see slimkit recipes")
    unknown = sorted(set(raw) - _RECIPE_KEYS)
    if unknown:
        raise SlimkitError(f"recipe {source}: unknown key '{unknown[0]}'", f"accepted keys: {', '.join(sorted(_RECIPE_KEYS))}")
    steps = []
    for i, item in enumerate(raw.get("passes") or []):
        if isinstance(item, str):
            item = {"pass": item}
        if not isinstance(item, dict) or "pass" not in item:
            raise SlimkitError(f"recipe {source}: step {i + 1} has no 'pass' key", "write '- pass: NAME'")
        cfg = dict(item)
        steps.append((str(cfg.pop("pass")), cfg))
    if not steps:
        raise SlimkitError(f"recipe {source} has no passes", "list at least one pass under 'passes'")
    return Recipe(str(raw.get("name") or default_name), str(raw.get("description") or ""), steps, source)


@dataclass
class PlannedStep:
    pass_: Pass
    kind_in: ModelKind
    kind_out: ModelKind
    inserted: bool = False


def plan(recipe: Recipe, input_kind: ModelKind, overrides: dict[str, dict] | None = None) -> list[PlannedStep]:
    """Instantiate every pass (which validates its config), check the chain of kinds and what each configured
    pass can do on the kind it will get, before anything runs: a bad recipe costs no work.

    Any problem is one SlimkitError naming the recipe's pass (and the key, for a config value).
    """
    steps: list[PlannedStep] = []
    kind = input_kind
    previous = "the input model"
    quantized_by: str | None = None  # the pass that made the model quantized, if one did
    for name, cfg in recipe.steps:
        cls = get_pass(name)
        merged = {**cfg, **(overrides or {}).get(name, {})}
        instance = cls(merged)
        if kind not in cls.accepts:
            if ModelKind.ONNX in cls.accepts and kind == ModelKind.TORCH:
                to_onnx = get_pass("to-onnx")()
                steps.append(PlannedStep(to_onnx, kind, ModelKind.ONNX, inserted=True))
                kind = ModelKind.ONNX
            else:
                wants = " or ".join(sorted(str(k) for k in cls.accepts))
                raise SlimkitError(
                    f"recipe {recipe.name}: pass '{name}' needs a {wants} model but {previous} is {kind}",
                    "reorder the passes or start from a model of the right kind",
                )
        instance.check_input(kind)
        if cls.needs_float and quantized_by is not None:
            raise SlimkitError(f"recipe {recipe.name}: pass '{name}' needs a float model but "
                               f"'{quantized_by}' quantizes it first",
                               "quantize once: keep one of the two passes")
        if cls.quantizes:
            quantized_by = name
        out = instance.output_kind(kind)
        steps.append(PlannedStep(instance, kind, out))
        kind = out
        previous = f"the output of '{name}'"
    return steps


@dataclass
class PipelineResult:
    model: WorkingModel
    steps: list[dict] = field(default_factory=list)
    # The model after each step, in order (the last is `model`): a caller can reuse an intermediate, e.g.
    # the plain export a recipe makes on its way (see slimkit.baseline).
    models: list[WorkingModel] = field(default_factory=list, repr=False)
    # What became of each step, in order (also in each step's record as "outcome").
    outcomes: list[Outcome] = field(default_factory=list)

    def targets_missed(self) -> list[str]:
        """'pass: how far off' for each step that missed its target (its best effort was kept)."""
        return targets_missed((step["pass"], outcome) for step, outcome in zip(self.steps, self.outcomes,
                                                                                  strict=True))


@dataclass(frozen=True)
class Target:
    """What a compressed model must keep on the validation data: an accuracy drop of at most `max_drop`
    (labelled data) or a mean output cosine of at least `min_cosine` to the original."""

    max_drop: float | None = None
    min_cosine: float | None = None


class _Judge:
    """Scores intermediate models against the original on the validation data (ctx.data), once per model."""

    def __init__(self, original: WorkingModel, ctx: Context, target: Target) -> None:
        from slimkit.evaluate.measure import Evaluator

        if ctx.data is None:
            raise SlimkitError("--max-drop / --min-cosine need validation data to back off on",
                               "give --data (it is split into training and validation parts when needed)")
        self.target = target
        # Only fidelity and accuracy are judged here (no latency): a large batch makes it quick.
        self.evaluator = Evaluator(ctx.data, reference=original, like=original,
                                   settings=replace(ctx.settings, batch_size=64, max_samples=None))
        if target.max_drop is not None and not self.evaluator.dataset.has_labels:
            raise SlimkitError("--max-drop needs labelled validation data", "give labels, or use --min-cosine")
        self.reference = self.evaluator.measure(original, latency=False)
        if target.max_drop is not None and "accuracy" not in self.reference.metrics:
            raise SlimkitError("--max-drop needs a classifier (class scores and integer labels)",
                               "use --min-cosine for other outputs, or pass --task classification")

    def score(self, model: WorkingModel) -> dict[str, Any]:
        m = self.evaluator.measure(model, latency=False)
        out: dict[str, Any] = {"validation_samples": m.data["samples"]}
        meets = True
        if self.target.max_drop is not None:
            drop = self.reference.metrics["accuracy"] - m.metrics["accuracy"]
            out.update(accuracy=m.metrics["accuracy"], reference_accuracy=self.reference.metrics["accuracy"],
                       drop=drop)
            meets = meets and drop <= self.target.max_drop + 1e-12
        if self.target.min_cosine is not None:
            cosine = (m.fidelity or {}).get("cosine_mean", 0.0)
            out["cosine_mean"] = cosine
            meets = meets and cosine >= self.target.min_cosine
        out["meets"] = meets
        return out


def run_pipeline(model: WorkingModel, recipe: Recipe, ctx: Context,
                 overrides: dict[str, dict] | None = None, target: Target | None = None, *,
                 planned: list[PlannedStep] | None = None) -> PipelineResult:
    """Run the planned passes in order (`planned`: the steps `plan` already made for this recipe, model kind
    and overrides; planned here when left out). With a `target`, each pass that can be made gentler
    (`Pass.relaxed`) is checked on the validation data right after it runs and re-run one step gentler until
    the target holds (or its ladder ends: the last try is kept, its outcome `missed`)."""
    steps = planned if planned is not None else plan(recipe, model.kind, overrides)
    judge = None
    if target is not None and any(step.pass_.relaxed() is not None for step in steps):
        judge = _Judge(model, ctx, target)
    records, models, outcomes = [], [], []
    current = model
    for step in steps:
        result, record = _run_step(step, step.pass_, current, ctx)
        if judge is not None and step.pass_.relaxed() is not None:
            result, record = _back_off(step, current, ctx, judge, result, record)
        records.append(record)
        outcomes.append(result.outcome)
        current = result.model
        models.append(current)
    return PipelineResult(current, records, models, outcomes)


def _run_step(step: PlannedStep, pass_: Pass, model: WorkingModel, ctx: Context):
    ctx.progress(f"{pass_.name}")
    start = time.perf_counter()
    result = pass_.run(model, ctx)
    seconds = time.perf_counter() - start
    return result, {
        "pass": pass_.name,
        "config": pass_.config.model_dump(mode="json"),
        "inserted": step.inserted,
        "kind_in": str(step.kind_in),
        "kind_out": str(result.model.kind),
        "seconds": round(seconds, 3),
        "stats": result.stats,
        "outcome": result.outcome.as_dict(),
    }


def _back_off(step: PlannedStep, model: WorkingModel, ctx: Context, judge: _Judge, result, record):
    pass_ = step.pass_
    ladder = tuple(pass_.relaxed() or {})  # the config keys this pass's back-off changes
    score = judge.score(result.model)
    attempts = [{"config": _ladder_values(pass_, ladder), "seconds": record["seconds"], **score}]
    seconds = record["seconds"]
    while not score["meets"] and (change := pass_.relaxed()) is not None:
        pass_ = type(pass_)({**pass_.config.model_dump(), **change})
        attempt_ctx = ctx
        if ctx.checkpoint_dir is not None:  # each rung trains from scratch; keep its checkpoints apart
            attempt_ctx = replace(ctx, workdir=ctx.workdir,
                                  checkpoint_dir=ctx.checkpoint_dir / f"backoff-{len(attempts)}")
        ctx.progress(f"{pass_.name} missed the target on validation data; trying {change}")
        result, record = _run_step(step, pass_, model, attempt_ctx)
        seconds += record["seconds"]
        score = judge.score(result.model)
        attempts.append({"config": _ladder_values(pass_, ladder), "seconds": record["seconds"], **score})
    record["seconds"] = round(seconds, 3)
    stats = dict(record["stats"]) if isinstance(record["stats"], dict) else {"result": record["stats"]}
    stats["backoff"] = {"target": {"max_drop": judge.target.max_drop, "min_cosine": judge.target.min_cosine},
                        "attempts": attempts, "chosen": attempts[-1]["config"], "on": "validation data"}
    if "drop" in score:
        metric, measured, bound = "accuracy_drop", score["drop"], judge.target.max_drop
        shortfall = f"accuracy drop is {score['drop']:.4f}"
    else:
        metric, measured, bound = "cosine_mean", score.get("cosine_mean", 0.0), judge.target.min_cosine
        shortfall = f"mean cosine is {score.get('cosine_mean', 0):.4f}"
    outcome = Outcome.judged(bool(score["meets"]), metric=metric, measured=measured, target=bound,
                             reason=f"even at {attempts[-1]['config']} the validation {shortfall}")
    if result.outcome.is_skipped and not outcome.missed:  # left the model as it was, which met the target
        outcome = result.outcome
    result.stats, result.outcome = stats, outcome
    record["stats"], record["outcome"] = stats, outcome.as_dict()
    return result, record


def _ladder_values(pass_: Pass, keys: tuple[str, ...]) -> dict[str, Any]:
    """The pass's current values of the config keys its back-off ladder changes."""
    dumped = pass_.config.model_dump(mode="json")
    return {k: dumped[k] for k in keys}
