"""The public Python API. The CLI is a thin layer over these functions; no logic lives only there."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slimkit.artifacts import publish_files, staged_folder, write_artifact
from slimkit.baseline import baseline_label, baseline_recipe, reusable_prefix
from slimkit.dataplan import plan_data
from slimkit.errors import SlimkitError, TargetNotMetError
from slimkit.evaluate.measure import Evaluator, Measurement
from slimkit.formats import bench_runtimes, convert_targets, load
from slimkit.models.base import WorkingModel
from slimkit.passes.base import Context
from slimkit.passes.outcome import Outcome
from slimkit.passes.outcome import targets_missed as _targets_missed
from slimkit.pipeline import Recipe, Target, load_recipe, plan, run_pipeline
from slimkit.scratch import make_scratch
from slimkit.settings import MeasureSettings, TrainSettings


@dataclass
class OptimizeResult:
    """The optimized model, per-pass records and (when measured) the report."""

    model: WorkingModel
    original: WorkingModel
    recipe: Recipe
    steps: list[dict]
    report: dict[str, Any] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)  # what became of each step, as in `steps`

    def targets_missed(self) -> list[str]:
        """'pass: how far off' for each pass that missed its target (its best effort is the model kept)."""
        return _targets_missed((step["pass"], outcome) for step, outcome in zip(self.steps, self.outcomes,
                                                                                   strict=True))

    def require_targets(self) -> None:
        """Raise TargetNotMetError (exit code 3 in the CLI) when a pass missed its target. The result, and the
        artifact and report when they were saved, stay as they are: the best effort is kept."""
        missed = self.targets_missed()
        if missed:
            raise TargetNotMetError(f"target not met ({'; '.join(missed)})",
                                    "the best configuration found was saved")

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write the artifact, its tokenizer, report.json and report.html into `folder` atomically; an earlier
        slimkit output there is replaced only with `overwrite`."""
        from slimkit.report import write_report

        inputs = [p for p in self.original.files()]
        with staged_folder(Path(folder), inputs, overwrite=overwrite) as stage:
            main = write_artifact(self.model, stage)
            if self.report:
                files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
                self.report["artifact"] = {**(self.report.get("artifact") or {}), "files": files}
                write_report(stage, self.report)
        return Path(folder) / main.name


def _resolve_model(model: Any, **load_kwargs) -> WorkingModel:
    """The model as given, or loaded; `data=` supplies input shapes a PyTorch model cannot tell."""
    return model if isinstance(model, WorkingModel) else load(model, **load_kwargs)


def optimize(
    model: Any,
    recipe: str | Path | Recipe = "onnx",
    *,
    data: Any = None,
    eval_data: Any = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    to: str | None = None,
    precision: str | None = None,
    settings: MeasureSettings | None = None,
    training: TrainSettings | None = None,
    min_cosine: float | None = None,
    max_drop: float | None = None,
    measure: bool = True,
    overrides: dict[str, dict] | None = None,
    progress: Callable[[str], None] | None = None,
    **load_kwargs: Any,
) -> OptimizeResult:
    """Run a recipe on a model, measure the result against the original, and optionally save it.

    `settings` says how every model is run and measured (threads, batch size, sequence length, shapes, a sample
    cap; labelled evaluation data is used whole unless capped). `training` says where training passes learn
    (`training.data`; given only one of it and `data`, a training recipe splits it, see `slimkit.dataplan`) and
    checkpoint. Calibration and selection read `data`; the reported figures come from `eval_data` (default
    `data`, flagged `measured-on-seen-data` when a pass saw it). `min_cosine` / `max_drop` set the target of
    accuracy-aware passes (e.g. `int8-auto`). `precision` ('auto', 'f32', 'bf16', 'f16') sets an OpenVINO
    artifact's inference precision. An earlier slimkit output at `output` is replaced only with `overwrite`.
    Other keywords (`example_inputs`, `weights`, `task`) go to `slimkit.load` when `model` is not loaded yet.
    """
    settings = settings or MeasureSettings()
    training = training or TrainSettings()
    train_data, shapes = training.data, settings.shapes
    say = progress or (lambda message: None)
    original = _resolve_model(model, shapes=shapes, data=data if data is not None else train_data, **load_kwargs)
    from slimkit.models.limits import resolve_seq_len

    seq_notes: list[str] = []  # None: 128, or the model's position limit when that is smaller
    seq_len = resolve_seq_len(original, settings.seq_len, say, seq_notes)
    settings = settings.with_seq_len(seq_len)
    recipe_obj = load_recipe(recipe)
    if to is not None:
        from slimkit.pipeline import retarget

        recipe_obj = retarget(recipe_obj, to)
    if precision is not None:
        if not any(name == "to-openvino" for name, _ in recipe_obj.steps):
            raise SlimkitError(f"--precision sets OpenVINO's inference precision, and recipe {recipe_obj.name} "
                               "makes no OpenVINO artifact", "add --to openvino")
        overrides = {**(overrides or {}), "to-openvino": {**(overrides or {}).get("to-openvino", {}),
                                                          "precision": precision}}
    targeted: dict[str, dict] = {}
    if min_cosine is not None or max_drop is not None:
        targeted = target_overrides(recipe_obj, min_cosine, max_drop)
        overrides = {**targeted, **(overrides or {})}
    unused = sorted(set(overrides or {}) - {name for name, _ in recipe_obj.steps})
    if unused:  # e.g. --student with a recipe that does not distill: say so rather than ignore it
        raise SlimkitError(f"options for pass {', '.join(unused)} but recipe {recipe_obj.name} has no such pass",
                           "use a recipe with that pass (e.g. --recipe distill for --student)")
    planned = plan(recipe_obj, original.kind, overrides)  # reject a bad chain before any work
    target = None
    if min_cosine is not None or max_drop is not None:
        if any(step.pass_.relaxed() is not None for step in planned):
            target = Target(max_drop=max_drop, min_cosine=min_cosine)
        elif not targeted:
            raise SlimkitError(f"recipe {recipe_obj.name} has no pass that --min-cosine / --max-drop can steer",
                               "use an accuracy-aware recipe (int8-auto) or one that prunes, clusters or factorizes")
    if original.task is None and (data is not None or train_data is not None):
        from slimkit.dataplan import infer_task

        inferred = infer_task(original, train_data if train_data is not None else data, seq_len=seq_len,
                              shapes=shapes)
        if inferred:
            original.task = inferred
            say(f"task: {inferred} (the data has integer labels)")
    uses = frozenset().union(*(step.pass_.data_use() for step in planned), {"select"} if target else set())
    data_plan = plan_data(original, uses, data=data, train_data=train_data, eval_data=eval_data,
                          seq_len=seq_len, shapes=shapes)
    calibrating = [step.pass_.name for step in planned if "calibrate" in step.pass_.data_use()]
    if calibrating and data_plan.select is None:  # refused before the export or training that would come first
        from slimkit.passes.quantize import MIN_CALIBRATION_SAMPLES

        raise SlimkitError(f"{calibrating[0]} needs calibration data",
                           f"pass --data with at least {MIN_CALIBRATION_SAMPLES} representative samples")
    if measure and data_plan.evaluate is not None:  # bad evaluation data is refused before the passes run
        from slimkit.data_sources import load_data

        load_data(data_plan.evaluate, original, batch_size=1, seq_len=seq_len, shapes=shapes, max_samples=4)
    if output is not None:  # before any work: a refused output should not cost a training run
        from slimkit.artifacts import check_not_input, check_output_folder

        check_not_input(Path(output), original.files())
        check_output_folder(Path(output), overwrite=overwrite)
    # Pass outputs live in a scratch folder kept as long as the resulting model object lives.
    workdir = make_scratch("slimkit-work-")
    if data_plan.split:
        say(f"split {data_plan.split['source']} into {data_plan.split['train']} training and "
            f"{data_plan.split['validation']} validation samples")
    ctx = Context(data=data_plan.select, train_data=data_plan.train, reference=original, settings=settings,
                  workdir=workdir, progress=lambda m: say(f"running pass {m}"),
                  checkpoint_dir=training.checkpoint_dir, resume=training.resume)
    try:
        result = run_pipeline(original, recipe_obj, ctx, overrides, target=target, planned=planned)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    outcome = OptimizeResult(result.model, original, recipe_obj, result.steps, outcomes=result.outcomes)
    weakref.finalize(result.model, shutil.rmtree, str(workdir), True)
    if measure:
        entries = [("original", original)]
        base_label = None
        plain = baseline_recipe(original.kind, result.model.kind, recipe_obj.steps)
        if plain is not None:
            reuse = reusable_prefix(plain, original.kind, result.steps)
            if reuse is not None:  # the recipe made the plain export on its way: that model is the baseline
                base_model = result.models[reuse - 1]
            else:
                say(f"making the plain {plain} export to compare with")
                base_model = run_pipeline(original, load_recipe(plain), replace(
                    ctx, workdir=ctx.scratch("baseline"), checkpoint_dir=None, resume=False)).model
            base_label = baseline_label(plain)
            entries.append((base_label, base_model))
        entries.append((recipe_obj.name, result.model))
        say(f"measuring {len(entries)} models, interleaved")
        evaluator = Evaluator(data_plan.evaluate, reference=original, like=original, settings=settings)
        outcome.measurements = evaluator.measure_all(entries)
        for m in outcome.measurements:
            m.data["seen_by"] = list(data_plan.seen_by)
        outcome.measurements[-1].baseline = base_label
    outcome.report = _build(outcome, settings.threads, data_plan.as_dict())
    outcome.report["notes"].extend(seq_notes)
    if output is not None:
        say("writing artifact")
        outcome.save(output, overwrite=overwrite)
    if not training.keep_checkpoints and training.checkpoint_dir is not None:
        shutil.rmtree(training.checkpoint_dir, ignore_errors=True)
    return outcome


def target_overrides(recipe: Recipe, min_cosine: float | None, max_drop: float | None) -> dict[str, dict]:
    """Route --min-cosine / --max-drop to every pass in the recipe that takes a target (others back off in the
    pipeline, see `pipeline.Target`)."""
    from slimkit.passes.base import get_pass

    overrides: dict[str, dict] = {}
    for name, _cfg in recipe.steps:
        fields = get_pass(name).Config.model_fields
        if "min_cosine" in fields and "max_drop" in fields:
            overrides[name] = {"min_cosine": min_cosine, "max_drop": max_drop}
    return overrides


def targets_missed(report: dict) -> list[str]:
    """'pass: how far off' for each pass of a report (report.json read back) that missed its target."""
    return _targets_missed((str(p.get("pass")), Outcome.from_dict(p.get("outcome")))
                           for p in report.get("passes") or [] if isinstance(p, dict))


def _build(outcome: OptimizeResult, threads: int, data_plan: dict | None = None) -> dict:
    from slimkit.report import build_report

    measured = [m.as_dict() for m in outcome.measurements]
    notes = []
    if data_plan and data_plan.get("split"):
        split = data_plan["split"]
        notes.append(f"{split['source']} was split ({'stratified, ' if split['stratified'] else ''}seed "
                     f"{split['seed']}): {split['train']} samples to train on, {split['validation']} to pick the "
                     "best epoch on; the reported figures come from " + str(data_plan.get("evaluate")))
    return build_report(
        data=data_plan,
        notes=notes,
        command="optimize",
        input_model={"model": outcome.original.source, "kind": str(outcome.original.kind),
                     "size_bytes": outcome.original.size_bytes()},
        measurements=measured,
        reference_label="original" if measured else None,
        recipe=outcome.recipe.as_dict(),
        passes=outcome.steps,
        artifact={"kind": str(outcome.model.kind), "size_bytes": outcome.model.size_bytes()},
        threads=threads,
    )


def convert(
    model: Any,
    to: str,
    output: str | Path,
    *,
    data: Any = None,
    settings: MeasureSettings | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    **load_kwargs: Any,
) -> tuple[Path, OptimizeResult]:
    """Convert to one format (onnx, fp16, openvino, tflite), check fidelity, write the file atomically, with
    its report beside it (`model.report.json` / `.html` for `out/model.onnx`).

    `output` is a file path (`out/model.onnx`) or a folder (the canonical file name is used inside). An
    existing file there is replaced only with `overwrite`. Fidelity is checked on at most 64 samples unless
    `settings.max_samples` says otherwise.
    """
    settings = settings or MeasureSettings(max_samples=64)
    targets = convert_targets()
    if to not in targets:
        raise SlimkitError(f"unknown target format '{to}'", f"choose one of: {', '.join(targets)}")
    recipe_name, fmt = targets[to]
    original = _resolve_model(model, shapes=settings.shapes, **load_kwargs)
    output = Path(output)
    suffix = fmt.suffixes[0]
    target = output if output.suffix else output / ("model" + suffix)
    if target.suffix != suffix:
        raise SlimkitError(f"output {output} does not end in {suffix}, the {to} format's file type",
                           f"name it like out/model{suffix}")
    from slimkit.artifacts import check_not_input, check_output_file, output_warnings

    check_not_input(target, original.files())
    check_output_file(target, overwrite=overwrite)
    if settings.max_samples is None:
        settings = replace(settings, max_samples=64)
    result = optimize(original, recipe_name, data=data, settings=settings, progress=progress)
    from slimkit.report import write_report

    result.report["command"] = "convert"
    result.report["notes"] = output_warnings(target, original.files()) + list(result.report.get("notes") or [])
    with tempfile.TemporaryDirectory(prefix=".slimkit-", dir=_existing_parent(target)) as stage:
        write_artifact(result.model, Path(stage), filename=target.name)
        result.report["artifact"] = {**(result.report.get("artifact") or {}), "path": str(target)}
        write_report(Path(stage), result.report, stem=f"{target.stem}.report")
        publish_files(Path(stage), target)
    return target, result


def _existing_parent(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path.parent)


def bench(
    models: Sequence[Any],
    *,
    reference: Any = None,
    data: Any = None,
    settings: MeasureSettings | None = None,
    labels: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    runtimes: Sequence[str] | None = None,
    reference_label: str = "reference",
) -> list[Measurement]:
    """Measure one or more models on the same data, latency interleaved round by round; the reference (if any)
    comes first. Labelled data is evaluated whole unless `settings.max_samples` caps it.

    `runtimes` ('onnxruntime', 'openvino'): measure each ONNX model on each of them, as "<label> [<runtime>]";
    OpenVINO reads the ONNX file itself and runs it at the CPU's fastest native precision (`slimkit.hardware`).
    """
    settings = settings or MeasureSettings()
    shapes = settings.shapes
    known_runtimes = bench_runtimes()  # ONNX Runtime, and each format whose runtime reads ONNX files (OpenVINO)
    if runtimes is not None:
        names = runtimes.split(",") if isinstance(runtimes, str) else runtimes  # "onnxruntime,openvino" too
        runtimes = list(dict.fromkeys(str(r).strip() for r in names))
        unknown = [r for r in runtimes if r not in known_runtimes]
        if unknown or not runtimes:
            raise SlimkitError(f"--runtime {','.join(unknown) or '(none)'} is not a runtime slimkit can bench on",
                               f"give one or more of {', '.join(known_runtimes)}, separated by commas")
        if "openvino" in runtimes:
            from slimkit.hardware import import_openvino

            import_openvino()  # the openvino extra missing: its install line, before any work
    loaded = [_resolve_model(m, shapes=shapes, data=data) for m in models]
    if runtimes is not None:
        from slimkit.models.base import ModelKind

        others = [labels[i] if labels else (m.source or f"model {i + 1}")
                  for i, m in enumerate(loaded) if m.kind != ModelKind.ONNX]
        if others:
            raise SlimkitError(f"--runtime measures ONNX models only, and not {', '.join(map(str, others))}",
                               "convert it first (slimkit convert MODEL --to onnx), or leave out --runtime")
    ref = _resolve_model(reference, shapes=shapes, data=data) if reference is not None else None
    from slimkit.models.limits import resolve_seq_len

    # None: 128, or the models' limit if smaller
    settings = settings.with_seq_len(resolve_seq_len([*loaded, ref], settings.seq_len, progress))
    evaluator = Evaluator(data, reference=ref, like=ref or loaded[0], settings=settings)
    say = progress or (lambda message: None)
    entries = [(reference_label, ref)] if ref is not None else []
    for i, model in enumerate(loaded):
        label = labels[i] if labels else (model.source or f"model {i + 1}")
        if runtimes is None:
            entries.append((label, model))
            continue
        for runtime in runtimes:  # OpenVINO reads the ONNX file directly (a proto-only model is written out first)
            entries.append((f"{label} [{runtime}]", known_runtimes[runtime](model)))
    say(f"measuring {len(entries)} models, interleaved")
    return evaluator.measure_all(entries)
