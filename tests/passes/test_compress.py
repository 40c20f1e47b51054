"""Weight sharing (cluster) and low-rank factorization passes on real models, ONNX and PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from slimkit.bundled_data import digits_arrays
from slimkit.data_sources import text_data
from slimkit.demo_models import sentences, trained_digits_model
from slimkit.errors import SlimkitError
from slimkit.evaluate.measure import Evaluator
from slimkit.formats import load
from slimkit.formats.onnx import OrtRunner
from slimkit.formats.openvino import OpenVinoRunner
from slimkit.models.base import OnnxModel
from slimkit.passes.base import Context, get_pass
from slimkit.pipeline import load_recipe, run_pipeline
from slimkit.settings import MeasureSettings


@pytest.fixture(scope="module")
def digits(digits_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    out = {}
    for name in ("mlp", "cnn"):
        torch_model = load(trained_digits_model(name, digits_cache), task="classification")
        onnx_model = run_pipeline(torch_model, load_recipe("onnx"), Context(workdir=root / name)).model
        out[name] = (torch_model, onnx_model)
    return out


def evaluate(original, candidate, batch_size=32):
    ev = Evaluator("sklearn:digits", reference=original, like=original, settings=MeasureSettings(batch_size=batch_size), latency_rounds=3,
                   round_runs=2, round_seconds=0.0)
    return ev.measure(original), ev.measure(candidate)


def distinct_weights(model: OnnxModel) -> dict[str, int]:
    """Distinct values of each float weight as ONNX Runtime sees them after constant folding."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    folded = model.path.parent / "folded.onnx"
    opts.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
    proto = onnx.load(str(folded))
    return {t.name: len(np.unique(onnx.numpy_helper.to_array(t))) for t in proto.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2}


@pytest.mark.parametrize("k", [16, 256])
def test_onnx_cluster_shrinks_file_and_keeps_accuracy(digits, k, tmp_path):
    _, model = digits["mlp"]
    result = get_pass("cluster")({"k": k, "min_params": 1000}).run(model, Context(workdir=tmp_path))
    clustered = result.model
    stats = result.stats
    assert stats["layers"] == 3 and stats["index_bits"] == (4 if k == 16 else 8)
    ratio = stats["file_bytes_after"] / stats["file_bytes_before"]
    assert ratio < (0.17 if k == 16 else 0.30)
    assert stats["gzip_bytes_after"] < stats["gzip_bytes_before"]
    assert all(n <= k for n in distinct_weights(clustered).values())  # the folded weights really are shared
    original, measured = evaluate(model, clustered)
    assert measured.metrics["accuracy"] >= original.metrics["accuracy"] - (0.01 if k == 256 else 0.03)
    ov = OpenVinoRunner(_to_openvino(clustered, tmp_path), threads=2)
    feed = {"x": digits_arrays("test")[0][:8]}
    assert np.abs(ov.run(feed)[0] - OrtRunner(clustered, 2).run(feed)[0]).max() < 1e-4


def _to_openvino(model, tmp_path):
    return get_pass("to-openvino")().run(model, Context(workdir=tmp_path / "ov")).model


def test_torch_cluster_shares_values_and_leaves_input_alone(digits, tmp_path):
    torch_model, _ = digits["cnn"]
    before = {k: v.clone() for k, v in torch_model.module.state_dict().items()}
    result = get_pass("cluster")({"k": 16, "min_params": 1000}).run(torch_model, Context(workdir=tmp_path))
    clustered = [layer["weight"] for layer in result.stats["per_layer"]]
    assert len(clustered) == result.stats["layers"] >= 2
    for name in clustered:
        assert torch.unique(result.model.module.get_parameter(name)).numel() <= 16
    assert all(torch.equal(before[k], v) for k, v in torch_model.module.state_dict().items())
    original, measured = evaluate(torch_model, result.model)
    assert measured.metrics["accuracy"] >= original.metrics["accuracy"] - 0.03


def test_cluster_bad_input(digits, tmp_path):
    _, model = digits["mlp"]
    with pytest.raises(SlimkitError, match=r"pass 'cluster': k=300 needs more than the 8-bit indices allow"):
        get_pass("cluster")({"k": 300})  # refused with its config, before any run
    with pytest.raises(SlimkitError, match="matches no weight"):
        get_pass("cluster")({"include": ["*nothing*"]}).run(model, Context(workdir=tmp_path))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_onnx_svd_halves_params(digits, name, tmp_path):
    _, model = digits[name]
    result = get_pass("factorize")({"ratio": 0.5, "min_params": 1000}).run(model, Context(workdir=tmp_path))
    stats = result.stats
    assert stats["layers"] >= 2 and stats["flop_ratio"] <= 0.5 + 1e-9
    assert all(layer["rank"] * sum(layer["shape"][:2]) <= layer["params_before"] for layer in stats["per_layer"]
               if layer["op"] == "MatMul")
    original, measured = evaluate(model, result.model)
    # half the parameters without fine-tuning changes the outputs, but keeps most of the signal
    assert 0.5 < measured.fidelity["cosine_mean"] < 0.9999
    ov = OpenVinoRunner(_to_openvino(result.model, tmp_path), threads=2)
    x = digits_arrays("test", image=name == "cnn")[0][:4]
    feed = {"x" if name == "mlp" else "image": x}
    assert np.abs(ov.run(feed)[0] - OrtRunner(result.model, 2).run(feed)[0]).max() < 1e-3


class LowRankNet(torch.nn.Module):
    """A Linear whose weight has rank 8 exactly, then a Conv whose [O, I*k*k] weight has rank 4."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = torch.nn.Linear(96, 256)
        self.conv = torch.nn.Conv2d(4, 64, 3, padding=1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(256, 8, generator=g) @ torch.randn(8, 96, generator=g))
            self.conv.weight.copy_((torch.randn(64, 4, generator=g) @ torch.randn(4, 36, generator=g)).reshape(64, 4, 3, 3))

    def forward(self, x):
        return self.conv(self.fc(x).reshape(-1, 4, 8, 8))


def test_svd_energy_recovers_exact_low_rank_in_torch_and_onnx(tmp_path):
    net = LowRankNet().eval()
    t = load(net, example_inputs=(torch.randn(2, 96),))
    x = torch.randn(5, 96)
    cfg = {"energy": 0.99999, "min_params": 1000}
    torch_result = get_pass("factorize")(cfg).run(t, Context(workdir=tmp_path / "t"))
    assert {r["layer"]: r["rank"] for r in torch_result.stats["per_layer"]} == {"fc": 8, "conv": 4}
    with torch.inference_mode():
        expected = net(x)
        scale = float(expected.abs().max())
        assert float((torch_result.model.module(x) - expected).abs().max()) < 1e-5 * scale
    onnx_model = run_pipeline(t, load_recipe("onnx"), Context(workdir=tmp_path / "o")).model
    onnx_result = get_pass("factorize")(cfg).run(onnx_model, Context(workdir=tmp_path / "f"))
    assert sorted(r["rank"] for r in onnx_result.stats["per_layer"]) == [4, 8]
    assert sum(n.op_type == "Conv" for n in onnx_result.model.proto.graph.node) == 2
    out = OrtRunner(onnx_result.model, 2).run({t.input_names[0]: x.numpy()})[0]
    assert np.abs(out - expected.numpy()).max() < 1e-5 * scale


def test_nmf_only_takes_nonnegative_weights(digits, tmp_path):
    torch_model, model = digits["mlp"]
    result = get_pass("factorize")({"method": "nmf", "ratio": 0.5, "min_params": 1000}).run(
        model, Context(workdir=tmp_path))
    assert result.stats["layers"] == 0
    assert result.outcome.is_skipped and "non-negative" in result.outcome.reason
    assert result.model is model  # nothing to do: the model is returned unchanged
    relu_fed = trained_digits_model("mlp", None)
    with torch.no_grad():
        relu_fed.net[2].weight.abs_()  # a non-negative layer, like weights constrained after ReLU
    t = load(relu_fed, task="classification")
    nmf = get_pass("factorize")({"method": "nmf", "rank": 40, "min_params": 1000}).run(t, Context(workdir=tmp_path))
    assert nmf.stats["layers"] == 1 and nmf.stats["per_layer"][0]["layer"] == "net.2"
    assert nmf.stats["per_layer"][0]["rel_error"] < 0.6
    factors = [p for n, p in nmf.model.module.named_parameters() if n.startswith("net.2") and n.endswith("weight")]
    assert len(factors) == 2 and all((p >= 0).all() for p in factors)


def test_factorize_bad_rank(digits, tmp_path):
    _, model = digits["mlp"]
    with pytest.raises(SlimkitError, match="too large"):
        get_pass("factorize")({"rank": 5000, "min_params": 1000}).run(model, Context(workdir=tmp_path))
    with pytest.raises(SlimkitError, match="only one of"):
        get_pass("factorize")({"rank": 8, "ratio": 0.5}).run(model, Context(workdir=tmp_path))


def test_cluster_minilm_embeddings_included(minilm_onnx, tmp_path):
    model = minilm_onnx.model
    result = get_pass("cluster")({"k": 256}).run(model, Context(workdir=tmp_path))
    assert any("word_embeddings" in layer["weight"] for layer in result.stats["per_layer"])
    assert result.stats["file_bytes_after"] <= 0.30 * result.stats["file_bytes_before"]
    data = text_data(sentences("eval", 16), model, batch_size=8, seq_len=64)
    ev = Evaluator(data, reference=model, like=model, latency_rounds=2, round_runs=2, round_seconds=0.0)
    assert ev.measure(result.model, latency=False).fidelity["cosine_mean"] >= 0.995


def test_cluster_refuses_nan_weights_with_one_line(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    w[3, 5] = np.nan
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "nan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = load(path)
    with pytest.raises(SlimkitError, match="weight 'w'.*NaN"):
        get_pass("cluster")({"k": 16}).run(model, Context(workdir=tmp_path / "w"))


def test_data_aware_rank_search_meets_layer_cosine(digits, tmp_path):
    """min_cosine picks, per layer, the smallest rank whose outputs on real inputs keep that cosine."""
    from slimkit.algorithms.lowrank import rank_for_output_cosine

    torch_model, onnx_model = digits["mlp"]
    ctx = Context(data="sklearn:digits", workdir=tmp_path)
    loose = get_pass("factorize")({"min_cosine": 0.95, "min_params": 1000}).run(onnx_model, ctx)
    strict = get_pass("factorize")({"min_cosine": 0.995, "min_params": 1000}).run(onnx_model, ctx)
    loose_ranks = {r["layer"]: r["rank"] for r in loose.stats["per_layer"]}
    strict_ranks = {r["layer"]: r["rank"] for r in strict.stats["per_layer"]}
    assert loose_ranks and all(loose_ranks[k] <= strict_ranks.get(k, 10**9) for k in loose_ranks)
    assert sum(loose_ranks.values()) < sum(strict_ranks.values()) or len(strict_ranks) < len(loose_ranks)
    # the same search in PyTorch (inputs captured with hooks) chooses the same ranks as in ONNX
    torch_ranks = get_pass("factorize")({"min_cosine": 0.95, "min_params": 1000}).run(torch_model, ctx).stats
    assert sorted(r["rank"] for r in torch_ranks["per_layer"]) == sorted(loose_ranks.values())
    # the numeric rule itself: the chosen rank meets the target and one less does not
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 48)) @ np.diag(np.linspace(1, 0.01, 48)) @ rng.standard_normal((48, 48))
    x = rng.standard_normal((200, 64))
    r = rank_for_output_cosine(w, x, 0.99, max_rank=47)
    u, sv, vt = np.linalg.svd(w, full_matrices=False)

    def mean_cos(rank):
        ref, approx = x @ w, (x @ u[:, :rank] * sv[:rank]) @ vt[:rank]
        return float(np.mean((ref * approx).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(approx, axis=1)))

    assert 0 < r < 47 and mean_cos(r) >= 0.99 > mean_cos(r - 1)
    with pytest.raises(SlimkitError, match="need data"):
        get_pass("factorize")({"min_cosine": 0.95}).run(onnx_model, Context(workdir=tmp_path / "nodata"))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_per_channel_codebooks_onnx_matches_torch_and_beats_per_tensor(digits, name, tmp_path):
    torch_model, onnx_model = digits[name]
    cfg = {"k": 4, "min_params": 1000}
    errors = {}
    for per_channel in (False, True):
        result = get_pass("cluster")({**cfg, "per_channel": per_channel}).run(
            onnx_model, Context(workdir=tmp_path / f"o{per_channel}"))
        errors[per_channel] = sum(layer["mse"] * layer["params"] for layer in result.stats["per_layer"])
        original, measured = evaluate(onnx_model, result.model)
        assert measured.fidelity["cosine_mean"] > 0.5
    assert errors[True] < errors[False]  # a codebook per channel fits better than one per tensor
    # PyTorch per-channel clustering gives the same function as the ONNX one (same weights, same K)
    t_result = get_pass("cluster")({**cfg, "per_channel": True}).run(torch_model,
                                                                      Context(workdir=tmp_path / "t"))
    t = t_result.model
    o = get_pass("cluster")({**cfg, "per_channel": True}).run(onnx_model, Context(workdir=tmp_path / "o2")).model
    x = digits_arrays("test", image=name == "cnn")[0][:16]
    with torch.inference_mode():
        expected = t.module(torch.from_numpy(x)).numpy()
    got = OrtRunner(o, 2).run({onnx_model.input_specs[0].name: x})[0]
    assert np.abs(expected - got).max() < 1e-3 * max(1.0, float(np.abs(expected).max()))
    for param_name in [layer["weight"] for layer in t_result.stats["per_layer"]]:
        w = t.module.get_parameter(param_name).detach().reshape(t.module.get_parameter(param_name).shape[0], -1)
        assert all(torch.unique(row).numel() <= 4 for row in w)
