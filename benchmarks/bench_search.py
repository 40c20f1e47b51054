"""Does the search beat every single built-in recipe that meets the same floor?

For the digits CNN (accuracy drop <= 0.5 points) and all-MiniLM-L6-v2 (mean cosine >= 0.99):
1. `slimkit.search` with a budget (30 trials; MiniLM also a minutes cap), ranking on the validation part of
   the search data;
2. every built-in recipe (ONNX Runtime, OpenVINO + NNCF, TFLite) run on the same calibration data;
3. the search's pick, every recipe's artifact and the ONNX fp32 baseline measured together on evaluation
   data no trial or recipe saw, latency interleaved round by round (median of rounds and its IQR).
Prints every number; RESULTS.md quotes them.

    .venv/bin/python benchmarks/bench_search.py [--only cnn|minilm] [--trials 30] [--minutes 25] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from machine import print_machine  # noqa: E402

import slimkit  # noqa: E402
from slimkit.demo_models import minilm_path, sentences, trained_digits_model  # noqa: E402
from slimkit.evaluate.measure import Evaluator  # noqa: E402
from slimkit.formats import load, make_runner  # noqa: E402
from slimkit.pipeline import builtin_recipes  # noqa: E402
from slimkit.searching.world import Floor, metric_of  # noqa: E402
from slimkit.settings import MeasureSettings  # noqa: E402

# Recipes that cannot run on a model, with the reason printed beside them.
SKIP = {
    "minilm": {"deep-compression": "60 epochs of gradual pruning on a 22M-parameter transformer: hours on 2 cores",
               "prune-50": "magnitude pruning with fine-tuning of all 22M weights: too slow on 2 cores for this run",
               "distill": "self-distillation of the full transformer: too slow on 2 cores for this run",
               "prune-channels-30": "conv-channel pruning: MiniLM has no conv layers (prune-heads-25 covers it)"},
    "cnn": {"prune-heads-25": "attention-head pruning: the CNN has no attention"},
}


def setups(root: Path, only: str | None) -> list[dict]:
    out = []
    if only in (None, "cnn"):
        module = trained_digits_model("cnn", root / "cache")
        out.append({"name": "cnn", "model": load(module, data="sklearn:digits:train"),
                    "data": "sklearn:digits:train", "eval": "sklearn:digits:test", "floor": {"max_drop": 0.005}})
    if only in (None, "minilm") and minilm_path() is not None:
        calib, evaluation = root / "calib.txt", root / "eval.txt"
        calib.write_text("\n".join(sentences("calib")) + "\n")
        evaluation.write_text("\n".join(sentences("eval")[:400]) + "\n")
        out.append({"name": "minilm", "model": load(str(minilm_path())), "data": str(calib),
                    "eval": str(evaluation), "floor": {"min_cosine": 0.99}})
    return out


def run(setup: dict, out: Path, trials: int, minutes: float | None, reuse: bool = False) -> None:
    settings = MeasureSettings(threads=2)
    folder = out / f"search-{setup['name']}"
    if reuse and (folder / "report.json").is_file():  # the search already ran: only the recipe table again
        import json

        report = json.loads((folder / "report.json").read_text())
        rec = report.get("recommendation") or {}
        pick = next((t for t in report["trials"] if t["number"] == rec.get("trial")), None)
        print(f"\n== {setup['name']}: reusing the search in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        result = slimkit.search(setup["model"], data=setup["data"], eval_data=setup["eval"], output=folder,
                                budget_trials=trials, budget_minutes=minutes, settings=settings, progress=print,
                                **setup["floor"])
        wall = time.perf_counter() - started
        report = result.report
        pick = result.recommended
        print(f"\n== {setup['name']}: search took {wall:.0f}s, {len(report['trials'])} trials")
    print(report["summary"])
    overhead = report.get("overhead") or {}
    print(f"overhead: everything but trials {(overhead.get('fraction') or 0) * 100:.1f}% of wall "
          f"(setup {overhead.get('setup_s') or 0:.0f}s, final re-measure {overhead.get('final_s') or 0:.0f}s); "
          f"sampler+store+best/ {(overhead.get('machinery_fraction') or 0) * 100:.2f}%")
    models = []
    if pick is not None and pick.get("artifact"):
        models.append((f"search pick: {pick['label']}", load(folder / pick["artifact"])))
    skips = SKIP.get(setup["name"], {})
    recipe_times = {}
    for name in sorted(builtin_recipes()):
        if name in skips:
            print(f"recipe {name}: skipped ({skips[name]})")
            continue
        tick = time.perf_counter()
        try:
            kwargs = dict(setup["floor"]) if name.endswith("-auto") else {}
            done = slimkit.optimize(setup["model"], name, data=setup["data"], settings=settings, measure=False,
                                    **kwargs)
        except slimkit.SlimkitError as exc:
            print(f"recipe {name}: failed ({exc})")
            continue
        recipe_times[name] = time.perf_counter() - tick
        models.append((f"recipe {name}", done.model))
        print(f"recipe {name}: built in {recipe_times[name]:.0f}s")
    baseline = slimkit.optimize(setup["model"], "onnx", settings=settings, measure=False).model
    evaluator = Evaluator(setup["eval"], reference=setup["model"], like=setup["model"], settings=settings,
                          latency_rounds=15)
    original = evaluator.measure(setup["model"], label="original", latency=False)
    rule, value = next(iter(setup["floor"].items()))
    if rule == "max_drop":
        acc = original.metrics["accuracy"]
        floor = Floor("accuracy", rule, value, acc - value)
    else:
        floor = Floor("cosine", rule, value, value)
    print(f"\nfinal table on {setup['eval']} (never seen by a trial or a recipe); floor: {floor.text()} "
          f"(threshold {floor.threshold:.4f} on this data)")
    runnable = []
    feed = evaluator.dataset.batches[0].feed
    for label, model in models:  # e.g. a TFLite export fixed at another sequence length (issue 15)
        try:
            make_runner(model, settings.threads).run(feed)
        except slimkit.SlimkitError as exc:
            print(f"{label}: cannot run at the measured shape, left out of the table ({exc.problem[:160]})")
            continue
        runnable.append((label, model))
    measured = evaluator.measure_all([("ONNX fp32 baseline", baseline), *runnable])
    base = measured[0].as_dict()["latency_ms"]
    rows = []
    for m in measured:
        d = m.as_dict()
        lat = d["latency_ms"]
        metric = metric_of(d, floor)
        rows.append((d["label"], lat["p50"], lat["p50_spread"], base["p50"] / lat["p50"], d["size_bytes"], metric,
                     floor.met(metric)))
    print(f"{'model':78} {'p50 ms':>8} {'IQR':>15} {'speedup':>8} {'size':>10} {'metric':>8} floor")
    for label, p50, iqr, speed, size, metric, ok in rows:
        print(f"{label[:78]:78} {p50:8.3f} {iqr[0]:7.3f}-{iqr[1]:<7.3f} {speed:7.2f}x {size:10d} "
              f"{(metric if metric is not None else float('nan')):8.4f} {'yes' if ok else 'NO'}")
    pick_row = next((r for r in rows if r[0].startswith("search pick")), None)
    meeting = [r for r in rows if r[0].startswith("recipe") and r[6]]
    if pick_row and meeting:
        fastest = min(meeting, key=lambda r: r[1])
        print(f"\nsearch pick p50 {pick_row[1]:.3f} ms vs fastest recipe meeting the floor ({fastest[0]}) "
              f"{fastest[1]:.3f} ms: pick/recipe = {pick_row[1] / fastest[1]:.3f}; pick meets floor here: {pick_row[6]}")
        slower = [r for r in meeting if r[1] < pick_row[1]]
        print(f"recipes meeting the floor that are faster than the pick: {len(slower)} "
              + (", ".join(f"{r[0]} ({pick_row[1] / r[1]:.3f}x)" for r in slower)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["cnn", "minilm"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--reuse", action="store_true", help="keep the search already in --out; redo the table")
    args = parser.parse_args()
    print_machine()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-search-"))
    out.mkdir(parents=True, exist_ok=True)
    for setup in setups(out, args.only):
        run(setup, out, args.trials, args.minutes, args.reuse)


if __name__ == "__main__":
    main()
