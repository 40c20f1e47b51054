"""In-memory data through the public API: a dict of arrays or tensors, a DataLoader; short model reprs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import slimkit
from slimkit.bundled_data import digits_arrays
from slimkit.data_sources import load_data
from slimkit.dataplan import plan_data
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.settings import MeasureSettings

N_EVAL = 120  # max_eval_samples: keeps each measurement quick


@pytest.fixture(scope="module")
def digits_test():
    x, y = digits_arrays(split="test", image=False)
    return x, y


def expected_accuracy(module, x, y) -> float:
    """The MLP's accuracy on the first N_EVAL samples, computed here without slimkit."""
    with torch.inference_mode():
        pred = module(torch.from_numpy(x[:N_EVAL])).argmax(1).numpy()
    return float(np.mean(pred == y[:N_EVAL]))


def accuracies(report: dict) -> dict[str, float]:
    return {m["label"]: m["metrics"]["accuracy"] for m in report["measurements"]}


def test_optimize_with_a_dict_of_arrays_matches_the_npz(digits_mlp, digits_test, tmp_path):
    x, y = digits_test
    (name,) = [s.name for s in load(digits_mlp).input_specs]
    np.savez(tmp_path / "eval.npz", **{name: x, "labels": y})
    from_npz = slimkit.optimize(digits_mlp, "fp16", data=tmp_path / "eval.npz", measure=True,
                                settings=MeasureSettings(max_samples=N_EVAL))
    data = {name: x, "labels": y}
    from_dict = slimkit.optimize(digits_mlp, "fp16", data=data, measure=True, settings=MeasureSettings(max_samples=N_EVAL))
    by_npz, by_dict = accuracies(from_npz.report), accuracies(from_dict.report)
    assert set(by_dict) == set(by_npz) and "fp16" in by_dict
    for label, value in by_npz.items():
        assert by_dict[label] == pytest.approx(value, abs=1e-9)
    assert by_dict["original"] == pytest.approx(expected_accuracy(digits_mlp, x, y), abs=1e-9)
    assert all(m["metrics"]["accuracy_samples"] == N_EVAL for m in from_dict.report["measurements"])
    assert from_dict.report["data"]["evaluate"] == "data dict"
    assert set(data) == {name, "labels"}  # the caller's dict is left as it was


def test_bench_with_a_dataloader_gives_the_same_accuracy(digits_mlp, digits_test, tmp_path):
    x, y = digits_test
    np.savez(tmp_path / "eval.npz", x=x, labels=y)
    from_npz = slimkit.bench([digits_mlp], data=tmp_path / "eval.npz", settings=MeasureSettings(max_samples=N_EVAL))[0]
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=32)
    from_loader = slimkit.bench([digits_mlp], data=loader, settings=MeasureSettings(max_samples=N_EVAL))[0]
    assert from_loader.metrics["accuracy"] == pytest.approx(from_npz.metrics["accuracy"], abs=1e-9)
    assert from_loader.metrics["accuracy"] == pytest.approx(expected_accuracy(digits_mlp, x, y), abs=1e-9)
    assert from_loader.metrics["accuracy_samples"] == N_EVAL
    # Torch tensors in a dict (with grad) are read like arrays.
    tensors = {"x": torch.from_numpy(x).requires_grad_(), "labels": torch.from_numpy(y)}
    from_tensors = slimkit.bench([digits_mlp], data=tensors, settings=MeasureSettings(max_samples=N_EVAL))[0]
    assert from_tensors.metrics["accuracy"] == pytest.approx(from_npz.metrics["accuracy"], abs=1e-9)


def test_dataloader_batch_forms(digits_mlp, digits_test):
    x, y = digits_test
    model = load(digits_mlp)
    tx, ty = torch.from_numpy(x[:40]), torch.from_numpy(y[:40])
    pairs = load_data(DataLoader(TensorDataset(tx, ty), batch_size=16), model, batch_size=8)
    arrays, labels = pairs.arrays()
    assert np.array_equal(arrays["x"], x[:40]) and np.array_equal(labels, y[:40])
    assert [b.size for b in pairs] == [8] * 5
    inputs_only = load_data(DataLoader(TensorDataset(tx), batch_size=16), model)
    assert inputs_only.num_samples == 40 and not inputs_only.has_labels
    per_sample = load_data(DataLoader(TensorDataset(tx, ty), batch_size=None), model)  # no batch axis
    assert np.array_equal(per_sample.arrays()[1], y[:40])
    dicts = DataLoader([{"x": tx[i], "labels": int(ty[i])} for i in range(40)], batch_size=16)
    assert np.array_equal(load_data(dicts, model).arrays()[0]["x"], x[:40])
    with pytest.raises(SlimkitError, match=r"tuple of 3 tensors but the model takes inputs \['x'\]"):
        load_data(DataLoader(TensorDataset(tx, ty, ty), batch_size=16), model)


def test_a_wrong_key_is_refused_naming_the_inputs(digits_mlp, digits_test):
    x, y = digits_test
    with pytest.raises(SlimkitError) as info:
        slimkit.bench([digits_mlp], data={"pixels": x, "labels": y})
    message = str(info.value)
    assert "no array for input 'x'" in message and "['pixels']" in message
    assert "name the arrays after the model inputs ['x']" in message and "\n" not in message
    with pytest.raises(SlimkitError, match=r"the model inputs \['x'\]"):
        load_data(DataLoader([{"pixels": torch.zeros(64)}] * 4, batch_size=2), load(digits_mlp))


def test_zero_samples_are_refused_clearly(digits_mlp, tmp_path):
    model = load(digits_mlp)
    empty = np.zeros((0, 64), np.float32)
    np.savez(tmp_path / "empty.npz", x=empty)
    for source in ({"x": empty}, {"x": empty, "labels": np.zeros(0, np.int64)}, tmp_path / "empty.npz",
                   DataLoader(TensorDataset(torch.from_numpy(empty)), batch_size=4)):
        with pytest.raises(SlimkitError, match="holds no samples"):
            load_data(source, model)
    with pytest.raises(SlimkitError, match="data dict holds no samples"):
        slimkit.bench([digits_mlp], data={"x": empty})


def test_a_training_recipe_splits_a_dict_and_a_shuffling_loader(digits_mlp, digits_test):
    x, y = digits_test
    model = load(digits_mlp)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=50, shuffle=True)
    for pool in ({"x": x, "labels": y}, loader):
        plan = plan_data(model, {"train"}, data=pool)
        assert plan.split["stratified"] and (plan.split["train"], plan.split["validation"]) == (360, 90)
        train = load_data(plan.train, model, batch_size=64).arrays()
        val = load_data(plan.select, model, batch_size=64).arrays()
        assert len(train[1]) == 360 and len(val[1]) == 90
        # the parts are disjoint and together the whole pool, however often the loader is read
        rows = {r.tobytes() for r in np.concatenate([train[0]["x"], val[0]["x"]])}
        assert len(rows) == len({r.tobytes() for r in x}) and not (
            {r.tobytes() for r in train[0]["x"]} & {r.tobytes() for r in val[0]["x"]})
        assert np.array_equal(load_data(plan.train, model, batch_size=64).arrays()[0]["x"], train[0]["x"])
        assert abs(np.bincount(val[1], minlength=10) - np.bincount(y, minlength=10) * 0.2).max() <= 1


class NoExamples(nn.Module):
    """Says nothing about its input's shape: loading takes it from the data."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, features):
        return self.fc(features)


def test_input_shape_from_a_dict_when_the_module_has_no_examples():
    model = load(NoExamples(), data={"features": torch.zeros(5, 64), "labels": np.zeros(5, np.int64)})
    assert [(s.name, s.dtype, s.shape) for s in model.input_specs] == [("features", "float32", ("batch", 64))]


def test_repr_is_one_short_line(digits_mlp, digits_cnn, mlp_onnx_bytes, tmp_path):
    mlp = load(digits_mlp)
    text = repr(mlp)
    assert "tensor(" not in text and "\n" not in text and len(text) < 300
    assert text.startswith("TorchModel(") and "task='classification'" in text
    assert "x: float32[batch x 64]" in text and "params=50,610" in text
    assert "image: float32[batch x 1 x 8 x 8]" in repr(load(digits_cnn))
    (tmp_path / "m.onnx").write_bytes(mlp_onnx_bytes)
    onnx_text = repr(load(tmp_path / "m.onnx"))
    assert onnx_text.startswith("OnnxModel(") and "x: float32[batch x 64]" in onnx_text
    assert "graph" not in onnx_text and len(onnx_text) < 300 and "m.onnx" in onnx_text
