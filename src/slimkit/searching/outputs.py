"""What a search writes besides its store: `DIR/best/` after every new best, `DIR/baseline/`, and the final
re-measurement of the finalists on held-out data."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from slimkit.searching import explain
from slimkit.searching.store import all_records
from slimkit.searching.world import World


def write_best(folder: Path, best: dict, met: bool, records: list[dict], floor: dict) -> None:
    """DIR/best/: the best trial's artifact and its report, replaced whole (staged, then renamed)."""
    import json

    from slimkit.report import build_report, write_report

    source = folder / "trials" / f"{best['number']:04d}"
    target = folder / "best"
    stage = folder / ".best.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    if source.is_dir():
        shutil.copytree(source, stage)
    else:
        stage.mkdir()
    notes = [f"Search trial {best['number']}: {best['label']}"]
    if not met:
        v = best.get("validation") or {}
        notes.append(f"No trial met the floor ({floor.get('text')}) yet: this one came closest, "
                     f"{floor.get('metric')} {v.get('metric')} vs {floor.get('threshold')} needed.")
    report = build_report(command="search", input_model={"model": best.get("label")},
                          measurements=best.get("measurements") or [], reference_label="baseline",
                          recipe={"name": best.get("chain"), "passes": best.get("passes")},
                          passes=best.get("pass_records"), notes=notes,
                          artifact={"path": best.get("artifact")})
    write_report(stage, report)
    (stage / "trial.json").write_text(json.dumps({**best, "meets_floor": met}, indent=2, default=str) + "\n")
    old = folder / ".best.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    stage.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def save_baseline(folder: Path, world: World) -> None:
    """The plain ONNX export every speed and size is judged against, kept for the report's histograms."""
    from slimkit.artifacts import write_artifact

    target = folder / "baseline"
    if not target.exists():
        stage = folder / ".baseline.tmp"
        shutil.rmtree(stage, ignore_errors=True)
        write_artifact(world.baseline, stage)
        stage.rename(target)


def final_measurement(folder: Path, world: World, study, objective: str, splits, say) -> dict:
    """The finalists, the baseline and the original measured together on the held-out data, interleaved."""
    from slimkit.evaluate.measure import Evaluator
    from slimkit.formats import load
    from slimkit.searching.trial import summarize
    from slimkit.searching.world import metric_of

    tick = time.perf_counter()
    records = all_records(study)
    finalists = [r for r in explain.ranked_finalists(records, objective) if r.get("artifact")]
    if not finalists:
        best, _met = explain.best_so_far(records, objective)
        finalists = [best] if best is not None and best.get("artifact") else []
    if not finalists:
        return {"entries": [], "_seconds": time.perf_counter() - tick}
    say(f"re-measuring {len(finalists)} finalists on {splits.record['evaluation']}, interleaved")
    evaluator = Evaluator(splits.evaluation, reference=world.original, like=world.original, settings=world.settings)
    original = evaluator.measure(world.original, label="original", latency=False)
    original_metric = metric_of(original, world.floor)
    threshold = world.floor.threshold
    if world.floor.rule == "max_drop" and original_metric is not None:
        threshold = original_metric - world.floor.value
    entries = [("baseline", world.baseline)] + [(r["label"], load(folder / r["artifact"])) for r in finalists]
    measured = evaluator.measure_all(entries)
    base = measured[0].as_dict()
    eval_world = replace(world, floor=replace(world.floor, threshold=threshold))
    out = []
    for record, m in zip(finalists, measured[1:], strict=True):
        entry = summarize(m.as_dict(), base, eval_world)
        out.append({"trial": record["number"], "label": record["label"], **entry})
    return {"data": splits.record["evaluation"], "samples": evaluator.dataset.num_samples, "interleaved": True,
            "original_metric": original_metric, "threshold": threshold, "baseline": summarize(base, base, eval_world),
            "entries": out, "_seconds": time.perf_counter() - tick}
