"""Run `slimkit inspect`, `bench` and `optimize --recipe int8-dynamic` on mutants, and classify every run.

A fresh `slimkit` process spends ~3 s importing torch, onnx and onnxruntime; thousands of runs would take hours.
So the parent imports slimkit and its heavy dependencies once, and each run is `slimkit.cli.main(argv)` in a
forked child with its stdout/stderr in files, its exit status and signal read with `waitpid`, and a kill (of its
whole process group) when it runs past the timeout. The parent never runs a model itself, so no runtime thread
pool exists when it forks.

Outcomes: ok (exit 0), clean-error (a documented non-zero exit, 2/3/4, with no "Traceback" on stderr),
traceback (any run whose stderr holds a Python traceback), other-exit (another exit code), signal (killed by a
signal: a crash) and hang (past the timeout).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

COMMANDS = ("inspect", "bench", "optimize")
OUTCOMES = ("ok", "clean-error", "traceback", "other-exit", "signal", "hang")
CLEAN_EXIT_CODES = (2, 3, 4)  # SlimkitError (and argparse), target not met, bench output mismatch
# Each child's address space is capped, so a 10^9-element allocation the guards miss fails with an error
# instead of letting the kernel's OOM killer take a process (or the machine) down.
MEMORY_LIMIT_BYTES = 12 * 2**30


def preload() -> None:
    """Import what every command imports, once, before forking (the children share these pages)."""
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxruntime.quantization  # noqa: F401
    import onnxscript  # noqa: F401
    import onnxslim  # noqa: F401
    import rich.console  # noqa: F401
    import rich.table  # noqa: F401
    import torch  # noqa: F401

    import slimkit.api  # noqa: F401
    import slimkit.cli  # noqa: F401
    import slimkit.inspect_model  # noqa: F401
    import slimkit.passes.convert  # noqa: F401
    import slimkit.passes.fusion  # noqa: F401
    import slimkit.passes.quantize  # noqa: F401
    import slimkit.report  # noqa: F401
    import slimkit.report.html  # noqa: F401


def argv_for(command: str, model: Path, out: Path, run_args: Sequence[str]) -> list[str]:
    """The slimkit arguments of one run: one thread, small settings, so a loadable mutant takes seconds."""
    if command == "inspect":
        return ["inspect", str(model)]
    if command == "bench":
        return ["bench", str(model), "--threads", "1", *run_args]
    if command == "optimize":
        return ["optimize", str(model), "--recipe", "int8-dynamic", "-o", str(out), "--threads", "1", *run_args]
    raise ValueError(command)


@dataclass
class Run:
    """One command on one mutant, and how it ended."""

    model: str
    seed: int
    kind: str
    command: str
    argv: list[str]
    outcome: str = ""
    returncode: int | None = None
    signal: int | None = None
    seconds: float = 0.0
    stderr_tail: str = ""


def classify(returncode: int | None, sig: int | None, timed_out: bool, stderr: str) -> str:
    if timed_out:
        return "hang"
    if sig is not None:
        return "signal"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if returncode == 0:
        return "ok"
    if returncode in CLEAN_EXIT_CODES:
        return "clean-error"
    return "other-exit"


def _child(argv: list[str], folder: Path) -> None:
    """In the forked child: own process group, stdout/stderr to files, run the CLI, exit with its code."""
    code = 1
    try:
        os.setpgid(0, 0)
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
        out = os.open(folder / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(folder / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.chdir(folder)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        from slimkit.cli import main

        sys.argv = ["slimkit", *argv]
        code = main(argv)
        code = 0 if code is None else int(code)
    except SystemExit as exc:  # argparse, or sys.exit in the code
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)


@dataclass
class _Running:
    pid: int
    run: Run
    folder: Path
    started: float = field(default_factory=time.monotonic)


def run_all(jobs: Iterator[tuple[Run, Path]], *, workers: int = 2, timeout: float = 60.0,
            on_done=None) -> list[Run]:
    """Run (Run, folder) jobs, `workers` forked children at a time; each Run gets its outcome filled in."""
    running: dict[int, _Running] = {}
    done: list[Run] = []
    jobs = iter(jobs)
    exhausted = False
    while running or not exhausted:
        while not exhausted and len(running) < workers:
            try:
                run, folder = next(jobs)
            except StopIteration:
                exhausted = True
                break
            folder.mkdir(parents=True, exist_ok=True)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(run.argv, folder)
            running[pid] = _Running(pid, run, folder)
        if not running:
            break
        finished = _reap(running, timeout)
        for item in finished:
            done.append(item.run)
            if on_done is not None:
                on_done(item.run)
            shutil.rmtree(item.folder, ignore_errors=True)
    return done


def _reap(running: dict[int, _Running], timeout: float) -> list[_Running]:
    """Wait until at least one child ends (or runs out of time); return those, classified."""
    while True:
        finished = []
        for pid, item in list(running.items()):
            timed_out = time.monotonic() - item.started > timeout
            if timed_out:
                _kill_group(pid)
            got, status = os.waitpid(pid, 0 if timed_out else os.WNOHANG)
            if got == 0:
                continue
            del running[pid]
            _finish(item, status, timed_out)
            finished.append(item)
        if finished:
            return finished
        time.sleep(0.02)


def _kill_group(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def _finish(item: _Running, status: int, timed_out: bool) -> None:
    run = item.run
    run.seconds = round(time.monotonic() - item.started, 3)
    if os.WIFSIGNALED(status):
        run.signal = os.WTERMSIG(status)
        run.returncode = -run.signal
    else:
        run.returncode = os.WEXITSTATUS(status)
    try:
        stderr = (item.folder / "stderr").read_text(errors="replace")
    except OSError:
        stderr = ""
    run.outcome = classify(run.returncode, None if timed_out else run.signal, timed_out, stderr)
    run.stderr_tail = stderr[-2000:]


def summary(runs: Sequence[Run]) -> dict[str, dict[str, Counter]]:
    """{model: {command: Counter(outcome)}}."""
    table: dict[str, dict[str, Counter]] = {}
    for run in runs:
        table.setdefault(run.model, {}).setdefault(run.command, Counter())[run.outcome] += 1
    return table


def summary_markdown(runs: Sequence[Run]) -> str:
    """The per model x command x outcome table, as Markdown."""
    lines = ["| model | command | runs | " + " | ".join(OUTCOMES) + " |",
             "|---|---|---:|" + "---:|" * len(OUTCOMES)]
    for model, per_command in summary(runs).items():
        for command in COMMANDS:
            counts = per_command.get(command)
            if counts is None:
                continue
            lines.append(f"| {model} | {command} | {sum(counts.values())} | "
                         + " | ".join(str(counts.get(o, 0)) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def kinds_markdown(runs: Sequence[Run]) -> str:
    """Per mutation kind: how many mutants, and how many of them each command ran through (exit 0)."""
    mutants: dict[tuple[str, str], set] = {}
    ok: Counter = Counter()
    for run in runs:
        mutants.setdefault((run.kind, run.command), set()).add((run.model, run.seed))
        ok[(run.kind, run.command)] += run.outcome == "ok"
    kinds = sorted({k for k, _ in mutants})
    lines = ["| kind | mutants | inspect ok | bench ok | optimize ok |", "|---|---:|---:|---:|---:|"]
    for kind in kinds:
        count = len(mutants.get((kind, "inspect"), set()))
        lines.append(f"| {kind} | {count} | " + " | ".join(str(ok[(kind, c)]) for c in COMMANDS) + " |")
    return "\n".join(lines)


def bad_cases(runs: Sequence[Run]) -> list[dict]:
    """Every run that is not ok or a clean error, with what reproduces it."""
    return [asdict(r) for r in runs if r.outcome not in ("ok", "clean-error")]


def write_json(path: Path, runs: Sequence[Run], meta: dict) -> None:
    path.write_text(json.dumps({**meta, "bad": bad_cases(runs),
                                "summary": {m: {c: dict(n) for c, n in per.items()}
                                            for m, per in summary(runs).items()}}, indent=2))
