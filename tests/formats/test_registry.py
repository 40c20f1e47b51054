"""The format registry: everything that used to branch on formats reads it, and a new format is one module.

The test format here ("onnx-text": an ONNX model in protobuf's text format) is a complete format in one small
module-like block: loader, runner, writer. Registered, it loads by suffix, measures and writes through the same
calls as the built-in ones, without a line changed elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from onnx import ModelProto, TensorProto, helper, numpy_helper

import slimkit.formats.registry as registry
from slimkit.artifacts import write_artifact
from slimkit.errors import SlimkitError
from slimkit.evaluate.measure import evaluate
from slimkit.formats import (
    all_formats,
    convert_targets,
    format_named,
    format_of_kind,
    load,
    make_runner,
    output_formats,
)
from slimkit.formats.onnx import OrtRunner
from slimkit.formats.registry import Format, register_format
from slimkit.models.base import OnnxModel, WorkingModel
from slimkit.pipeline import load_recipe, retarget
from slimkit.settings import MeasureSettings


def test_builtin_formats_and_what_reads_them():
    names = [f.name for f in all_formats()]
    assert {"onnx", "openvino", "tflite", "slim", "torch", "keras", "torchscript"} <= set(names)
    assert output_formats() == ["onnx", "openvino", "tflite"]
    assert set(convert_targets()) == {"onnx", "fp16", "openvino", "tflite"}
    assert convert_targets()["fp16"][1].name == "onnx"
    assert format_of_kind("tflite").runtime == "litert" and format_of_kind("openvino").filename == "model.xml"
    with pytest.raises(SlimkitError, match="unknown format 'coreml'"):
        format_named("coreml")


def test_the_cli_offers_the_registrys_formats():
    from slimkit.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "m.onnx", "--to", "coreml", "-o", "x"])
    args = parser.parse_args(["optimize", "m.onnx", "--recipe", "onnx", "-o", "x", "--to", "tflite"])
    assert args.to == "tflite"


def test_retarget_follows_each_formats_rules():
    # OpenVINO: ONNX Runtime quantization gives way to NNCF; fusion is dropped.
    steps = [n for n, _ in retarget(load_recipe("int8-dynamic"), "openvino").steps]
    assert steps == ["to-onnx", "onnx-cleanup", "to-openvino", "ov-weights"]
    # TFLite: fp16 becomes an option of the converter.
    assert retarget(load_recipe("fp16"), "tflite").steps == [("to-tflite", {"precision": "fp16"})]
    with pytest.raises(SlimkitError, match="cannot end in TFLite: to-openvino makes another format"):
        retarget(load_recipe("openvino"), "tflite")


def test_a_duplicate_format_name_or_suffix_is_refused():
    with pytest.raises(SlimkitError, match="two formats are named 'onnx'"):
        register_format(Format(name="onnx", kind="onnx"))
    with pytest.raises(SlimkitError, match="both claim"):
        register_format(Format(name="onnx-copy", kind="onnx", suffixes=(".onnx",)))


# ---- a new format, in one block ----

TEXT_KIND = "onnx-text"


@dataclass(repr=False)
class OnnxTextModel(WorkingModel):
    path: Path | None = None
    kind: str = TEXT_KIND

    def files(self) -> list[Path]:
        return [self.path] if self.path else []

    def as_onnx(self) -> OnnxModel:
        proto = text_format.Parse(self.path.read_text(), ModelProto())
        return OnnxModel.from_proto(proto, like=self)


def _load_text(path: Path, options) -> WorkingModel:
    return OnnxTextModel(path=path, source=str(path), task=options.task)


def _run_text(model: WorkingModel, threads: int) -> OrtRunner:
    runner = OrtRunner(model.as_onnx(), threads)
    runner.runtime = "onnxruntime (from text)"
    return runner


def _write_text(model: WorkingModel, target: Path) -> None:
    target.write_text(model.path.read_text())


TEXT_FORMAT = Format(name="onnx-text", kind=TEXT_KIND, suffixes=(".onnxtxt",), load=_load_text, runner=_run_text,
                     runtime="onnxruntime", filename="model.onnxtxt", write=_write_text)


@pytest.fixture
def text_format_registered():
    registry.all_formats()  # discover the built-in ones first
    register_format(TEXT_FORMAT, origin=__name__)
    yield TEXT_FORMAT
    registry._FORMATS.pop(TEXT_FORMAT.name)


def test_a_new_format_loads_measures_and_writes_through_the_registry(text_format_registered, tmp_path):
    weight = np.arange(6, dtype=np.float32).reshape(3, 2)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
                              initializer=[numpy_helper.from_array(weight, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = tmp_path / "m.onnxtxt"
    source.write_text(text_format.MessageToString(proto))

    model = load(source)
    assert isinstance(model, OnnxTextModel)
    x = np.ones((2, 3), dtype=np.float32)
    np.testing.assert_allclose(make_runner(model, 1).run({"x": x})[0], x @ weight)
    measured = evaluate(model, settings=MeasureSettings(threads=1))
    assert measured.runtime == "onnxruntime (from text)" and measured.latency_ms["p50"] > 0
    written = write_artifact(model, tmp_path / "out")
    assert written.name == "model.onnxtxt" and written.read_text() == source.read_text()
