"""Recipes (YAML lists of passes) and the pipeline that checks and runs them.

The whole chain of model kinds is checked before any pass runs; where a pass needs ONNX and the
model is still PyTorch, `to-onnx` is inserted (and recorded as inserted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, WorkingModel
from slimkit.passes.base import Context, Pass, get_pass

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
    """The recipe with its artifact converted to `to` ("onnx", "openvino", "tflite") at the end.

    TFLite is converted from PyTorch (litert-torch), so only recipes whose work happens on the PyTorch model
    can end there; `fp16` maps to `tflite-fp16` (fp16 weights in the flatbuffer), as the TFLite converter's
    `supported_types = [tf.float16]` does.
    """
    onnx_glue = ("to-onnx", "onnx-cleanup")
    if to == "tflite":
        if recipe.name in ("fp16", "tflite", "tflite-fp16"):
            return load_recipe("tflite" if recipe.name == "tflite" else "tflite-fp16")
        work = [(n, c) for n, c in recipe.steps if n not in onnx_glue]
        onnx_only = [n for n, _ in work if ModelKind.TORCH not in get_pass(n).accepts
                     or get_pass(n)().output_kind(ModelKind.TORCH) != ModelKind.TORCH]
        if onnx_only:
            raise SlimkitError(f"recipe {recipe.name} cannot end in TFLite: {', '.join(onnx_only)} work on ONNX",
                               "TFLite is converted from PyTorch: use recipes that change the PyTorch model "
                               "(prune-channels-30, distill, ...), fp16, or --to onnx / openvino")
        return Recipe(f"{recipe.name}+tflite", recipe.description, work + [("to-tflite", {})], recipe.source)
    if to == "openvino":
        if recipe.steps and recipe.steps[-1][0] == "to-openvino":
            return recipe
        return Recipe(f"{recipe.name}+openvino", recipe.description, recipe.steps + [("to-openvino", {})],
                      recipe.source)
    if to == "onnx":
        return recipe
    raise SlimkitError(f"unknown output format '{to}'", "choose onnx, openvino or tflite")


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
    """Instantiate and validate every pass and check the chain of kinds, before anything runs."""
    steps: list[PlannedStep] = []
    kind = input_kind
    previous = "the input model"
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
        out = instance.output_kind(kind)
        steps.append(PlannedStep(instance, kind, out))
        kind = out
        previous = f"the output of '{name}'"
    return steps


@dataclass
class PipelineResult:
    model: WorkingModel
    steps: list[dict] = field(default_factory=list)


def run_pipeline(model: WorkingModel, recipe: Recipe, ctx: Context,
                 overrides: dict[str, dict] | None = None) -> PipelineResult:
    steps = plan(recipe, model.kind, overrides)
    records = []
    current = model
    for step in steps:
        ctx.progress(f"{step.pass_.name}")
        start = time.perf_counter()
        result = step.pass_.run(current, ctx)
        seconds = time.perf_counter() - start
        records.append({
            "pass": step.pass_.name,
            "config": step.pass_.config.model_dump(mode="json"),
            "inserted": step.inserted,
            "kind_in": str(step.kind_in),
            "kind_out": str(result.model.kind),
            "seconds": round(seconds, 3),
            "stats": result.stats,
        })
        current = result.model
    return PipelineResult(current, records)
