"""The search loop: Optuna asks for a candidate, an executor runs it, the store records it the moment it ends,
`DIR/best/` follows the best so far, and at the end the finalists are re-measured together on held-out data.

Selection discipline: trials are ranked on the validation part of --data; the finalists (the Pareto front and
the best) are then measured again, interleaved on this machine, on --eval-data or a held-back part of --data
that no trial saw. The recommendation is chosen by validation fidelity and the re-measured speed and size;
the held-out figures are reported beside it and choose nothing.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slimkit.errors import SlimkitError, TargetNotMetError
from slimkit.models.base import WorkingModel
from slimkit.report.build import to_jsonable
from slimkit.searching import explain
from slimkit.searching.candidates import cheap_first, suggest_chain, trial_label
from slimkit.searching.executors import make_executor
from slimkit.searching.outputs import final_measurement, save_baseline, write_best
from slimkit.searching.space import (
    NONE,
    Chain,
    Space,
    build_space,
    chain_steps,
    runtime_formats,
)
from slimkit.searching.store import (
    RECORD,
    STORE_VERSION,
    STUDY_NAME,
    all_records,
    check_compatible,
    import_optuna,
    open_store,
    store_path,
)
from slimkit.searching.trial import TrialResult, TrialSpec
from slimkit.searching.world import World, WorldSpec, build_world, fingerprint, split_data
from slimkit.settings import MeasureSettings

OBJECTIVES = ("latency", "size", "both")
DEFAULT_TRIALS = 30
BIG = 1e9  # what Optuna is told for a figure that could not be measured (it refuses NaN)


@dataclass
class SearchResult:
    """The search's answer: the folder, its report (as report.json), the recommended trial's record and
    whether it met the floor on validation."""

    folder: Path
    report: dict
    recommended: dict | None
    met: bool
    records: list[dict] = field(default_factory=list)

    @property
    def best_dir(self) -> Path:
        return self.folder / "best"

    def require_floor(self) -> None:
        """Raise TargetNotMetError (exit 3 in the CLI) when no trial met the floor; best/ holds the closest."""
        if not self.met:
            rec = self.report.get("recommendation") or {}
            raise TargetNotMetError(f"no trial met the floor: {rec.get('shortfall') or 'nothing completed'}",
                                    f"the closest trial was saved in {self.best_dir}")


def search(
    model: Any,
    *,
    data: Any,
    output: str | Path,
    eval_data: Any = None,
    max_drop: float | None = None,
    min_cosine: float | None = None,
    objective: str = "latency",
    budget_trials: int | None = None,
    budget_minutes: float | None = None,
    runtimes: Any = None,
    executor: str = "local",
    address: str | None = None,
    workers: int = 2,
    resume: bool = False,
    seed: int = 0,
    settings: MeasureSettings | None = None,
    progress: Callable[[str], None] | None = None,
    **load_kwargs: Any,
) -> SearchResult:
    """Search chains of techniques, runtimes and precisions for the fastest (or smallest) artifact that keeps
    the floor (`max_drop` in accuracy, or `min_cosine` to the original), within a budget of trials or minutes.

    Every trial is stored in `output`/search.db as it ends; `resume` continues an interrupted search there.
    `executor='ray'` runs trials as Ray tasks (`address`: 'auto', 'ray://host:port', or None for a local
    instance with `workers` CPUs' worth of tasks). Returns the report and the recommendation; `output`/best/
    holds the best artifact so far at every moment.
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    settings = settings or MeasureSettings()
    rule, value = _floor_option(max_drop, min_cosine)
    budget_trials, budget_minutes = _budget(budget_trials, budget_minutes)
    if objective not in OBJECTIVES:
        raise SlimkitError(f"--objective {objective} is not one of {', '.join(OBJECTIVES)}", "e.g. --objective latency")
    if data is None:
        raise SlimkitError("search needs --data: trials are calibrated and ranked on it", "give --data")
    if isinstance(runtimes, str):
        runtimes = [r.strip() for r in runtimes.split(",") if r.strip()]
    formats = runtime_formats(runtimes)
    folder = Path(output)
    _check_folder(folder, resume=resume, inputs=[Path(model)] if isinstance(model, str | Path) else [])
    optuna = import_optuna()
    runner = make_executor(executor, address=address, workers=workers, threads=settings.threads)  # before any work
    try:
        _make_folder(folder)
    except BaseException:
        runner.close()
        raise
    timings: dict[str, float] = {}
    try:
        from slimkit.formats import load

        tick = time.perf_counter()
        original = model if isinstance(model, WorkingModel) else load(model, shapes=settings.shapes, data=data,
                                                                      **load_kwargs)
        from slimkit.models.limits import resolve_seq_len

        settings = settings.with_seq_len(resolve_seq_len(original, settings.seq_len, say, []))
        splits = split_data(original, data, eval_data, settings)
        say(f"data: {splits.record['fit']} samples to calibrate and train on, {splits.record['validation']} to "
            f"rank trials, final figures on {splits.record['evaluation']}")
        spec = WorldSpec(original, splits.fit, splits.validation, settings, rule, value, load_kwargs)
        world = build_world(spec)
        runner.start(world, _portable(spec, model, original, executor))
        space = build_space(original.kind, formats)
        expected = {
            "store_version": STORE_VERSION,
            "fingerprint": fingerprint(original.files(), data),
            "floor": world.floor.as_dict(), "objective": objective,
            "runtimes": list(space.formats),
            "settings": {"threads": settings.threads, "batch_size": settings.batch_size, "seq_len": settings.seq_len},
        }
        timings["setup_s"] = time.perf_counter() - tick
        storage = open_store(folder, create=not resume)
        sampler, pruner = _sampler(optuna, objective, seed), _pruner(optuna, objective, world)
        directions = ["minimize"] * (2 if objective == "both" else 1)
        if resume:
            study = _load_study(optuna, storage, sampler, pruner, folder)
            check_compatible(study.user_attrs, expected, folder)
            recovered = _recover_interrupted(study, optuna, storage)
            if recovered:
                say(f"resume: {recovered} interrupted trial(s) recorded and queued again")
        else:
            study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=directions,
                                        sampler=sampler, pruner=pruner)
            for key, attr in {**expected, "model": str(original.source), "model_kind": str(original.kind),
                              "split": splits.record, "seed": seed, "created": time.time(),
                              "original_metric": world.original_metric}.items():
                study.set_user_attr(key, attr)
            for params in cheap_first(space):
                study.enqueue_trial(params)
        study.set_user_attr("budget", {"trials": budget_trials, "minutes": budget_minutes})
        save_baseline(folder, world)
        loop = _Loop(study, optuna, space, world, runner, folder, objective, budget_trials, budget_minutes, say,
                     seed, executor, splits, started)
        loop.run()
        timings.update(loop.timings)
        final = final_measurement(folder, world, study, objective, splits, say)
        timings["final_s"] = final.pop("_seconds", 0.0)
        study.set_user_attr("final", final)
    finally:
        runner.close()
    from slimkit.searching.report import build_search_report, write_search_report

    wall = time.perf_counter() - started
    study.set_user_attr("timings", {**timings, "wall_s": wall, "executor": executor})
    report = build_search_report(study, folder)
    write_search_report(folder, report)
    records = report["trials"]
    rec = report.get("recommendation") or {}
    chosen = next((r for r in records if r["number"] == rec.get("trial")), None)
    return SearchResult(folder, report, chosen, bool(rec.get("meets_floor")), records)


def _portable(spec: WorldSpec, given: Any, original: WorkingModel, executor: str) -> WorldSpec:
    """The world as a worker in another process or on another node rebuilds it: the model as the user named it
    (a path, or a package.module:factory reference with its load options), never a live object."""
    if executor == "local":
        return spec
    if isinstance(given, str | Path):
        path = Path(given)
        return replace(spec, model=str(path.resolve()) if path.exists() else str(given))
    source = Path(str(original.source or ""))
    if not original.source or not source.exists():
        raise SlimkitError("--executor ray loads the model from its file in each worker, and this model has none",
                           "save it first (slimkit convert MODEL --to onnx) and search that file")
    return replace(spec, model=str(source.resolve()))


def _floor_option(max_drop: float | None, min_cosine: float | None) -> tuple[str, float]:
    if (max_drop is None) == (min_cosine is None):
        raise SlimkitError("search needs exactly one floor: --max-drop X (accuracy) or --min-cosine C",
                           "e.g. --max-drop 0.005 keeps accuracy within half a point")
    if max_drop is not None:
        if not 0 <= max_drop < 1:
            raise SlimkitError(f"--max-drop {max_drop} is not a fraction in [0, 1)", "e.g. 0.005 = half a point")
        return "max_drop", float(max_drop)
    if not 0 < min_cosine <= 1:
        raise SlimkitError(f"--min-cosine {min_cosine} is not in (0, 1]", "e.g. --min-cosine 0.99")
    return "min_cosine", float(min_cosine)


def _budget(trials: int | None, minutes: float | None) -> tuple[int | None, float | None]:
    if trials is not None and (not isinstance(trials, int) or trials < 1):
        raise SlimkitError(f"--budget-trials {trials} runs no trial", "give 1 or more (30 is a good start)")
    if minutes is not None and not minutes > 0:
        raise SlimkitError(f"--budget-minutes {minutes} leaves no time for a trial", "give a positive number")
    if trials is None and minutes is None:
        trials = DEFAULT_TRIALS
    return trials, minutes


def _check_folder(folder: Path, *, resume: bool, inputs: list[Path]) -> None:
    """A new search never writes over files it did not make, nor into the model's own folder."""
    from slimkit.artifacts import check_not_input

    check_not_input(folder, [p for p in inputs if len(str(p)) < 4096 and p.exists()])
    if folder.exists() and not folder.is_dir():
        raise SlimkitError(f"-o {folder} is a file", "give a folder for the search")
    if not resume and folder.exists() and any(folder.iterdir()):
        if store_path(folder).exists():
            raise SlimkitError(f"{folder} already holds a search", "add --resume to continue it, or give a new -o")
        raise SlimkitError(f"{folder} is not empty", "give a new or empty folder for the search (nothing was changed)")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".slimkit-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SlimkitError(f"cannot write to {folder}: {exc.strerror or exc}",
                           "give an -o folder you can write to") from None


def _sampler(optuna, objective: str, seed: int):
    """Multivariate TPE (multi-objective when latency and size are both minimized); the floor is a constraint
    each trial sets (`Trial.set_constraint`), so TPE learns where the feasible region is."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True, group=True)


def _pruner(optuna, objective: str, world: World):
    """A candidate whose validation metric after its training stages is below the floor stops there."""
    if objective == "both":  # Optuna's pruners take one objective; the same rule is applied in the trial
        return optuna.pruners.NopPruner()
    return optuna.pruners.ThresholdPruner(lower=world.floor.threshold)


def _load_study(optuna, storage, sampler, pruner, folder: Path):
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        raise SlimkitError(f"the store in {folder} holds no slimkit search", "start a new search in another -o") from None


def _recover_interrupted(study, optuna, storage) -> int:
    """Trials left RUNNING by a killed search: one whose record was already written is finished from it; the
    others are recorded as failed ('interrupted') and their candidate queued again."""
    count = 0
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        record = frozen.user_attrs.get(RECORD) or {}
        values = frozen.user_attrs.get("values")
        if record.get("state") == "complete" and values:
            study.tell(frozen.number, values)
            continue
        record = {**record, "number": frozen.number, "state": "interrupted",
                  "error": "interrupted: the search stopped while this trial ran; it was queued again"}
        storage.set_trial_user_attr(frozen._trial_id, RECORD, record)
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
        if frozen.params:
            study.enqueue_trial(dict(frozen.params), skip_if_exists=False)
        count += 1
    return count


class _Loop:
    """Asks, runs and records trials until the budget is spent."""

    MAX_SKIPS = 200  # consecutive impossible combinations before the sampler is taken to be stuck

    def __init__(self, study, optuna, space: Space, world: World, runner, folder: Path, objective: str,
                 budget_trials: int | None, budget_minutes: float | None, say, seed: int, executor: str,
                 splits, started: float) -> None:
        self.study, self.optuna, self.space, self.world = study, optuna, space, world
        self.runner, self.folder, self.objective, self.say, self.seed = runner, folder, objective, say, seed
        self.budget_trials, self.budget_minutes = budget_trials, budget_minutes
        self.executor, self.splits = executor, splits
        self.started = time.perf_counter()
        spent = sum(r.get("duration_s") or 0.0 for r in all_records(study) if r.get("counted"))
        self.deadline = None if budget_minutes is None else self.started + budget_minutes * 60 - spent
        self.training_allowed = True
        self.best_number: int | None = None
        self.timings = {"trials_s": 0.0, "sampler_s": 0.0, "store_s": 0.0, "best_s": 0.0}
        self.in_flight: dict[int, tuple[Any, TrialSpec, float]] = {}

    def counted(self) -> int:
        return sum(1 for r in all_records(self.study) if r.get("counted"))

    def budget_left(self) -> bool:
        if self.budget_trials is not None and self.counted() + len(self.in_flight) >= self.budget_trials:
            return False
        return self.deadline is None or time.perf_counter() < self.deadline

    def run(self) -> None:
        skips = 0
        while True:
            while self.budget_left() and self.runner.has_capacity() and skips < self.MAX_SKIPS:
                tick = time.perf_counter()
                trial = self.study.ask()
                chain, values = suggest_chain(trial, self.space)
                spec, why = self._spec(trial, chain, values)
                self.timings["sampler_s"] += time.perf_counter() - tick
                if spec is None:
                    self._skip(trial, why, chain)
                    skips += 1
                    continue
                skips = 0
                twin = self._twin(trial)
                if twin is not None:  # the sampler proposed a candidate already measured: reuse its figures
                    self._copy(trial, twin)
                    continue
                self.say(f"trial {trial.number}: {spec.label}")
                self.in_flight[trial.number] = (trial, spec, time.perf_counter())
                self.runner.submit(spec, self._stop_rule(trial), self.folder / "trials" / f"{trial.number:04d}")
            if not self.in_flight:
                return
            for number, result in self.runner.wait():
                trial, spec, submitted = self.in_flight.pop(number)
                self._finish(trial, spec, result, time.perf_counter() - submitted)

    def _spec(self, trial, chain: Chain | None, values: dict) -> tuple[TrialSpec | None, str]:
        if chain is None:
            return None, "this combination of stages does not plan on the model"
        if chain.trains and not self._can_afford_training():
            return None, "not enough budget left for a training candidate"
        from slimkit.formats import format_named

        fmt = format_named(chain.format)
        steps = chain_steps(chain, values)
        label = trial_label(chain, values, fmt.runtime)
        check_after = 0
        if chain.trains:  # the floor is checked once the training stages (on the PyTorch model) are done
            trained = [i for i, (name, _c) in enumerate(steps) if name in {n for _s, n in chain.stages}
                       and _trains(name)]
            check_after = max(trained) + 1
        return TrialSpec(trial.number, label, chain.key, fmt.runtime, steps, check_after), ""

    def _can_afford_training(self) -> bool:
        if not self.training_allowed:
            return False
        if self.deadline is None:
            return True
        records = explain.measured(all_records(self.study))
        trained = [r["duration_s"] for r in records if r.get("trains")]
        cheap = [r["duration_s"] for r in records if not r.get("trains")]
        estimate = _median(trained) if trained else (5 * _median(cheap) if cheap else 60.0)
        if time.perf_counter() + estimate > self.deadline:
            self.training_allowed = False
            # From now on the sampler proposes no structure stage at all (the training stages need it).
            self.study.sampler = self.optuna.samplers.PartialFixedSampler({"stage.structure": NONE}, self.study.sampler)
            return False
        return True

    def _stop_rule(self, trial):
        floor = self.world.floor
        if self.executor != "local" or self.objective == "both":
            return lambda step, value: not floor.met(value)

        def stop(step: int, value: float) -> bool:  # Optuna's pruner decides (ThresholdPruner at the floor)
            trial.report(value, step)
            return trial.should_prune() or not floor.met(value)

        return stop

    def _twin(self, trial) -> dict | None:
        """A finished trial with exactly these parameters (TPE may propose one again), or None."""
        params = dict(trial.params)
        for record in all_records(self.study):
            if record.get("counted") and record.get("params") == params and record["number"] != trial.number:
                return record
        in_flight = [t for t, _s, _w in self.in_flight.values() if dict(t.params) == params]
        return {"number": in_flight[0].number, "state": "running"} if in_flight else None

    def _copy(self, trial, twin: dict) -> None:
        """Tell the sampler the twin's result again (not counted against the budget, nothing re-run)."""
        tick = time.perf_counter()
        record = {"number": trial.number, "state": "skipped", "counted": False, "params": dict(trial.params),
                  "pruned_reason": f"same candidate as trial {twin['number']}"}
        trial.set_user_attr(RECORD, record)
        frozen = self.study.get_trials(deepcopy=False)[twin["number"]] if twin.get("state") != "running" else None
        if frozen is not None and frozen.values and twin.get("state") in ("complete", "failed"):
            for key, value in frozen.constraints.items():
                trial.set_constraint(key, value)
            self.study.tell(trial, list(frozen.values))
        else:
            self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
        self.timings["store_s"] += time.perf_counter() - tick

    def _skip(self, trial, why: str, chain: Chain | None) -> None:
        tick = time.perf_counter()
        record = {"number": trial.number, "state": "skipped", "pruned_reason": why, "counted": False,
                  "chain": chain.key if chain else None, "params": dict(trial.params)}
        trial.set_user_attr(RECORD, record)
        self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
        self.timings["store_s"] += time.perf_counter() - tick

    def _finish(self, trial, spec: TrialSpec, result: TrialResult, wall: float) -> None:
        self.timings["trials_s"] += result.duration_s
        tick = time.perf_counter()
        artifact = None
        trial_dir = self.folder / "trials" / f"{trial.number:04d}"
        if result.files:  # from a Ray task: written here, whole, then renamed
            stage = trial_dir.parent / f".{trial_dir.name}.tmp"
            shutil.rmtree(stage, ignore_errors=True)
            for rel, blob in result.files.items():
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).write_bytes(blob)
            shutil.rmtree(trial_dir, ignore_errors=True)
            stage.rename(trial_dir)
        if result.artifact_name and trial_dir.is_dir():
            artifact = str((trial_dir / result.artifact_name).relative_to(self.folder))
        chain = next(c for c in self.space.chains if c.key == spec.chain)
        record = {
            "number": trial.number, "state": result.state, "label": spec.label, "chain": spec.chain,
            "runtime": spec.runtime, "format": chain.format, "trains": chain.trains,
            "passes": [{"pass": n, **cfg} for n, cfg in spec.steps], "params": dict(trial.params),
            "artifact": artifact, "duration_s": result.duration_s, "task_wall_s": wall,
            "error": result.error, "pruned_reason": result.pruned_reason, "validation": result.validation,
            "intermediate": result.intermediate, "sensitivity": result.sensitivity, "counted": True,
            "pass_records": _compact(result.passes), "measurements": result.measurements,
        }
        values = None
        if result.state == "failed":
            # Told as a very bad, infeasible result rather than Optuna's FAIL, which its samplers ignore: TPE
            # must learn to stay away from a combination that cannot run on this model.
            values = [BIG] * (2 if self.objective == "both" else 1)
            trial.set_constraint("floor", 1.0)
        if result.state == "complete" and result.validation:
            values = [v if math.isfinite(v) else BIG for v in explain.objective_values(result.validation, self.objective)]
            metric = result.validation.get("metric")
            trial.set_constraint("floor", self.world.floor.threshold - metric if metric is not None else 1.0)
            trial.set_user_attr("values", values)
        for step, value in result.intermediate:
            if self.objective != "both" and math.isfinite(value) and self.executor != "local":
                trial.report(value, step)
        trial.set_user_attr(RECORD, to_jsonable(record))
        state = {"complete": None, "pruned": self.optuna.trial.TrialState.PRUNED}.get(
            result.state, self.optuna.trial.TrialState.FAIL)
        if values is not None:
            self.study.tell(trial, values)
        else:
            self.study.tell(trial, state=state)
        self.timings["store_s"] += time.perf_counter() - tick
        shown = result.error or result.pruned_reason or _short(result.validation)
        self.say(f"trial {trial.number} {result.state} in {result.duration_s:.1f}s: {shown}")
        tick = time.perf_counter()
        self._update_best()
        self.timings["best_s"] += time.perf_counter() - tick

    def _update_best(self) -> None:
        records = all_records(self.study)
        best, met = explain.best_so_far(records, self.objective)
        if best is None or best["number"] == self.best_number:
            return
        write_best(self.folder, best, met, records, self.world.floor.as_dict())
        self.best_number = best["number"]


def _trains(name: str) -> bool:
    from slimkit.passes.base import get_pass

    return get_pass(name).search_trains


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _short(validation: dict | None) -> str:
    if not validation:
        return ""
    return (f"{validation.get('speedup') or 0:.2f}x speed, {1 / (validation.get('size_ratio') or 1):.2f}x smaller, "
            f"metric {validation.get('metric')}")


def _compact(passes: list[dict]) -> list[dict]:
    """What each pass did, without the bulky per-candidate lists (the full report has them)."""
    out = []
    for record in passes:
        stats = {k: v for k, v in (record.get("stats") or {}).items() if not isinstance(v, list | dict)}
        out.append({"pass": record.get("pass"), "seconds": record.get("seconds"), "stats": stats,
                    "outcome": record.get("outcome")})
    return out


