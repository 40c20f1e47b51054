"""artifacts.py: canonical names through the format registry, the sidecar, and staged, atomic outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimkit.artifacts import (
    check_output_file,
    check_output_folder,
    output_warnings,
    publish_files,
    staged_folder,
    write_artifact,
)
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.models.base import OnnxModel


def tiny_onnx(task: str | None = "classification") -> OnnxModel:
    weight = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["features", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              initializer=[weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = OnnxModel.from_proto(proto)
    model.task = task
    model.max_positions = 64
    return model


def test_write_artifact_uses_the_formats_file_name_and_a_sidecar_that_loads_back(tmp_path):
    path = write_artifact(tiny_onnx(), tmp_path / "out")
    assert path == tmp_path / "out" / "model.onnx"
    sidecar = json.loads((tmp_path / "out" / "slimkit.json").read_text())
    assert sidecar["kind"] == "onnx" and sidecar["task"] == "classification"
    assert sidecar["input_names"] == ["features"] and sidecar["max_positions"] == 64
    loaded = load(path)
    assert loaded.task == "classification" and loaded.max_positions == 64
    assert onnx.load(str(path)).graph.node[0].op_type == "MatMul"


def test_a_named_artifact_gets_its_own_sidecar(tmp_path):
    write_artifact(tiny_onnx(), tmp_path, filename="small.onnx")
    assert (tmp_path / "small.onnx").exists() and (tmp_path / "small.slimkit.json").exists()
    assert not (tmp_path / "slimkit.json").exists()


def test_staged_folder_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "result"
    with pytest.raises(RuntimeError), staged_folder(target) as stage:
        (stage / "report.json").write_text("{}")
        raise RuntimeError("pass failed")
    assert not target.exists()
    assert not list(tmp_path.iterdir())  # no hidden staging folder either


def test_staged_folder_replaces_an_earlier_output_only_with_overwrite(tmp_path):
    target = tmp_path / "result"
    with staged_folder(target) as stage:
        (stage / "report.json").write_text('{"run": 1}')
    with pytest.raises(SlimkitError, match="already holds a slimkit output"), staged_folder(target):
        pass
    with staged_folder(target, overwrite=True) as stage:
        (stage / "report.json").write_text('{"run": 2}')
    assert json.loads((target / "report.json").read_text()) == {"run": 2}


def test_output_checks_refuse_what_is_not_ours(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(SlimkitError, match="not a slimkit output"):
        check_output_folder(foreign, overwrite=True)
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"x")
    with pytest.raises(SlimkitError, match="already exists"):
        check_output_file(existing)
    check_output_file(existing, overwrite=True)
    with pytest.raises(SlimkitError, match="is a folder"):
        check_output_file(foreign)


def test_publish_files_moves_a_staged_artifact_beside_the_target(tmp_path):
    stage = tmp_path / "stage"
    write_artifact(tiny_onnx(), stage, filename="m.onnx")
    publish_files(stage, tmp_path / "final" / "m.onnx")
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == ["m.onnx", "m.slimkit.json"]
    assert not list(stage.iterdir())


def test_output_warnings_when_writing_into_the_input_models_folder(tmp_path):
    source = tmp_path / "in.onnx"
    source.write_bytes(b"x")
    assert output_warnings(tmp_path / "out.onnx", [source])
    assert output_warnings(tmp_path / "sub" / "out.onnx", [source]) == []
