"""TFLite conversion at the shape the model is measured and deployed at, and conversion failures in one line."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from slimkit.cli import main as cli_main
from slimkit.demo_models import sentences
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.formats.tflite import TfliteRunner
from slimkit.passes.base import Context, get_pass

pytest.importorskip("litert_torch")


class ScaledErfcx(nn.Module):
    """A model with an op litert-torch has no TFLite lowering for."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return torch.special.erfcx(self.linear(x))

    def example_inputs(self):
        return {"x": torch.zeros(1, 4)}


def test_an_op_without_a_tflite_lowering_is_named_with_its_source_line(tmp_path):
    model = load(ScaledErfcx())
    with pytest.raises(SlimkitError) as info:
        get_pass("to-tflite")().run(model, Context(workdir=tmp_path))
    message = str(info.value)
    assert "special_erfcx" in message and "torch.special.erfcx(self.linear(x))" in message
    assert "\n" not in message and "--to onnx" in info.value.hint


def test_minilm_converts_at_the_sequence_length_it_is_measured_at_and_quantizes_to_int8(minilm, tmp_path):
    calib, evaluation = tmp_path / "calib.txt", tmp_path / "eval.txt"
    calib.write_text("\n".join(sentences("calib", 32)) + "\n")
    evaluation.write_text("\n".join(sentences("eval", 24)) + "\n")
    out = tmp_path / "out"
    code = cli_main(["optimize", str(minilm.source), "--recipe", "int8-dynamic", "--to", "tflite", "--seq-len", "32",
                     "--data", str(calib), "--eval-data", str(evaluation), "-o", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    to_tflite = next(p for p in report["passes"] if p["pass"] == "to-tflite")
    assert to_tflite["stats"]["input_shapes"]["input_ids"] == [1, 32]
    _original, plain, int8 = report["measurements"]
    assert plain["data"]["inputs"]["input_ids"] == [1, 32] and int8["runtime"] == "litert"
    assert int8["fidelity"]["cosine_mean"] >= 0.99
    assert int8["size_bytes"] <= 0.35 * plain["size_bytes"]
    runner = TfliteRunner(load(out / "model.tflite"), 1)
    assert [spec.shape for spec in runner.input_specs] == [(1, 32)] * 3


def test_static_int8_without_data_is_refused_before_the_conversion():
    from slimkit.api import optimize

    # The conversion would fail on erfcx; the missing calibration data is what is reported, so nothing ran first.
    with pytest.raises(SlimkitError, match="tflite-static needs calibration data") as info:
        optimize(ScaledErfcx(), "tflite-int8")
    assert "--data" in info.value.hint


def test_token_ids_read_for_litert_run_on_onnx_runtime(minilm_onnx):
    import numpy as np

    from slimkit.formats import make_runner

    runner = make_runner(minilm_onnx.model, 1)
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    feed64 = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feed32 = {k: v.astype(np.int32) for k, v in feed64.items()}  # what data read for a TFLite model holds
    assert np.array_equal(runner.run(feed32)[0], runner.run(feed64)[0])


def test_example_inputs_are_tiled_or_cut_to_the_conversion_shape():
    from slimkit.formats.tflite import _fit

    ids = torch.tensor([[101, 7, 8, 102]])
    assert _fit(ids, (2, 6)).tolist() == [[101, 7, 8, 102, 101, 7], [101, 7, 8, 102, 101, 7]]
    assert _fit(ids, (1, 3)).tolist() == [[101, 7, 8]]
    mask = torch.ones(1, 4, dtype=torch.long)
    assert bool((_fit(mask, (1, 128)) == 1).all())
