"""Loading every source kind (module, factory, weights, TorchScript, .pt2, ONNX, folders) and refusing bad ones."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from slimkit.bundled_data import digits_arrays
from slimkit.errors import SlimkitError
from slimkit.evaluate.measure import Evaluator, evaluate
from slimkit.formats import load, make_runner
from slimkit.models.base import ModelKind, OnnxModel, TorchModel
from slimkit.models.input_shapes import shapes_from_data
from slimkit.passes.base import Context, get_pass
from slimkit.settings import MeasureSettings


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, feats, scale):
        return self.fc(feats) * scale


class OneInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)

    def forward(self, feats):
        return torch.relu(self.fc(feats))


def torch_out(module, *args):
    with torch.inference_mode():
        return module(*args).numpy()


def fast_evaluator(data, **kwargs) -> Evaluator:
    return Evaluator(data, latency_rounds=2, round_runs=2, round_seconds=0.0, warmup=1, **kwargs)


# ---- nn.Module ----


def test_module_with_example_inputs_names_from_forward():
    module = Tiny()
    model = load(module, example_inputs=(torch.randn(2, 4), torch.ones(2, 1)))
    assert isinstance(model, TorchModel) and model.kind == ModelKind.TORCH
    assert model.input_names == ["feats", "scale"]
    assert [s.describe() for s in model.input_specs] == ["feats: float32[batchx4]", "scale: float32[batchx1]"]
    assert model.output_names == ["output"] and model.source == "Tiny"
    assert model.param_count() == 15 and model.size_bytes() == 15 * 4
    feed = {"feats": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
            "scale": np.full((3, 1), 2.0, np.float32)}
    got = make_runner(model, threads=1).run(feed)[0]
    np.testing.assert_allclose(got, torch_out(module, torch.from_numpy(feed["feats"]), torch.from_numpy(feed["scale"])))


def test_module_example_inputs_as_dict_and_errors():
    model = load(Tiny(), example_inputs={"scale": np.ones((1, 1), np.float32), "feats": np.zeros((1, 4), np.float32)})
    assert model.input_names == ["feats", "scale"]
    assert list(model.example_inputs) == ["feats", "scale"]  # reordered to forward's order
    with pytest.raises(SlimkitError, match=r"1 example inputs for 2 forward parameters \['feats', 'scale'\]"):
        load(Tiny(), example_inputs=torch.zeros(1, 4))
    with pytest.raises(SlimkitError, match=r"unknown inputs \['bogus'\]"):
        load(Tiny(), example_inputs={"feats": torch.zeros(1, 4), "scale": torch.ones(1, 1), "bogus": torch.zeros(1)})
    with pytest.raises(SlimkitError, match="cannot tell the shape of input 'feats'.*--shape feats="):
        load(Tiny())


def test_module_shapes_instead_of_examples_and_task():
    model = load(OneInput(), shapes={"feats": [2, 4]})
    assert model.example_inputs["feats"].shape == (2, 4) and model.task is None
    from slimkit.demo_models import DigitsMLP

    mlp = load(DigitsMLP())
    assert mlp.task == "classification" and mlp.input_names == ["x"]  # example_inputs() from the module


def test_load_passes_through_a_loaded_model(digits_mlp):
    model = load(digits_mlp)
    assert load(model) is model


# ---- package.module:factory ----

_COUNTER = itertools.count()

FACTORY_SOURCE = '''
from torch import nn

from slimkit.demo_models import DigitsMLP

built = []


def build():
    built.append(1)
    return DigitsMLP()


instance = DigitsMLP()


def not_a_model():
    return 42


class Plain(nn.Module):  # no example_inputs: its input shape must come from --shape or from the data
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, input):
        return self.fc(input)


def plain():
    return Plain()
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A fresh module file in tmp_path, importable from the cwd; removed from sys.modules afterwards."""
    name = f"slimkit_test_factory_{next(_COUNTER)}"
    (tmp_path / f"{name}.py").write_text(FACTORY_SOURCE)
    package = tmp_path / f"{name}_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(FACTORY_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader may add the cwd; undo that afterwards
    yield name
    for module in (name, f"{name}_pkg", f"{name}_pkg.nets"):
        sys.modules.pop(module, None)


def test_factory_function_class_and_instance(factory_module):
    model = load(f"{factory_module}:build")
    assert isinstance(model, TorchModel) and model.input_names == ["x"] and model.task == "classification"
    assert model.source == f"{factory_module}:build" and sys.modules[factory_module].built == [1]
    assert load(f"{factory_module}:DigitsMLP").input_names == ["x"]  # a class is instantiated
    instance = load(f"{factory_module}:instance")
    assert instance.module is sys.modules[factory_module].instance


def test_factory_in_a_package(factory_module):
    model = load(f"{factory_module}_pkg.nets:build")
    assert model.input_names == ["x"] and model.source == f"{factory_module}_pkg.nets:build"
    assert sys.modules[f"{factory_module}_pkg.nets"].built == [1]


def test_factory_with_safetensors_and_state_dict_weights(factory_module, digits_mlp, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in digits_mlp.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(digits_mlp.state_dict(), tmp_path / "w.pt")
    x, y = digits_arrays("test")
    expected = torch_out(digits_mlp, torch.from_numpy(x))
    for weights in ("w.safetensors", "w.pt"):
        model = load(f"{factory_module}:build", weights=tmp_path / weights)
        assert model.source_files == [tmp_path / weights]
        got = make_runner(model, threads=1).run({"x": x})[0]
        np.testing.assert_array_equal(got, expected)
        assert (got.argmax(1) == y).mean() >= 0.95


def test_weights_that_are_a_pickled_model_are_refused(factory_module, digits_mlp, tmp_path):
    torch.save(digits_mlp, tmp_path / "full_model.pt")  # the whole module pickled, not a state dict
    with pytest.raises(SlimkitError, match="full_model.pt is not a readable weights file"):
        load(f"{factory_module}:build", weights=tmp_path / "full_model.pt")


def test_weights_pickle_is_never_executed(factory_module, tmp_path):
    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"net.0.weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(SlimkitError, match="is not a readable weights file"):
        load(f"{factory_module}:build", weights=tmp_path / "evil.pt")
    assert not marker.exists()


def test_weights_that_do_not_fit(factory_module, tmp_path):
    from safetensors.torch import save_file

    save_file({"net.0.weight": torch.zeros(3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(SlimkitError, match="does not fit the model"):
        load(f"{factory_module}:build", weights=tmp_path / "bad.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(SlimkitError, match="does not hold a state dict"):
        load(f"{factory_module}:build", weights=tmp_path / "list.pt")
    with pytest.raises(SlimkitError, match="no such weights file"):
        load(f"{factory_module}:build", weights=tmp_path / "missing.safetensors")


def test_factory_errors(factory_module):
    with pytest.raises(SlimkitError, match="cannot import 'no_such_module_xyz'"):
        load("no_such_module_xyz:build")
    with pytest.raises(SlimkitError, match=f"module '{factory_module}' has no attribute 'nope'"):
        load(f"{factory_module}:nope")
    with pytest.raises(SlimkitError, match="did not return a torch nn.Module"):
        load(f"{factory_module}:not_a_model")


# ---- input shapes from the data ----


def test_factory_takes_its_input_shape_from_the_data(factory_module, tmp_path):
    """`pkg.mod:factory --weights w.safetensors --data train.npz` loads without --shape, at the data's shape."""
    from argparse import Namespace

    from safetensors.torch import save_file

    from slimkit.cli import _load

    ref = f"{factory_module}:plain"
    trained = load(ref, shapes={"input": [1, 64]}).module
    torch.nn.init.normal_(trained.fc.weight)  # differs from a fresh plain(): the weights file must be read
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "w.safetensors"))
    x, y = digits_arrays("test")
    np.savez(tmp_path / "train.npz", input=x[:50], labels=y[:50])

    with pytest.raises(SlimkitError, match="cannot tell the shape of input 'input'.*--shape input="):
        load(ref, weights=tmp_path / "w.safetensors")
    with pytest.raises(SlimkitError, match="the data has no array named 'input'"):
        np.savez(tmp_path / "other.npz", pixels=x[:5])
        load(ref, data=tmp_path / "other.npz")
    model = load(ref, weights=tmp_path / "w.safetensors", data=str(tmp_path / "train.npz"))
    assert model.input_names == ["input"] and model.example_inputs["input"].shape == (1, 64)
    assert [s.describe() for s in model.input_specs] == ["input: float32[batchx64]"]
    assert model.task is None and model.source_files == [tmp_path / "w.safetensors"]
    np.testing.assert_allclose(make_runner(model, threads=1).run({"input": x})[0],
                               torch_out(trained, torch.from_numpy(x)), atol=1e-5)  # the weights were loaded
    # the CLI passes --data on to the loader
    args = Namespace(data=str(tmp_path / "train.npz"), weights=str(tmp_path / "w.safetensors"), task=None, shape=None)
    assert _load(args, ref).example_inputs["input"].shape == (1, 64)
    args.shape = ["input=4x64"]  # an explicit --shape wins over the data
    assert _load(args, ref).example_inputs["input"].shape == (4, 64)


def test_explicit_shapes_win_and_fill_in_per_input(tmp_path):
    np.savez(tmp_path / "d.npz", feats=np.ones((9, 4), np.float32), scale=np.ones((9, 1), np.float32),
             y=np.zeros(9, np.int64))
    model = load(Tiny(), data=tmp_path / "d.npz")
    assert {k: tuple(v.shape) for k, v in model.example_inputs.items()} == {"feats": (1, 4), "scale": (1, 1)}
    model = load(Tiny(), data=tmp_path / "d.npz", shapes={"scale": [2, 1]})  # scale given, feats from the data
    assert {k: tuple(v.shape) for k, v in model.example_inputs.items()} == {"feats": (1, 4), "scale": (2, 1)}
    model = load(Tiny(), data=tmp_path / "d.npz", shapes={"feats": [3, 4], "scale": [3, 1]})
    assert {k: tuple(v.shape) for k, v in model.example_inputs.items()} == {"feats": (3, 4), "scale": (3, 1)}
    # an example the module gives itself is not replaced by the data's shape
    from slimkit.demo_models import DigitsMLP

    np.savez(tmp_path / "x.npz", x=np.ones((5, 64), np.float32))
    assert load(DigitsMLP(), data=tmp_path / "x.npz").example_inputs["x"].shape == (1, 64)
    np.savez(tmp_path / "x3.npz", x=np.ones((5, 3, 64), np.float32))
    assert load(DigitsMLP(), data=tmp_path / "x3.npz").example_inputs["x"].shape == (1, 64)


def test_torchscript_and_integer_inputs_take_shapes_from_a_npy_folder(tmp_path):
    module = OneInput().eval()
    torch.jit.trace(module, torch.randn(2, 4)).save(str(tmp_path / "traced.pt"))
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "feats.npy", np.ones((6, 4), np.float32))
    np.save(folder / "label.npy", np.zeros(6, np.int64))
    model = load(tmp_path / "traced.pt", data=folder)
    assert model.input_names == ["feats"] and model.example_inputs["feats"].shape == (1, 4)

    class Tokens(nn.Module):  # token ids index an embedding: a float example would not run
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 3)

        def forward(self, ids):
            return self.emb(ids).mean(1)

    np.savez(tmp_path / "ids.npz", ids=np.arange(12, dtype=np.int32).reshape(2, 6) % 10)
    model = load(Tokens(), data=tmp_path / "ids.npz")
    assert model.example_inputs["ids"].dtype == torch.int32 and model.example_inputs["ids"].shape == (1, 6)
    assert [s.describe() for s in model.input_specs] == ["ids: int32[batchx6]"]


def test_shapes_from_data_reads_headers_only(tmp_path):
    x = np.zeros((7, 3, 8, 8), np.float32)
    np.savez(tmp_path / "a.npz", image=x, mask=np.ones((7, 5), np.int64), labels=np.zeros(7, np.int64))
    np.savez_compressed(tmp_path / "c.npz", image=x, label=np.zeros(7))
    assert shapes_from_data(tmp_path / "a.npz") == {"image": [1, 3, 8, 8], "mask": [1, 5]}
    assert shapes_from_data(str(tmp_path / "c.npz")) == {"image": [1, 3, 8, 8]}
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "pixels.npy", np.zeros((4, 64), np.float32))
    np.save(folder / "y.npy", np.zeros(4, np.int64))
    assert shapes_from_data(folder) == {"pixels": [1, 64]}
    (tmp_path / "t.txt").write_text("one sentence\nanother one\n")
    for other in (tmp_path / "t.txt", "sklearn:digits", None, [{"x": np.zeros(3)}], tmp_path / "missing.npz",
                  tmp_path / "empty"):
        assert shapes_from_data(other) == {}, other
    (tmp_path / "bad.npz").write_bytes(b"PK not a zip")
    assert shapes_from_data(tmp_path / "bad.npz") == {}
    # an object array is skipped without unpickling it; the other arrays still count
    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    objects = np.empty(2, dtype=object)
    objects[:] = [Payload(), Payload()]
    np.savez(tmp_path / "obj.npz", evil=objects, feats=np.zeros((2, 4), np.float32))
    assert shapes_from_data(tmp_path / "obj.npz") == {"feats": [1, 4]}
    assert not marker.exists()


# ---- TorchScript and torch.export ----


def test_torchscript_file(tmp_path):
    module = OneInput().eval()
    torch.jit.trace(module, torch.randn(2, 4)).save(str(tmp_path / "traced.pt"))
    with pytest.raises(SlimkitError, match="cannot tell the shape of input 'feats'"):
        load(tmp_path / "traced.pt")
    model = load(tmp_path / "traced.pt", shapes={"feats": [1, 4]})
    assert model.input_names == ["feats"] and model.source_files == [tmp_path / "traced.pt"]
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(make_runner(model, 1).run({"feats": x})[0], torch_out(module, torch.from_numpy(x)),
                               atol=1e-6)
    # and it exports to ONNX with a dynamic batch
    result = get_pass("to-onnx")().run(model, Context(workdir=tmp_path / "work"))
    assert result.stats["dynamic_shapes"] is True and result.stats["max_abs_diff_vs_torch"] < 1e-5
    assert not isinstance(result.model.input_specs[0].shape[0], int)
    np.testing.assert_allclose(make_runner(result.model, 1).run({"feats": x})[0], torch_out(module, torch.from_numpy(x)),
                               atol=1e-5)


def test_state_dict_named_pt_is_not_torchscript(tmp_path):
    torch.save(OneInput().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(SlimkitError, match="is not a TorchScript file.*--weights"):
        load(tmp_path / "weights.pt")


def test_exported_program_dynamic_batch(tmp_path):
    module = OneInput().eval()
    program = torch.export.export(module, (torch.randn(2, 4),), dynamic_shapes={"feats": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(tmp_path / "prog.pt2"))
    model = load(tmp_path / "prog.pt2")
    assert model.input_names == ["feats"] and model.input_specs[0].shape == ("batch", 4)
    x = np.random.default_rng(2).standard_normal((7, 4)).astype(np.float32)
    np.testing.assert_allclose(make_runner(model, 1).run({"feats": x})[0], torch_out(module, torch.from_numpy(x)),
                               atol=1e-6)
    m = fast_evaluator(None, like=model, settings=MeasureSettings(batch_size=3)).measure(model)
    assert m.data["generated"] and m.batch_size == 3
    result = get_pass("to-onnx")().run(model, Context(workdir=tmp_path / "work"))
    assert result.stats["max_abs_diff_vs_torch"] < 1e-5
    np.testing.assert_allclose(make_runner(result.model, 1).run({"feats": x})[0], torch_out(module, torch.from_numpy(x)),
                               atol=1e-5)


def test_exported_program_static_shape(tmp_path):
    """A program exported without dynamic shapes keeps its example's batch: the signature says so."""
    module = OneInput().eval()
    torch.export.save(torch.export.export(module, (torch.randn(2, 4),)), str(tmp_path / "static.pt2"))
    model = load(tmp_path / "static.pt2")
    assert model.input_specs[0].shape == (2, 4)
    m = fast_evaluator(None, like=model, settings=MeasureSettings(batch_size=1)).measure(model)  # generated data follows the fixed batch
    assert m.batch_size == 2
    result = get_pass("to-onnx")().run(model, Context(workdir=tmp_path / "work"))
    assert result.model.input_specs[0].shape == (2, 4) and result.stats["max_abs_diff_vs_torch"] < 1e-5


def test_bad_pt2(tmp_path):
    (tmp_path / "bad.pt2").write_bytes(b"PK not really a zip")
    with pytest.raises(SlimkitError, match="is not a readable torch.export program"):
        load(tmp_path / "bad.pt2")


# ---- ONNX ----


def test_onnx_with_external_data(tmp_path, mlp_onnx_bytes, digits_mlp):
    proto = onnx.load_from_string(mlp_onnx_bytes)
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save_model(proto, str(folder / "mlp.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="mlp.onnx.data", size_threshold=0)
    main, data = folder / "mlp.onnx", folder / "mlp.onnx.data"
    assert data.stat().st_size > 200_000 > main.stat().st_size  # the weights really are outside
    model = load(main)
    assert isinstance(model, OnnxModel) and model.task == "classification"  # from slimkit's metadata
    assert model.files() == [main, data]
    assert model.size_bytes() == main.stat().st_size + data.stat().st_size
    reference = load(digits_mlp)
    m = fast_evaluator("sklearn:digits", reference=reference, like=model, settings=MeasureSettings(batch_size=64)).measure(model)
    assert m.metrics["accuracy"] >= 0.95 and m.fidelity["max_abs_err"] < 1e-4
    assert m.size_bytes == model.size_bytes() and m.params == reference.param_count()


def test_onnx_missing_external_data(tmp_path, mlp_onnx_bytes):
    onnx.save_model(onnx.load_from_string(mlp_onnx_bytes), str(tmp_path / "m.onnx"), save_as_external_data=True,
                    location="m.onnx.data", size_threshold=0)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(SlimkitError, match=r"external data file is missing \(m.onnx.data\)"):
        load(tmp_path / "m.onnx")


def test_foreign_onnx_built_by_hand(foreign_onnx, foreign_forward_fn, tmp_path):
    path, weights = foreign_onnx
    model = load(path)
    assert model.task is None and model.output_names == ["scores"]
    assert [s.describe() for s in model.input_specs] == ["features: float32[Nx4]"]  # initializers are not inputs
    assert model.param_count() == 4 * 8 + 8 + 8 * 3 + 3
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    expected = foreign_forward_fn(weights, x)
    labels = expected.argmax(1)
    labels[:10] = (labels[:10] + 1) % 3  # 10 of 40 wrong: accuracy must be exactly 0.75
    np.savez(tmp_path / "d.npz", features=x, labels=labels)
    np.testing.assert_allclose(make_runner(model, 1).run({"features": x})[0], expected, rtol=1e-5, atol=1e-5)
    m = evaluate(model, tmp_path / "d.npz", settings=MeasureSettings(batch_size=8))
    assert m.kind == "onnx" and m.runtime == "onnxruntime"
    assert m.metrics["accuracy"] == pytest.approx(0.75)
    assert m.data == {"source": str(tmp_path / "d.npz"), "samples": 40, "generated": False,
                      "labelled": True, "batch_size_requested": 8, "inputs": {"features": [8, 4]}}
    assert m.batch_size == 8 and m.latency_ms["p50"] > 0 and m.size_bytes == path.stat().st_size


def _onnx_package_squeezenet() -> Path | None:
    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    path = folder / "light_squeezenet.onnx"
    return path if path.exists() else None


@pytest.mark.skipif(_onnx_package_squeezenet() is None, reason="this onnx build ships no SqueezeNet test model")
def test_foreign_squeezenet_from_onnx_package(tmp_path):
    """SqueezeNet 1.0 from onnx's backend test data (opset 9, initializers listed as graph inputs)."""
    model = load(_onnx_package_squeezenet())
    assert [s.describe() for s in model.input_specs] == ["data_0: float32[1x3x224x224]"]
    assert sum(n.op_type == "Conv" for n in model.proto.graph.node) == 26
    out = make_runner(model, 1).run({"data_0": np.random.default_rng(0).random((1, 3, 224, 224), np.float32)})
    assert out[0].shape == (1, 1000, 1, 1)
    np.testing.assert_allclose(out[0].sum(), 1.0, rtol=1e-4)  # softmax output
    m = fast_evaluator(None, like=model).measure(model)
    assert m.data["generated"] and m.batch_size == 1 and m.size_bytes == _onnx_package_squeezenet().stat().st_size


def test_onnx_folder_with_one_model(tmp_path, foreign_onnx):
    path, _ = foreign_onnx
    model = load(path.parent)
    assert isinstance(model, OnnxModel) and model.path == path


# ---- bad input ----


def test_missing_path(tmp_path):
    with pytest.raises(SlimkitError, match="no such file or folder"):
        load(tmp_path / "nothing.onnx")


def test_empty_onnx(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(SlimkitError, match="empty.onnx is empty"):
        load(tmp_path / "empty.onnx")


def test_random_bytes_onnx(tmp_path):
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SlimkitError, match="random.onnx is not a valid ONNX model"):
        load(tmp_path / "random.onnx")


def test_truncated_onnx(tmp_path, mlp_onnx_bytes):
    (tmp_path / "cut.onnx").write_bytes(mlp_onnx_bytes[: len(mlp_onnx_bytes) // 2])
    with pytest.raises(SlimkitError, match="cut.onnx is not a valid ONNX model.*truncated"):
        load(tmp_path / "cut.onnx")


def test_onnx_with_op_ort_cannot_run(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example.custom")], "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.custom", 1)])
    proto.ir_version = 8
    onnx.save_model(proto, str(tmp_path / "custom.onnx"))
    with pytest.raises(SlimkitError, match="ONNX Runtime cannot run .*custom.onnx") as info:
        load(tmp_path / "custom.onnx")
    assert "supported ops" in str(info.value)
    assert load(tmp_path / "custom.onnx", check=False).input_specs[0].name == "x"  # check=False defers it


def test_hf_folder_with_only_pickle_weights(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(SlimkitError, match="only pickle weights.*safetensors"):
        load(folder)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(SlimkitError, match="has config.json but no .safetensors weights"):
        load(folder)


def test_tensorflow_saved_model_folder(tmp_path):
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(SlimkitError, match="is a TensorFlow SavedModel.*tf2onnx"):
        load(folder)


def test_unknown_suffix_and_weights_only_files(tmp_path):
    (tmp_path / "model.xyz").write_bytes(b"data")
    with pytest.raises(SlimkitError, match="unknown model file type '.xyz'"):
        load(tmp_path / "model.xyz")
    (tmp_path / "w.safetensors").write_bytes(b"data")
    with pytest.raises(SlimkitError, match="holds only weights, not a model.*--weights"):
        load(tmp_path / "w.safetensors")
    (tmp_path / "m.h5").write_bytes(b"data")
    with pytest.raises(SlimkitError, match="not a readable HDF5 file"):
        load(tmp_path / "m.h5")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SlimkitError, match="folder with no model slimkit recognizes"):
        load(tmp_path / "nothing")
