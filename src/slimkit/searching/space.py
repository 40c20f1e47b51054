"""The search space, generated from the registries: which chains of passes can be tried on a model, and which
config values each may take.

A chain picks at most one pass per stage (`passes.base.SEARCH_STAGES`, in that order) and one output format;
the passes come from each pass's `search_stage`, the values from the fields its Config marks `searchable`, the
formats and their conversions from `slimkit.formats`. Nothing here names a pass, so a new pass that declares a
stage joins the search as it is. Every chain is checked with `pipeline.plan` before it is offered.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slimkit.config import search_space_of
from slimkit.errors import SlimkitError
from slimkit.formats import Format, all_formats
from slimkit.models.base import ModelKind
from slimkit.passes.base import SEARCH_STAGES, available_passes, get_pass
from slimkit.pipeline import Recipe, load_recipe, plan

NONE = "none"
Step = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Chain:
    """One ordered combination: the pass chosen for each stage (or none) and the output format."""

    format: str
    stages: tuple[tuple[str, str], ...]  # (stage, pass name), stages in SEARCH_STAGES order, chosen ones only
    steps: tuple[str, ...]  # every pass in run order, conversions included
    trains: bool

    @property
    def key(self) -> str:
        chosen = "+".join(name for _stage, name in self.stages) or "plain"
        return f"{self.format}:{chosen}"


@dataclass(frozen=True)
class Space:
    """The chains a model can go through, and the stage choices each format offers."""

    chains: tuple[Chain, ...]
    formats: tuple[str, ...]
    stage_choices: Mapping[str, tuple[str, ...]]  # stage -> passes (NONE first); "quantize" per format below
    quantizers: Mapping[str, tuple[str, ...]]  # format -> quantize-stage passes valid on it (NONE first)

    def chain(self, fmt: str, choice: Mapping[str, str]) -> Chain | None:
        """The chain of these stage choices on `fmt`, or None when that combination cannot run."""
        wanted = tuple((stage, choice[stage]) for stage in SEARCH_STAGES if choice.get(stage, NONE) != NONE)
        for chain in self.chains:
            if chain.format == fmt and chain.stages == wanted:
                return chain
        return None


def runtime_formats(runtimes: Sequence[str] | None) -> list[Format]:
    """The output formats to search, from `--runtimes` (format names like tflite, or runtime names like
    onnxruntime, litert); all output formats whose converter can be planned when None."""
    formats = [f for f in all_formats() if f.output and f.plain_recipe]
    if runtimes is None:
        return formats
    chosen = []
    for name in runtimes:
        match = [f for f in formats if name in (f.name, f.runtime)]
        if not match:
            known = sorted({f.runtime for f in formats} | {f.name for f in formats})
            raise SlimkitError(f"--runtimes {name} is not a runtime slimkit can search", f"give some of {', '.join(known)}")
        chosen.extend(f for f in match if f not in chosen)
    return chosen


def stage_passes() -> dict[str, list[str]]:
    """stage -> the names of the passes that declare it."""
    found: dict[str, list[str]] = {stage: [] for stage in SEARCH_STAGES}
    for name, cls in available_passes().items():
        if cls.search_stage in found:
            found[cls.search_stage].append(name)
    return found


def build_space(original_kind: ModelKind, formats: Sequence[Format]) -> Space:
    """Every chain that plans on a model of `original_kind`, per format."""
    by_stage = stage_passes()
    options = [[NONE, *by_stage[stage]] for stage in SEARCH_STAGES]
    chains: list[Chain] = []
    quantizers: dict[str, list[str]] = {}
    for fmt in formats:
        plain = load_recipe(fmt.plain_recipe).steps
        quantizers[fmt.name] = [NONE]
        for combo in itertools.product(*options):
            choice = dict(zip(SEARCH_STAGES, combo, strict=True))
            if choice.get("recover", NONE) != NONE and choice.get("structure", NONE) == NONE:
                continue  # recovery only follows structured pruning
            steps = compose(original_kind, plain, [choice[s] for s in SEARCH_STAGES if choice[s] != NONE])
            if steps is None or not _plans(steps, original_kind):
                continue
            stages = tuple((s, choice[s]) for s in SEARCH_STAGES if choice[s] != NONE)
            trains = any(get_pass(name).search_trains for _s, name in stages)
            chains.append(Chain(fmt.name, stages, tuple(n for n, _ in steps), trains))
            quant = choice.get("quantize", NONE)
            if quant != NONE and quant not in quantizers[fmt.name]:
                quantizers[fmt.name].append(quant)
    if not chains:
        raise SlimkitError(f"no searchable chain plans on a {original_kind} model", "check --runtimes")
    stage_choices = {stage: tuple([NONE, *[p for p in by_stage[stage]
                                           if any(p == n for c in chains for _s, n in c.stages)]])
                     for stage in SEARCH_STAGES if stage != "quantize"}
    present = tuple(dict.fromkeys(c.format for c in chains))
    return Space(tuple(chains), present, stage_choices, {k: tuple(v) for k, v in quantizers.items() if k in present})


def compose(original_kind: ModelKind, plain: Sequence[Step], chosen: Sequence[str]) -> list[Step] | None:
    """Insert the chosen passes (in stage order) into a format's plain conversion steps, each at the latest
    point where the model is of a kind it takes and keeps (pruning before the export of a PyTorch model,
    clustering on the ONNX graph before its conversion to OpenVINO); the last stage (precision) only at the
    end, in the format the runtime runs. A pass's `search_needs` go right before it. None when a pass has no
    such point."""
    steps: list[Step] = [(name, dict(cfg or {})) for name, cfg in plain]
    floor = 0  # a pass goes after the ones inserted before it
    for name in chosen:
        cls = get_pass(name)
        kinds = _kinds_along(original_kind, steps)
        spots = [i for i in range(floor, len(steps) + 1)
                 if kinds[i] in cls.accepts and cls().output_kind(kinds[i]) == kinds[i]]
        if cls.search_stage == SEARCH_STAGES[-1]:  # precision is the runtime's: lowered in the final format
            spots = [i for i in spots if i == len(steps)]
        if not spots:
            return None
        at = spots[-1]
        needs = [(need, {}) for need in cls.search_needs
                 if kinds[at] in get_pass(need).accepts and not any(n == need for n, _ in steps)]
        steps[at:at] = [*needs, (name, {})]
        floor = at + len(needs) + 1
    return steps


def _kinds_along(original_kind: ModelKind, steps: Sequence[Step]) -> list[ModelKind]:
    """kinds[i]: the model's kind before step i (kinds[len]: after the last)."""
    kinds = [original_kind]
    for name, _cfg in steps:
        kinds.append(get_pass(name)().output_kind(kinds[-1]))
    return kinds


def _plans(steps: Sequence[Step], original_kind: ModelKind) -> bool:
    try:
        plan(Recipe("candidate", "", [(n, _start_config(n)) for n, _ in steps]), original_kind)
    except SlimkitError:
        return False
    return True


def _start_config(name: str) -> dict[str, Any]:
    return dict(get_pass(name).search_config)


def searchable_fields(name: str) -> dict[str, dict[str, Any]]:
    return search_space_of(get_pass(name).Config)


def chain_steps(chain: Chain, values: Mapping[str, Any]) -> list[Step]:
    """The chain's passes with their configs: each pass's `search_config`, then the values chosen for its
    searchable fields (`values["<pass>.<field>"]`)."""
    steps = []
    for name in chain.steps:
        cfg = _start_config(name)
        for field in searchable_fields(name):
            key = f"{name}.{field}"
            if key in values:
                cfg[field] = values[key]
        steps.append((name, cfg))
    for name in chain.steps:  # what a pass needs of the others wins over the sampler's choice
        for other, fixed in get_pass(name).search_fixes.items():
            for step_name, cfg in steps:
                if step_name == other:
                    cfg.update(fixed)
    return steps


def default_values(chain: Chain) -> dict[str, Any]:
    """Each searchable field of the chain at its start value (the pass's search_config, else its default)."""
    values = {}
    for name in chain.steps:
        start = _start_config(name)
        config_fields = get_pass(name).Config.model_fields
        for field, spec in searchable_fields(name).items():
            value = start.get(field, config_fields[field].default)
            if value is None:  # a field off by default (factorize's energy): the middle of its range
                value = _middle(spec)
            values[f"{name}.{field}"] = value
    return values


def _middle(spec: Mapping[str, Any]) -> Any:
    if "choices" in spec:
        return spec["choices"][len(spec["choices"]) // 2]
    return (spec["low"] + spec["high"]) / 2


__all__ = ["NONE", "Chain", "Space", "build_space", "chain_steps", "compose", "default_values",
           "runtime_formats", "searchable_fields", "stage_passes"]
