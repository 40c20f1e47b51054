"""Mutation fuzzing of foreign ONNX models against `slimkit inspect`, `bench` and `optimize` (issue 13).

    .venv/bin/python benchmarks/fuzz_models.py --fetch                  # download the three models (PyPI)
    .venv/bin/python benchmarks/fuzz_models.py --mutants 1000            # 1,000 mutants of each, all commands
    .venv/bin/python benchmarks/fuzz_models.py --mutants 50 --models silero-vad --timeout 30
    .venv/bin/python benchmarks/fuzz_models.py --reproduce silero-vad 123 # write that mutant, print its commands
    .venv/bin/python benchmarks/fuzz_models.py --summarize benchmarks/out/fuzz/runs.jsonl

Every run goes to OUT/runs.jsonl as it ends (so an interrupted run keeps what it did); at the end the summary
table per model x command x outcome is printed and OUT/fuzz-results.json lists every run that was not ok or a
clean error, with its reproducer. Exit 1 when any run was a traceback, a signal or a hang.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modelfuzz.models import DEFAULT_CACHE, MODELS, FetchError, ForeignModel, fetch_all, model_path  # noqa: E402
from modelfuzz.mutate import KINDS, kind_for, mutant_name, mutate  # noqa: E402
from modelfuzz.runner import (  # noqa: E402
    COMMANDS,
    Run,
    argv_for,
    bad_cases,
    kinds_markdown,
    preload,
    run_all,
    summary_markdown,
    write_json,
)

BAD = ("traceback", "other-exit", "signal", "hang")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fetch", action="store_true", help="download the models into the cache and stop")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"model cache (default {DEFAULT_CACHE})")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--file", type=Path, help="fuzz this local ONNX file instead (named after its stem)")
    p.add_argument("--run-args", default="", help="with --file: extra options for bench and optimize, e.g. "
                   "'--shape x=1x3x32x32'")
    p.add_argument("--mutants", type=int, default=50,
                   help="seeds per model (default 50): one mutant each, or only those of --kinds")
    p.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="comma-separated mutation kinds: only the seeds of these kinds run (default: all)")
    p.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, from inspect, bench, optimize")
    p.add_argument("--workers", type=int, default=2, help="children at a time (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a run counts as a hang (default 60)")
    p.add_argument("--deadline-minutes", type=float, default=None,
                   help="start no new mutant after this long; the summary says how many finished")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "fuzz")
    p.add_argument("--reproduce", nargs=2, metavar=("MODEL", "SEED"),
                   help="write the mutant MODEL/SEED into --out and print the commands that were run on it")
    p.add_argument("--rerun", type=Path, metavar="FUZZ_RESULTS_JSON",
                   help="run again, with the code as it is now, every run an earlier fuzz-results.json lists as "
                   "not clean (after a fix: do they now end cleanly?)")
    p.add_argument("--summarize", type=Path, help="print the tables of an earlier runs.jsonl and stop")
    return p.parse_args(argv)


def mutant_jobs(models: dict[str, Path], seeds: list[int], commands: list[str], workdir: Path,
                deadline: float | None, started: list[int]) -> Iterator[tuple[Run, Path]]:
    """(Run, run folder) for each seed, model and command, models interleaved seed by seed; mutant files are
    written just before their runs and removed by `forget` once their last run ends."""
    originals = {name: path.read_bytes() for name, path in models.items()}
    for seed in seeds:
        if deadline is not None and time.monotonic() > deadline:
            return
        kind = kind_for(seed)
        for name in models:
            spec = MODELS[name]
            mutant = workdir / "mutants" / f"{mutant_name(name, seed, kind)}.onnx"
            mutant.parent.mkdir(parents=True, exist_ok=True)
            mutant.write_bytes(mutate(originals[name], kind, seed))
            started[0] += 1
            for command in commands:
                folder = workdir / "runs" / f"{mutant_name(name, seed, kind)}-{command}"
                argv = argv_for(command, mutant, folder / "out", spec.run_args)
                yield Run(name, seed, kind, command, argv), folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        runs = [Run(**json.loads(line)) for line in args.summarize.read_text().splitlines() if line.strip()]
        print(summary_markdown(runs))
        print()
        print(kinds_markdown(runs))
        return 0
    if args.file is not None:
        if not args.file.is_file():
            print(f"error: no such file: {args.file}", file=sys.stderr)
            return 2
        MODELS[args.file.stem] = ForeignModel(args.file.stem, "", "", "", "", f"local file {args.file}",
                                              tuple(args.run_args.split()))
        return fuzz(args, {args.file.stem: args.file})
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    try:
        models = {name: model_path(name, args.cache) for name in names} if not args.fetch \
            else fetch_all(args.cache, names)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fetch:
        for name, path in models.items():
            print(f"{name}: {path} ({MODELS[name].what}; {MODELS[name].license})")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.rerun:
        return rerun(args, models)
    if args.reproduce:
        name, seed = args.reproduce[0], int(args.reproduce[1])
        kind = kind_for(seed)
        target = args.out / f"{mutant_name(name, seed, kind)}.onnx"
        target.write_bytes(mutate(models[name].read_bytes(), kind, seed))
        print(f"wrote {target} (kind {kind})")
        for command in COMMANDS:
            print("slimkit " + " ".join(argv_for(command, target, args.out / f"{target.stem}-out",
                                                 MODELS[name].run_args)))
        return 0
    return fuzz(args, models)


def rerun(args: argparse.Namespace, models: dict[str, Path]) -> int:
    """The not-clean runs of an earlier fuzz-results.json, regenerated from (model, seed, kind) and run again."""
    bad = json.loads(args.rerun.read_text())["bad"]
    preload()
    workdir = args.out / "rerun"
    shutil.rmtree(workdir, ignore_errors=True)
    jobs = []
    for case in bad:
        name, seed, kind, command = case["model"], case["seed"], case["kind"], case["command"]
        mutant = workdir / f"{mutant_name(name, seed, kind)}.onnx"
        mutant.parent.mkdir(parents=True, exist_ok=True)
        mutant.write_bytes(mutate(models[name].read_bytes(), kind, seed))
        folder = workdir / "runs" / f"{mutant.stem}-{command}"
        jobs.append((Run(name, seed, kind, command, argv_for(command, mutant, folder / "out",
                                                             MODELS[name].run_args)), folder))
    run_all(iter(jobs), workers=args.workers, timeout=args.timeout)  # fills in each Run's outcome
    shutil.rmtree(workdir, ignore_errors=True)
    runs = [run for run, _ in jobs]
    for case, run in zip(bad, runs, strict=True):
        last = (run.stderr_tail.strip().splitlines() or [""])[-1][:200]
        print(f"{run.model} seed {run.seed} {run.kind} {run.command}: was {case['outcome']}, now {run.outcome}"
              f"{': ' + last if last else ''}")
    return 1 if any(r.outcome in BAD for r in runs) else 0


def fuzz(args: argparse.Namespace, models: dict[str, Path]) -> int:
    from machine import describe

    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    print(describe(), flush=True)
    command_line = "python benchmarks/fuzz_models.py " + " ".join(sys.argv[1:])
    print(f"command: {command_line}", flush=True)
    preload()
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.out / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    log_path = args.out / "runs.jsonl"
    log = log_path.open("w")
    started_at = time.monotonic()
    deadline = started_at + args.deadline_minutes * 60 if args.deadline_minutes else None
    started = [0]
    pending: dict[tuple[str, int], int] = {}
    counts = {"runs": 0, "bad": 0}

    def on_done(run: Run) -> None:
        from dataclasses import asdict

        log.write(json.dumps(asdict(run)) + "\n")
        log.flush()
        counts["runs"] += 1
        if run.outcome in BAD:
            counts["bad"] += 1
            print(f"  {run.outcome}: {run.model} seed {run.seed} {run.kind} {run.command}: "
                  f"{(run.stderr_tail.strip().splitlines() or [''])[-1][:160]}", flush=True)
        key = (run.model, run.seed)
        pending[key] = pending.get(key, len(commands)) - 1
        if pending[key] == 0:  # its last command ended: the mutant file can go
            del pending[key]
            (workdir / "mutants" / f"{mutant_name(run.model, run.seed, run.kind)}.onnx").unlink(missing_ok=True)
        if counts["runs"] % 150 == 0:
            print(f"{counts['runs']} runs, {started[0]} mutants started, {counts['bad']} not clean, "
                  f"{time.monotonic() - started_at:.0f} s", flush=True)

    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    unknown = kinds - set(KINDS)
    if unknown:
        print(f"error: unknown mutation kinds {sorted(unknown)}: choose from {', '.join(KINDS)}", file=sys.stderr)
        return 2
    seeds = [s for s in range(args.seed_start, args.seed_start + args.mutants) if kind_for(s) in kinds]
    runs = run_all(mutant_jobs(models, seeds, commands, workdir, deadline, started), workers=args.workers,
                   timeout=args.timeout, on_done=on_done)
    log.close()
    elapsed = time.monotonic() - started_at
    shutil.rmtree(workdir, ignore_errors=True)
    mutants = {name: len({r.seed for r in runs if r.model == name}) for name in models}
    meta = {"command_line": command_line, "python": platform.python_version(), "seconds": round(elapsed, 1),
            "mutants": mutants, "kinds": sorted(kinds), "timeout_s": args.timeout, "workers": args.workers}
    write_json(args.out / "fuzz-results.json", runs, meta)
    print()
    print(f"mutants per model: {', '.join(f'{k} {v}' for k, v in mutants.items())}; runs: {len(runs)}; "
          f"wall time {elapsed / 60:.1f} min with {args.workers} workers; timeout {args.timeout:.0f} s per run")
    if deadline is not None and any(v < len(seeds) for v in mutants.values()):
        print(f"stopped at the {args.deadline_minutes:.0f}-minute deadline before {len(seeds)} mutants per model")
    print()
    print(summary_markdown(runs))
    print()
    print(kinds_markdown(runs))
    bad = bad_cases(runs)
    print()
    print(f"not clean: {len(bad)} (details with reproducers in {args.out / 'fuzz-results.json'})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
