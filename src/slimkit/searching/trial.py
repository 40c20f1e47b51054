"""One trial: run a candidate chain on the original model, check the floor early, measure it on validation
against the plain ONNX baseline (interleaved), and hand back its record and artifact.

The same function runs in the driver (local executor) and in a Ray task; it never touches the store.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.errors import SlimkitError, first_line
from slimkit.searching.world import World, metric_of

Step = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class TrialSpec:
    number: int
    label: str
    chain: str  # the chain's key, e.g. "openvino:ov-int8"
    runtime: str
    steps: list[Step]
    # Steps before this index run first (the training stages on the PyTorch model); the floor is checked on
    # validation after them, so a candidate that already misses it stops there.
    check_after: int = 0


@dataclass
class TrialResult:
    number: int
    state: str  # complete | pruned | failed
    duration_s: float
    validation: dict | None = None
    error: str | None = None
    pruned_reason: str | None = None
    intermediate: list[tuple[int, float]] = field(default_factory=list)  # (step, validation metric) checks
    passes: list[dict] = field(default_factory=list)  # what each pass did (stats, outcome), as in reports
    files: dict[str, bytes] = field(default_factory=dict)  # the artifact, when no folder was given
    artifact_name: str | None = None
    sensitivity: list | None = None
    measurements: list[dict] = field(default_factory=list)  # baseline and candidate, as in reports


# stop_early(step, metric) -> True to stop the trial: Optuna's pruner locally, its rule on a Ray worker.
StopRule = Callable[[int, float], bool]


def run_trial(world: World, spec: TrialSpec, *, out_dir: Path | None = None,
              stop_early: StopRule | None = None) -> TrialResult:
    """Run one candidate. A failure is recorded in the result, never raised: one bad candidate must not end
    the search. The artifact goes into `out_dir` (written whole, then renamed) or, without it, into
    `result.files` (a Ray task returns it to the driver)."""
    started = time.perf_counter()
    result = TrialResult(spec.number, "failed", 0.0)
    try:
        _run(world, spec, result, out_dir, stop_early)
    except SlimkitError as exc:
        result.state, result.error = "failed", exc.problem + (f" ({exc.hint})" if exc.hint else "")
    except MemoryError:
        result.state, result.error = "failed", "out of memory"
    except Exception as exc:  # a library refusing a graph mid-trial: recorded with where it happened
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result.state = "failed"
        result.error = f"{type(exc).__name__}: {first_line(exc)} (at {Path(where.filename).name}:{where.lineno})"
    result.duration_s = time.perf_counter() - started
    return result


def _run(world: World, spec: TrialSpec, result: TrialResult, out_dir: Path | None,
         stop_early: StopRule | None) -> None:
    from slimkit.api import optimize, target_overrides
    from slimkit.pipeline import Recipe

    model, steps_left, check_after = world.original, list(spec.steps), spec.check_after
    prefix = world.baseline_steps
    if not check_after and steps_left[:len(prefix)] == prefix:
        # The chain starts with the plain export the world already made: start from it rather than export
        # again (a transformer's export is most of a cheap trial's time). Passes never change their input.
        model, steps_left = world.baseline, steps_left[len(prefix):]
        result.passes.append({"pass": "+".join(n for n, _ in prefix), "stats": {"reused": "the search's baseline export"}})
    segments = [steps_left[:check_after], steps_left[check_after:]] if check_after else [steps_left]
    for index, steps in enumerate(segments):
        if not steps:
            continue
        recipe = Recipe(spec.label if index == len(segments) - 1 else f"{spec.label} (part 1)", "", list(steps))
        floor = world.floor  # accuracy-aware passes aim at the search's own floor (api.target_overrides routes it)
        overrides = target_overrides(recipe, floor.value if floor.rule == "min_cosine" else None,
                                     floor.value if floor.rule == "max_drop" else None)
        done = optimize(model, recipe, data=world.spec.fit, settings=world.settings, measure=False,
                        overrides=overrides or None)
        result.passes.extend(done.steps)
        model = done.model
        if index == 0 and len(segments) == 2:  # the training stages are done: does the floor still hold?
            checked = world.evaluator.measure(model, label="after training", latency=False)
            value = metric_of(checked, world.floor)
            result.intermediate.append((1, float(value) if value is not None else float("nan")))
            if value is None or (stop_early or _below(world))(1, value):
                result.state = "pruned"
                shown = "no value" if value is None else f"{value:.4f}"
                result.pruned_reason = (f"stopped after {', '.join(n for n, _ in steps)}: validation "
                                        f"{world.floor.metric} {shown} already misses the floor "
                                        f"{world.floor.threshold:.4f}")
                return
    result.sensitivity = _sensitivity(result.passes)
    base, candidate = world.evaluator.measure_all([("baseline", world.baseline), (spec.label, model)])
    result.validation = summarize(candidate.as_dict(), base.as_dict(), world)
    result.measurements = [base.as_dict(), candidate.as_dict()]
    result.state = "complete"
    _deliver(model, result, out_dir)


def _below(world: World) -> StopRule:
    return lambda step, value: not world.floor.met(value)


def summarize(candidate: dict, baseline: dict, world: World) -> dict:
    """The figures a trial is ranked by, from its measurement and the baseline's in the same interleaved run."""
    p50 = (candidate.get("latency_ms") or {}).get("p50")
    base_p50 = (baseline.get("latency_ms") or {}).get("p50")
    metric = metric_of(candidate, world.floor)
    fidelity = candidate.get("fidelity") or {}
    metrics = candidate.get("metrics") or {}
    return {
        "latency_ms": p50,
        "latency_iqr_ms": (candidate.get("latency_ms") or {}).get("p50_spread"),
        "baseline_latency_ms": base_p50,
        "speedup": base_p50 / p50 if p50 and base_p50 else None,
        "size_bytes": candidate.get("size_bytes"),
        "baseline_size_bytes": baseline.get("size_bytes"),
        "size_ratio": candidate["size_bytes"] / baseline["size_bytes"] if baseline.get("size_bytes") else None,
        "metric": metric,
        "cosine": fidelity.get("cosine_mean"),
        "accuracy": metrics.get("accuracy"),
        "accuracy_ci": metrics.get("accuracy_ci95"),
        "samples": (candidate.get("data") or {}).get("samples"),
        "meets_floor": world.floor.met(metric),
        "nonfinite_outputs": candidate.get("nonfinite_outputs"),
        "runtime": candidate.get("runtime"),
    }


def _sensitivity(passes: list[dict]) -> list | None:
    """The per-layer sensitivity an accuracy-aware pass built, when one did."""
    for record in passes:
        stats = record.get("stats") or {}
        for key in ("sensitivity", "layer_sensitivity"):
            if isinstance(stats.get(key), list) and stats[key]:
                return stats[key]
    return None


def _deliver(model: Any, result: TrialResult, out_dir: Path | None) -> None:
    from slimkit.artifacts import write_artifact

    if out_dir is not None:
        out_dir = Path(out_dir)
        stage = out_dir.parent / f".{out_dir.name}.tmp"
        shutil.rmtree(stage, ignore_errors=True)
        main = write_artifact(model, stage)
        shutil.rmtree(out_dir, ignore_errors=True)
        stage.rename(out_dir)
        result.artifact_name = main.name
        return
    with tempfile.TemporaryDirectory(prefix="slimkit-trial-") as tmp:
        main = write_artifact(model, Path(tmp))
        result.artifact_name = main.name
        result.files = {str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
