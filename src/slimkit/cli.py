"""`slimkit` command line: parse, call the API, print. No logic lives only here."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

# LiteRT / absl / TensorFlow-style native logs would drown the output; users can override these.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GLOG_minloglevel", "2")
# JAX (pulled in by the TFLite tools) warns on any later fork, e.g. a subprocess a library starts: a line
# beside slimkit's one-line error that says nothing about the user's model.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


def _common(p: argparse.ArgumentParser, *, data: bool = True, json_help: str = "machine-readable JSON on stdout") -> None:
    p.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    p.add_argument("--shape", action="append", metavar="NAME=DxD..", help="fix a dynamic input shape (repeatable)")
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--weights", help="weights for a package.module:factory model (.safetensors or state dict)")
    p.add_argument("--task", choices=["classification", "embedding"], help="what the model's output is")
    p.add_argument("--verbose", action="store_true",
                   help="let third-party output through on stderr (LiteRT, TensorFlow, absl, torchao logs)")
    if data:
        p.add_argument("--data", help=".npz, folder of .npy, .txt (one example per line) or sklearn:digits")
        p.add_argument("--batch-size", type=int, default=1, help="batch size for latency (default 1)")
        p.add_argument("--seq-len", type=int, default=None,
                       help="sequence length for text models (default 128, or the model's limit if smaller)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimkit", description="Make trained models smaller and faster, with proof.")
    parser.add_argument("--version", action="version", version=_version())
    from slimkit.formats import convert_targets, output_formats

    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="inputs, outputs, size, parameters, op histogram, largest layers")
    p.add_argument("model")
    _common(p, data=False)
    p.add_argument("--data", help="sample data: its shapes, and the task when it has integer labels")

    p = sub.add_parser("convert", help="convert a model to onnx, fp16 onnx, openvino or tflite (fidelity checked)")
    p.add_argument("model")
    p.add_argument("--to", required=True, choices=list(convert_targets()))
    p.add_argument("-o", "--output", required=True, help="output file (out/model.onnx) or folder; the report "
                   "goes beside it (out/model.report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _common(p)

    p = sub.add_parser("optimize", help="run a recipe and write the artifact plus report.json / report.html")
    p.add_argument("model")
    p.add_argument("--recipe", required=True, help="built-in recipe name (see `slimkit recipes`) or a YAML file")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier slimkit output in that folder")
    p.add_argument("--eval-data", help="the data the reported figures are measured on; keep it apart from "
                   "--data / --train-data (default: --data, flagged when a pass trained, selected or calibrated on it)")
    p.add_argument("--min-cosine", type=float, help="accuracy-aware recipes: mean output cosine to keep")
    p.add_argument("--max-drop", type=float, help="accuracy-aware recipes: accuracy drop allowed (0.01 = 1 point)")
    p.add_argument("--train-data", help="training passes (prune, distill, cluster/factorize fine-tuning) learn from "
                   "this and pick their best epoch on --data; given only one of the two, it is split 80/20 "
                   "(seeded, stratified) into training and validation parts")
    p.add_argument("--student", help="distill: the student model, package.module:factory")
    p.add_argument("--checkpoint-dir", help="training passes write a checkpoint per epoch here and keep it "
                   "(default: OUTPUT.checkpoints, removed once the run succeeds)")
    p.add_argument("--resume", action="store_true", help="continue interrupted training from --checkpoint-dir")
    p.add_argument("--to", choices=output_formats(),
                   help="artifact format at the end (e.g. --recipe fp16 --to tflite: fp16 TFLite; "
                   "--recipe int8-static --to openvino: NNCF int8 for OpenVINO)")
    p.add_argument("--precision", choices=["auto", "f32", "bf16", "f16"],
                   help="OpenVINO inference precision, stored with the artifact (default auto: bf16 where the "
                   "CPU runs it natively, else f32; one it would emulate falls back to f32, with the reason)")
    _common(p)

    p = sub.add_parser("bench", help="measure models: size, latency, fidelity vs --reference, accuracy")
    p.add_argument("models", nargs="+")
    p.add_argument("--reference", help="model to compare against (fidelity and ratios)")
    p.add_argument("--max-samples", type=int, default=None,
                   help="cap the samples used for fidelity/accuracy (default: labelled data whole, else 256)")
    p.add_argument("--runtime", metavar="NAME[,NAME]",
                   help="measure each ONNX model on each of these runtimes, interleaved: onnxruntime, openvino "
                   "(OpenVINO at the CPU's fastest native precision; see slimkit inspect)")
    _common(p, json_help="one JSON object per line (JSON Lines): the reference first, then each model")

    p = sub.add_parser("search", help="try techniques, runtimes and precisions under an accuracy floor; "
                       "recommend one, with DIR/report.html")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="search folder: search.db (every trial), trials/, best/, "
                   "report.json, report.html")
    floor = p.add_mutually_exclusive_group(required=True)
    floor.add_argument("--max-drop", type=float, help="accuracy drop allowed on validation (0.005 = half a point)")
    floor.add_argument("--min-cosine", type=float, help="mean output cosine to the original to keep")
    p.add_argument("--eval-data", help="the final figures' data, never used to choose (default: a held-back 20%% "
                   "of --data that no trial sees)")
    p.add_argument("--objective", choices=["latency", "size", "both"], default="latency",
                   help="what to minimize under the floor (default latency)")
    p.add_argument("--budget-trials", type=int, help="trials to run in all (default 30 without --budget-minutes)")
    p.add_argument("--budget-minutes", type=float, help="wall-clock minutes for the trials")
    p.add_argument("--runtimes", metavar="NAME[,NAME]", help="runtimes to search (default all): onnxruntime, "
                   "openvino, tflite")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where trials run: this process (default) or Ray tasks (pip install 'slimkit[ray]')")
    p.add_argument("--address", help="Ray cluster: auto, or ray://HOST:10001 (default: a local Ray instance)")
    p.add_argument("--workers", type=int, default=2, help="Ray: trials at a time (default 2)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search in -o")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    _common(p)

    p = sub.add_parser("report", help="rebuild a search's report.json and report.html from its store")
    p.add_argument("folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("recipes", help="list built-in recipes")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help="the main job on embedded defaults: digits models and all-MiniLM-L6-v2")
    p.add_argument("-o", "--output", default="demo-out")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-minilm", action="store_true", help="only the digits models")
    p.add_argument("--json", action="store_true")
    return parser


def _version() -> str:
    from slimkit import __version__

    return f"slimkit {__version__}"


# Exit codes: 0 done, 2 a user mistake or fixable environment problem, 3 a target not met (best effort saved),
# 4 bench outputs that do not match the reference, 70 an internal error (EX_SOFTWARE: a slimkit bug),
# 130 interrupted, 141 stdout closed early (e.g. piped into `head`).
EXIT_INTERNAL = 70
EXIT_BROKEN_PIPE = 141
# OSErrors the user can fix (a full disk, a forbidden or read-only file or folder), not bugs of ours.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_ALLOWED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure ends in one line on stderr and a non-zero exit code (listed above);
    only an internal error with --verbose (or SLIMKIT_VERBOSE=1) adds its traceback."""
    from slimkit.errors import SlimkitError

    args = build_parser().parse_args(argv)
    from slimkit.report.build import set_command_line

    set_command_line(["slimkit", *(sys.argv[1:] if argv is None else argv)])
    if getattr(args, "verbose", False):  # read by slimkit.quiet, wherever a noisy library is called
        os.environ["SLIMKIT_VERBOSE"] = "1"
    try:
        return COMMANDS[args.command](args)
    except SlimkitError as exc:
        print(f"error: {_one_line(exc.problem)}" + (f": {_one_line(exc.hint)}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away: nothing left to say, and nobody to say it to
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except MemoryError:
        print("error: out of memory: try a smaller --batch-size or less data, or a machine with more memory",
              file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _DISK_FULL | _NOT_ALLOWED:
            return _internal_error(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        hint = ("free some disk space, or write somewhere else" if exc.errno in _DISK_FULL
                else "check that you may read the inputs and write to the output folder")
        print(f"error: {exc.strerror or _one_line(str(exc))}{where}: {hint}", file=sys.stderr)
        return 2
    except Exception as exc:
        return _internal_error(exc)


def _one_line(text: str) -> str:
    """The first non-empty line of a message: library text quoted in an error can span many lines."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _internal_error(exc: BaseException) -> int:
    """A slimkit bug, said as one: never dressed up as advice about the user's input. --verbose adds the traceback."""
    import traceback

    from slimkit.errors import describe
    from slimkit.quiet import verbose

    if verbose():
        traceback.print_exception(exc, file=sys.stderr)
        how = "the traceback is above"
    else:
        how = "rerun with --verbose (or SLIMKIT_VERBOSE=1) for the traceback"
    print(f"error: internal error (a slimkit bug, not a problem with your input): {describe(exc)}; {how}, and "
          "please report it", file=sys.stderr)
    return EXIT_INTERNAL


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # piped or captured: wide enough for the measurement table
        console = Console(stderr=stderr, highlight=False, width=170)
    return console


@contextlib.contextmanager
def _status(args):
    """A spinner on stderr for long steps; `say(text)` updates it. Without a terminal (CI, a log file): plain
    progress lines on stderr instead (`slimkit.progress`). Silent with --json."""
    console = _console(stderr=True)
    if getattr(args, "json", False):
        yield lambda message: None
        return
    if not console.is_terminal:
        from slimkit.progress import ProgressLines

        lines = ProgressLines()
        try:
            yield lines.say
        finally:
            lines.close()
        return
    from rich.text import Text

    with console.status("starting") as status:
        yield lambda message: status.update(Text(message))


def _shapes(args):
    from slimkit.data_sources import parse_shapes

    return parse_shapes(getattr(args, "shape", None)) or None


def _settings(args):
    """The measurement options of a command as one `MeasureSettings` (checked: a bad value is one line)."""
    from slimkit.settings import MeasureSettings

    return MeasureSettings(threads=args.threads, batch_size=getattr(args, "batch_size", 1),
                           seq_len=getattr(args, "seq_len", None), shapes=_shapes(args),
                           max_samples=getattr(args, "max_samples", None))


def _load(args, source: str):
    from slimkit.formats import load

    return load(source, weights=getattr(args, "weights", None), task=getattr(args, "task", None), shapes=_shapes(args),
                data=getattr(args, "data", None))


def cmd_inspect(args) -> int:
    from slimkit.inspect_model import inspect_model

    info = inspect_model(_load(args, args.model), data=args.data)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    from rich.table import Table
    from rich.text import Text

    from slimkit.report.format import human_size

    console = _console()
    task = info.get("task") or "unknown (pass --task, or --data with integer labels for classification)"
    console.print(Text(f"{info['model']}  kind={info['kind']}  task={task}", style="bold"))
    if info.get("task_from", "model") not in ("model", None):
        console.print(Text(f"task {info['task_from']}"))
    console.print(Text(f"size: {human_size(info['size_bytes'])}   params: {info.get('params') or '-'}"))
    from slimkit.inspect_model import nonfinite_line

    if nonfinite_line(info.get("nonfinite_weights")):
        console.print(Text(nonfinite_line(info.get("nonfinite_weights")), style="bold red"))
    for key in ("inputs", "outputs"):
        console.print(Text(f"{key}: " + ", ".join(info.get(key) or [])))
    if info.get("ops"):
        precision, delegated = info.get("op_precision"), info.get("delegated_by_type")
        ops = Table(title="ops")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        if precision is not None:  # TFLite: how many are quantized, and how many XNNPACK runs
            ops.add_column("quantized", justify="right")
            ops.add_column("on XNNPACK", justify="right")
        for op, count in list(info["ops"].items())[:20]:
            extra = [] if precision is None else [str((precision.get(op) or {}).get("quantized", "-")),
                                                  str((delegated or {}).get(op, 0))]
            ops.add_row(Text(op), str(count), *extra)
        console.print(ops)
    if info.get("largest"):
        big = Table(title="largest weights")
        for col in ("name", "shape", "dtype", "params"):
            big.add_column(col, justify="right" if col == "params" else "left")
        for w in info["largest"]:
            big.add_row(Text(w["name"]), "x".join(map(str, w["shape"])), w["dtype"], f"{w['params']:,}")
        console.print(big)
    hw = info.get("hardware") or {}
    console.print(Text(f"CPU: {hw.get('cpu_model') or 'unknown'} ({hw.get('logical_cores') or '?'} logical cores)",
                       style="bold"))
    features = hw.get("features")
    line = Text("CPU features: ")
    if features is None:
        line.append("unknown (no /proc/cpuinfo flags)", style="dim")
    for i, (name, present) in enumerate((features or {}).items()):
        line.append(("  " if i else "") + f"{name} {'yes' if present else 'no'}", style="green" if present else "dim")
    console.print(line)
    if hw.get("openvino_capabilities"):
        console.print(Text(f"OpenVINO: {hw['openvino_precision']} ({hw['openvino_precision_reason']})"))
    else:
        console.print(Text("OpenVINO: not installed (pip install 'slimkit[openvino]')", style="dim"))
    console.print(Text(f"int8 kernels: {hw.get('int8_kernels')}"))
    return 0


def cmd_convert(args) -> int:
    from slimkit.api import convert

    settings = _settings(args)  # a bad option is refused before the model loads
    model = _load(args, args.model)
    with _status(args) as say:
        target, result = convert(model, args.to, args.output, data=args.data, settings=settings,
                                 progress=say, overwrite=args.overwrite)
    return _print_result(args, result.report, extra={"output": str(target)})


def cmd_optimize(args) -> int:
    from slimkit.api import optimize
    from slimkit.settings import TrainSettings

    settings = _settings(args)
    model = _load(args, args.model)
    with _status(args) as say:
        checkpoints = args.checkpoint_dir or f"{str(args.output).rstrip('/')}.checkpoints"
        overrides = {"distill": {"student": args.student}} if args.student else None
        training = TrainSettings(data=args.train_data, checkpoint_dir=checkpoints, resume=args.resume,
                                 keep_checkpoints=args.checkpoint_dir is not None)
        result = optimize(model, args.recipe, data=args.data, eval_data=args.eval_data, output=args.output,
                          settings=settings, training=training, progress=say, min_cosine=args.min_cosine,
                          max_drop=args.max_drop, overrides=overrides, to=args.to, overwrite=args.overwrite,
                          precision=args.precision)
    code = _print_result(args, result.report, extra={"output": str(args.output)})
    result.require_targets()  # TargetNotMetError: exit code 3, after the artifact and report were written
    return code


def _print_result(args, report: dict, extra: dict) -> int:
    if args.json:
        print(json.dumps({**extra, "report": report}, default=str))
        return 0
    from slimkit.report import print_report

    console = _console()
    print_report(report, console)
    console.print(f"wrote {extra['output']}")
    return 0


def cmd_bench(args) -> int:
    from slimkit.api import bench
    from slimkit.report import build_report, print_report

    settings = _settings(args)
    models = [_load(args, m) for m in args.models]
    reference = _load(args, args.reference) if args.reference else None
    with _status(args) as say:
        results = bench(models, reference=reference, data=args.data, settings=settings,
                        labels=args.models, progress=say,
                        runtimes=args.runtime.split(",") if args.runtime is not None else None)
    report = build_report(command="bench", input_model={"model": ", ".join(args.models)},
                          measurements=[m.as_dict() for m in results],
                          reference_label="reference" if reference is not None else None, threads=args.threads)
    mismatched = sorted({f["model"] for f in report["flags"] if f["flag"] == "output-mismatch"})
    if args.json:
        ratios = {r["model"]: r for r in report["ratios"]}
        for m in report["measurements"]:
            is_ref = reference is not None and m["label"] == "reference"
            line = {**m, "reference": is_ref, "flags": [f for f in report["flags"] if f["model"] == m["label"]]}
            if reference is not None and not is_ref:
                line["vs_reference"] = {k: v for k, v in ratios.get(m["label"], {}).items() if k != "model"}
            print(json.dumps(line, default=str))
    else:
        print_report(report, _console())
    if mismatched:
        print(f"error: outputs of {', '.join(mismatched)} do not match the reference's", file=sys.stderr)
        return 4
    return 0


def cmd_search(args) -> int:
    from slimkit.searching import search

    with _status(args) as say:
        result = search(args.model, data=args.data, eval_data=args.eval_data, output=args.output,
                        max_drop=args.max_drop, min_cosine=args.min_cosine, objective=args.objective,
                        budget_trials=args.budget_trials, budget_minutes=args.budget_minutes, runtimes=args.runtimes,
                        executor=args.executor, address=args.address, workers=args.workers, resume=args.resume,
                        seed=args.seed, settings=_settings(args), progress=say, weights=args.weights, task=args.task)
    _print_search(args, result.report)
    result.require_floor()
    return 0


def _print_search(args, report: dict) -> None:
    if args.json:
        print(json.dumps(report, default=str))
        return
    from slimkit.searching.report import terminal_lines

    for line in terminal_lines(report):
        print(line)
    print(f"report: {Path(args.output if hasattr(args, 'output') else args.folder) / 'report.html'}")


def cmd_report(args) -> int:
    from slimkit.searching.report import rebuild

    report = rebuild(Path(args.folder))
    _print_search(args, report)
    return 0


def cmd_recipes(args) -> int:
    from slimkit.pipeline import builtin_recipes, load_recipe

    recipes = [load_recipe(name) for name in sorted(builtin_recipes())]
    if args.json:
        print(json.dumps([r.as_dict() for r in recipes], indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    table = Table(title="built-in recipes")
    table.add_column("recipe")
    table.add_column("passes")
    table.add_column("what it does")
    for r in recipes:  # Text, not markup: "[tf.float16]" in a description prints as written
        table.add_row(Text(r.name), Text(" -> ".join(n for n, _ in r.steps)), Text(r.description or ""))
    _console().print(table)
    return 0


def cmd_demo(args) -> int:
    from slimkit.demo import run_demo

    console = _console()
    report = run_demo(Path(args.output), threads=args.threads, include_minilm=not args.skip_minilm,
                      console=None if args.json else console)
    if args.json:
        print(json.dumps(report, default=str))
    return 0


COMMANDS = {
    "inspect": cmd_inspect, "convert": cmd_convert, "optimize": cmd_optimize, "bench": cmd_bench,
    "recipes": cmd_recipes, "demo": cmd_demo, "search": cmd_search, "report": cmd_report,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
