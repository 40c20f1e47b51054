"""Structured pruning (slimkit.pruning / the prune-structured pass) on real small models: shapes really
shrink, MACs drop, dependencies (BN, residual adds, attention heads) stay consistent, exports run in ORT."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import slimkit.passes.prune_structured  # noqa: F401  (registers the pass until it is a builtin)
from slimkit.demo_models import digits_accuracy, minilm_path, sentences
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.passes.base import Context, get_pass
from slimkit.pipeline import load_recipe, run_pipeline
from slimkit.pruning import count_macs, prune_structured

transformers = pytest.importorskip("transformers")


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def ort_run(path, feed: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: np.asarray(v) for k, v in feed.items()})


def export(module: nn.Module, example: dict, path) -> None:
    names = list(example)
    torch.onnx.export(module, (), str(path), kwargs=example, input_names=names, dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in names})


# ---- digits CNN: channels


def test_digits_cnn_channels_pass_shrinks_and_exports(digits_cnn, tmp_path):
    model = load(digits_cnn, task="classification")
    acc_before = digits_accuracy(model.module, image=True)
    result = get_pass("prune-structured")({"ratio": 0.5, "target": "channels"}).run(model, Context(workdir=tmp_path))
    pruned = result.model.module
    stats = result.stats
    conv1, bn1, conv2, bn2 = pruned.features[0], pruned.features[1], pruned.features[3], pruned.features[4]
    assert conv1.weight.shape == (16, 1, 3, 3) and conv2.weight.shape == (32, 16, 3, 3)
    assert bn1.num_features == 16 and bn1.running_mean.shape == (16,) and bn2.weight.shape == (32,)
    assert pruned.head[1].in_features == 32 * 16 and pruned.head[3].out_features == 10  # flatten + classes kept
    assert model.module.features[0].out_channels == 32  # the input model is untouched
    assert stats["macs_after"] < 0.5 * stats["macs_before"] and stats["params_after"] < stats["params_before"]
    kept = {x["layer"]: (x["kept"], x["total"]) for x in stats["per_layer"]}
    assert kept["features.0"] == (16, 32) and "head.3" not in kept
    acc_after = digits_accuracy(pruned, image=True)
    # Without fine-tuning, half the channels by L2 norm keep 0.87 (this seed-0 CNN; 0.88 / 0.83 for seeds 1 / 2).
    # Plausible bugs measured on the same three CNNs: dropping the largest-norm channels 0.10-0.16, BN stats
    # left on the wrong channels 0.25-0.50, BN stats reset 0.09-0.36, the next conv's input channels
    # misaligned 0.07-0.28.
    assert 0.7 < acc_after <= 1.0 and acc_before > 0.95, (acc_before, acc_after)

    onnx_model = run_pipeline(result.model, load_recipe("onnx"), Context(workdir=tmp_path / "onnx")).model
    feed = {"image": np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)}
    got = ort_run(onnx_model.path, feed)[0]
    want = pruned(torch.from_numpy(feed["image"])).detach().numpy()
    assert got.shape == (4, 10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_target_flop_reduction_lands_near_goal(digits_cnn):
    example = {"image": torch.zeros(1, 1, 8, 8)}
    stats = prune_structured(digits_cnn, example, target_flop_reduction=0.5)
    assert abs(stats["mac_reduction"] - 0.5) < 0.03, stats["search"]
    macs, _ = count_macs(digits_cnn, example)
    assert macs == stats["macs_after"]


# ---- residual net: both branches of the add stay consistent


class ResNetTiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                    nn.Conv2d(32, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.branch(x))
        return self.fc(x.mean((2, 3)))


def test_residual_branches_stay_consistent():
    torch.manual_seed(0)
    net = ResNetTiny().eval()
    example = {"x": torch.randn(2, 3, 8, 8)}
    stats = prune_structured(net, example, ratio=0.5)
    skip = net.stem[0].out_channels
    assert skip == 8 and net.branch[3].out_channels == skip and net.branch[4].num_features == skip  # add agrees
    assert net.branch[0].in_channels == skip and net.fc.in_features == skip
    assert net.branch[0].out_channels == 16 and net.branch[3].in_channels == 16  # inner width halved
    assert net.fc.out_features == 5
    assert net(**example).shape == (2, 5)
    assert stats["macs_after"] < stats["macs_before"]


# ---- tiny BERT built from a config: heads / mlp


def tiny_bert():
    from slimkit.models.wrappers import SentenceEmbedder

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                  num_hidden_layers=2, vocab_size=100)
    model = SentenceEmbedder(transformers.BertModel(cfg, add_pooling_layer=False), normalize=False).eval()
    example = {"input_ids": torch.randint(1, 100, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    return model, example


def test_bert_heads_pruned_and_export_runs(tmp_path):
    model, example = tiny_bert()
    stats = prune_structured(model, example, ratio=0.5, target="heads")
    for layer in model.encoder.encoder.layer:
        attn = layer.attention.self
        assert attn.num_attention_heads == 2 and attn.all_head_size == 32
        assert attn.query.out_features == attn.key.out_features == attn.value.out_features == 32
        assert layer.attention.output.dense.in_features == 32 and layer.attention.output.dense.out_features == 64
        assert layer.intermediate.dense.out_features == 128  # FFN untouched
    assert [x["kept"] for x in stats["per_layer"]] == [2, 2]
    with torch.no_grad():
        out = model(**example)
    assert out.shape == (2, 64)
    export(model, example, tmp_path / "heads.onnx")
    got = ort_run(tmp_path / "heads.onnx", example)[0]
    np.testing.assert_allclose(got, out.numpy(), rtol=1e-4, atol=1e-4)


def test_bert_mlp_halves_intermediate():
    model, example = tiny_bert()
    reference = copy.deepcopy(model)
    stats = prune_structured(model, example, ratio=0.5, target="mlp")
    for layer in model.encoder.encoder.layer:
        assert layer.intermediate.dense.out_features == 64 and layer.output.dense.in_features == 64
        assert layer.attention.self.num_attention_heads == 4
    assert stats["mac_reduction"] > 0.2
    with torch.no_grad():
        out, ref = model(**example), reference(**example)
    assert out.shape == ref.shape and not torch.allclose(out, ref)


def test_bert_channels_refused():
    model, example = tiny_bert()
    with pytest.raises(SlimkitError, match="hidden width"):
        prune_structured(model, example, ratio=0.5, target="channels")


# ---- activation importance vs weight norm


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc1.bias.zero_()
            self.fc1.weight.copy_(torch.tensor([[9.0, 0, 0, 0],  # huge weights on an input that is always 0
                                                [0, 1.0, 0, 0], [0, 0, 0.8, 0], [0, 0, 0, 0.6]]))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_activation_importance_prunes_dead_unit_first():
    torch.manual_seed(0)
    batches = [{"x": torch.cat([torch.zeros(16, 1), torch.rand(16, 3) + 0.5], 1)} for _ in range(3)]
    example = batches[0]
    by_norm, by_act = TwoLayer(), TwoLayer()
    prune_structured(by_norm, example, ratio=0.25, importance="l2")
    prune_structured(by_act, example, ratio=0.25, importance="activation", data=batches)
    assert by_norm.fc1.out_features == by_act.fc1.out_features == 3
    # weight norm keeps the big-weight unit (drops the 0.6 one); activation drops the dead unit instead
    assert torch.any(by_norm.fc1.weight.abs() == 9.0)
    assert not torch.any(by_act.fc1.weight.abs() == 9.0) and torch.any(by_act.fc1.weight.abs() == 0.6)
    x = example["x"]
    assert torch.allclose(by_act(x), TwoLayer()(x), atol=1e-6)  # the dead unit contributed nothing


# ---- bad inputs


def test_bad_inputs_name_the_problem(digits_cnn):
    example = {"image": torch.zeros(1, 1, 8, 8)}
    with pytest.raises(SlimkitError, match=r"pruning ratio 1.2 is outside \[0, 1\)"):
        prune_structured(digits_cnn, example, ratio=1.2)
    with pytest.raises(SlimkitError, match="'nothing.*' matches no layer") as err:
        prune_structured(digits_cnn, example, ratio=0.5, ignore=["nothing.*"])
    assert "features.0" in str(err.value)
    with pytest.raises(SlimkitError, match="target 'heads' matches nothing") as err:
        prune_structured(digits_cnn, example, ratio=0.5, target="heads")
    assert "head.1" in str(err.value)
    with pytest.raises(SlimkitError, match="'head.3' produces the model output"):
        prune_structured(digits_cnn, example, ratio=0.5, layers=["head.3"])
    with pytest.raises(SlimkitError, match="needs calibration data"):
        prune_structured(digits_cnn, example, ratio=0.5, importance="activation")
    assert digits_cnn.features[0].out_channels == 32  # nothing was changed by the refused calls


class HardcodedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 512))  # a size torch-pruning cannot rewrite


def test_untraceable_reshape_names_the_layer():
    with pytest.raises(SlimkitError, match="no longer runs.*conv") as err:
        prune_structured(HardcodedView().eval(), {"x": torch.zeros(2, 1, 8, 8)}, ratio=0.5)
    assert "ignore" in str(err.value)
    net = HardcodedView().eval()  # ignoring it is the way out
    with pytest.raises(SlimkitError, match="matches nothing"):
        prune_structured(net, {"x": torch.zeros(2, 1, 8, 8)}, ratio=0.5, ignore=["conv"])


def test_pass_activation_without_data(digits_cnn):
    model = load(digits_cnn, task="classification")
    with pytest.raises(SlimkitError, match="needs calibration data"):
        get_pass("prune-structured")({"importance": "activation"}).run(model, Context())
    with pytest.raises(SlimkitError, match="unknown key"):
        get_pass("prune-structured")({"sparsity": 0.5})


# ---- the real all-MiniLM-L6-v2 (slow)


@pytest.mark.skipif(minilm_path() is None, reason="all-MiniLM-L6-v2 is not installed")
def test_minilm_half_macs_keeps_embedding_dim_and_exports(tmp_path):
    model = load(minilm_path())
    result = get_pass("prune-structured")({"target": "all", "target_flop_reduction": 0.5}).run(
        model, Context(workdir=tmp_path))
    stats = result.stats
    assert abs(stats["mac_reduction"] - 0.5) < 0.03
    heads = [x["kept"] for x in stats["per_layer"] if x["unit"] == "head"]
    assert len(heads) == 6 and all(h < 12 for h in heads)
    onnx_model = run_pipeline(result.model, load_recipe("onnx"), Context(workdir=tmp_path / "onnx")).model
    feed = {k: np.asarray(v) for k, v in model.example_inputs.items()}
    pruned = ort_run(onnx_model.path, feed)[0]
    with torch.no_grad():
        original = model.module(**{k: torch.as_tensor(v) for k, v in feed.items()}).numpy()
    assert pruned.shape == original.shape and pruned.shape[-1] == 384
    # Still related to the original embeddings without any fine-tuning: measured 0.68 on the example and
    # 0.52 mean over 32 real sentences. Units misaligned after pruning (attention output, FFN down projection
    # or value rows paired with the wrong units) give at most 0.38 on the example and 0.25 on the sentences.
    assert float(row_cosines(pruned, original).mean()) > 0.55
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_path()))
    enc = tokenizer(sentences("eval", 32), padding=True, truncation=True, max_length=64, return_tensors="pt")
    batch = {k: enc[k] for k in model.input_names}
    with torch.no_grad():
        cos = row_cosines(result.model.module(**batch).numpy(), model.module(**batch).numpy())
    assert float(cos.mean()) > 0.42, cos
