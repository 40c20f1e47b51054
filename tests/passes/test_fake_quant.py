"""The fake-quant pass on the trained digits MLP and CNN: accuracy, calibration, isolation, ONNX QDQ export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from slimkit.algorithms.quant import (
    QuantScheme,
    compute_qparams,
    dequantize,
    fake_quantize,
    quantization_error,
    quantize,
)
from slimkit.bundled_data import digits_arrays
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.models.base import OnnxModel, TorchModel
from slimkit.passes.base import Context, get_pass
from slimkit.passes.fake_quant import FakeQuantizer, FakeQuantLayer, fake_quantize_module
from slimkit.passes.quantize import cpu_has_vnni

LAYERS = {"mlp": ["net.0", "net.2", "net.4"], "cnn": ["features.0", "features.3", "head.1", "head.3"]}


@pytest.fixture(params=["mlp", "cnn"])
def digits(request):
    """(name, TorchModel) of a freshly loaded trained digits model."""
    module = request.getfixturevalue(f"digits_{request.param}")
    return request.param, load(module)


def eval_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits test split, shaped for the model."""
    return digits_arrays("test", image=(name == "cnn"))


def outputs(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def accuracy(module: nn.Module, name: str) -> float:
    x, y = eval_data(name)
    return float((outputs(module, x).argmax(1) == y).mean())


def fake_quant(model: TorchModel, data=None, **config):
    return get_pass("fake-quant")(config).run(model, Context(data=data))


# ---- accuracy and error ----


def test_8bit_per_channel_weights_keep_accuracy(digits):
    name, model = digits
    result = fake_quant(model, bits=8, granularity="channel")
    assert result.stats["quantized"] == LAYERS[name] and result.stats["not_quantized"] == {}
    assert not result.outcome.is_skipped and "skipped" not in result.stats  # no "skipped: []" in the report
    assert result.stats["params_quantized"] == sum(
        m.weight.numel() for m in model.module.modules() if isinstance(m, nn.Linear | nn.Conv2d))
    assert result.stats["mean_weight_sqnr_db"] > 35
    assert accuracy(result.model.module, name) >= accuracy(model.module, name) - 0.01
    wrapped = [n for n, m in result.model.module.named_modules() if isinstance(m, FakeQuantLayer)]
    assert wrapped == LAYERS[name]


def test_4bit_per_tensor_is_worse_than_8bit_per_channel(digits):
    name, model = digits
    x, _ = eval_data(name)
    reference = outputs(model.module, x)
    fine = fake_quant(model, bits=8, granularity="channel")
    coarse = fake_quant(model, bits=4, granularity="tensor")
    fine_err = np.abs(outputs(fine.model.module, x) - reference).mean()
    coarse_err = np.abs(outputs(coarse.model.module, x) - reference).mean()
    assert coarse_err > 5 * fine_err > 0
    assert coarse.stats["mean_weight_sqnr_db"] < fine.stats["mean_weight_sqnr_db"] - 15


def test_torch_weight_rounding_matches_the_numpy_math(digits_mlp):
    """The wrapper's torch op and algorithms.quant put (nearly) every weight on the same level."""
    module, stats = fake_quantize_module(digits_mlp, {"bits": 4, "granularity": "channel", "symmetric": False})
    layer = module.net[2]
    with torch.no_grad():
        rounded = layer.weight_quant(layer.layer.weight).numpy()
    weight = digits_mlp.net[2].weight.detach().numpy()
    expected = fake_quantize(weight, QuantScheme(bits=4, symmetric=False, granularity="channel", axis=0))
    same = np.isclose(rounded, expected, rtol=0, atol=1e-6)
    assert same.mean() > 0.999  # x * (1/s) (torch) vs x / s (numpy) may split an exact tie differently
    assert max(len(np.unique(row)) for row in rounded) <= 16  # 4 bits: at most 16 levels per output channel
    assert stats["weight_sqnr_db"]["net.2"] == pytest.approx(quantization_error(weight, expected)["sqnr_db"], abs=0.05)


@pytest.mark.parametrize("bits,symmetric", [(2, True), (3, False), (4, True), (8, True)])
def test_values_outside_the_range_land_on_the_range_ends(bits, symmetric):
    """Narrow ranges run as a clamp plus 8-bit QDQ; outside values must still stop at the scheme's ends."""
    scheme = QuantScheme(bits=bits, symmetric=symmetric, signed=symmetric)
    scale, zero = compute_qparams(np.float32(-0.5), np.float32(1.0), scheme)
    x = np.linspace(-4, 4, 801, dtype=np.float32)
    with torch.no_grad():
        got = FakeQuantizer(scale, zero, scheme)(torch.from_numpy(x)).numpy()
    qmin, qmax = scheme.qrange
    expected = dequantize(quantize(x, scale, zero, qmin, qmax), scale, zero)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert len(np.unique(got)) <= qmax - qmin + 1
    assert got.min() == pytest.approx(float((qmin - zero) * scale)) and got.max() == pytest.approx(float((qmax - zero) * scale))


def test_clipping_weight_observer_keeps_few_levels(digits_mlp):
    module, stats = fake_quantize_module(digits_mlp, {"bits": 2, "weight_observer": "percentile", "percentile": 90})
    with torch.no_grad():
        rounded = module.net[0].weight_quant(module.net[0].layer.weight).numpy()
    assert max(len(np.unique(row)) for row in rounded) == 3  # 2-bit symmetric: -s, 0, +s per channel
    assert stats["mean_weight_sqnr_db"] < 10


# ---- activations ----


def test_input_activations_calibrated_on_digits(digits_mlp):
    model = load(digits_mlp)
    x, _ = eval_data("mlp")
    result = fake_quant(model, data="sklearn:digits", activations=True)
    act = result.stats["activations"]
    assert act["calibration_samples"] == len(x) and act["uncalibrated"] == []
    assert act["bits"] == 8 and act["symmetric"] is False and act["observer"] == "minmax"
    # the ranges are those of the layers' real inputs: pixels in [0, 1], then ReLU outputs
    with torch.inference_mode():
        hidden1 = digits_mlp.net[:2](torch.from_numpy(x)).numpy()
        hidden2 = digits_mlp.net[:4](torch.from_numpy(x)).numpy()
    assert act["ranges"]["net.0"] == [float(x.min()), float(x.max())] == [0.0, 1.0]
    assert act["ranges"]["net.2"] == [0.0, float(hidden1.max())]
    assert act["ranges"]["net.4"] == [0.0, float(hidden2.max())]
    first = result.model.module.net[0].input_quant
    assert isinstance(first, FakeQuantizer)
    assert float(first.scale) == pytest.approx(1 / 255) and int(first.zero_point) == 0  # uint8 over [0, 1]
    assert accuracy(result.model.module, "mlp") >= accuracy(digits_mlp, "mlp") - 0.01
    fewer = fake_quant(model, data="sklearn:digits", activations=True, calibration_samples=100)
    assert fewer.stats["activations"]["calibration_samples"] == 100


@pytest.mark.parametrize("observer", ["percentile", "entropy", "mse"])
def test_clipping_observers_narrow_hidden_ranges(digits_cnn, observer):
    model = load(digits_cnn)
    full = fake_quant(model, data="sklearn:digits", activations=True)
    clipped = fake_quant(model, data="sklearn:digits", activations=True, activation_observer=observer,
                         activation_bits=6, percentile=99.9)
    full_hi = {k: hi for k, (_, hi) in full.stats["activations"]["ranges"].items()}
    clipped_hi = {k: hi for k, (_, hi) in clipped.stats["activations"]["ranges"].items()}
    assert all(clipped_hi[k] <= full_hi[k] + 1e-6 for k in full_hi)
    assert any(clipped_hi[k] < 0.9 * full_hi[k] for k in LAYERS["cnn"][1:])
    assert accuracy(clipped.model.module, "cnn") >= accuracy(digits_cnn, "cnn") - 0.03


def test_activations_need_data(digits_mlp):
    with pytest.raises(SlimkitError, match="needs calibration data"):
        fake_quant(load(digits_mlp), data=None, activations=True)
    with pytest.raises(SlimkitError, match="needs calibration data"):
        fake_quantize_module(digits_mlp, {"activations": True})


def test_fake_quantize_module_takes_plain_batches(digits_cnn):
    x, _ = eval_data("cnn")
    batches = [torch.from_numpy(x[i:i + 50]) for i in range(0, 200, 50)]
    as_dicts = [{"image": b.numpy()} for b in batches]
    first, stats = fake_quantize_module(digits_cnn, {"activations": True}, batches)
    second, _ = fake_quantize_module(digits_cnn, {"activations": True}, as_dicts)
    assert stats["activations"]["calibration_samples"] == 200
    np.testing.assert_array_equal(outputs(first, x), outputs(second, x))


# ---- the pass contract ----


def test_input_module_is_not_modified(digits):
    name, model = digits
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    types = [type(m) for m in model.module.modules()]
    x, _ = eval_data(name)
    expected = outputs(model.module, x)
    result = fake_quant(model, data="sklearn:digits", bits=4, activations=True)
    assert result.model.module is not model.module and isinstance(result.model, TorchModel)
    assert [type(m) for m in model.module.modules()] == types
    after = model.module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    np.testing.assert_array_equal(outputs(model.module, x), expected)
    assert not np.array_equal(outputs(result.model.module, x), expected)  # the copy did change
    assert result.model.input_specs == model.input_specs and result.model.task == model.task


def test_unknown_config_key_and_bad_values_are_rejected():
    with pytest.raises(SlimkitError, match="pass 'fake-quant': unknown key 'bitz'"):
        get_pass("fake-quant")({"bitz": 4})
    with pytest.raises(SlimkitError, match="bad value for 'bits'"):
        get_pass("fake-quant")({"bits": 9})
    with pytest.raises(SlimkitError, match="bad value for 'granularity'"):
        get_pass("fake-quant")({"granularity": "block"})


def test_include_exclude_and_min_params_choose_layers(digits_mlp):
    model = load(digits_mlp)
    excluded = fake_quant(model, exclude=["net.4"])
    assert excluded.stats["quantized"] == ["net.0", "net.2"]
    assert excluded.stats["not_quantized"] == {"net.4": "excluded"}
    assert type(excluded.model.module.net[4]) is nn.Linear
    included = fake_quant(model, include=["net.0"])
    assert included.stats["quantized"] == ["net.0"]
    assert set(included.stats["not_quantized"].values()) == {"not included"}
    small = fake_quant(model, min_params=2000)  # net.4 has 100 * 10 weights
    assert small.stats["quantized"] == ["net.0", "net.2"]
    assert "min_params" in small.stats["not_quantized"]["net.4"]
    assert small.stats["params_quantized"] == 64 * 300 + 300 * 100
    again = fake_quant(small.model)  # a second run wraps what is left, not the wrappers' inner layers
    assert again.stats["quantized"] == ["net.4"]
    assert set(again.stats["not_quantized"]) == {"net.0.layer", "net.2.layer"}


def test_gradients_pass_straight_through(digits_mlp):
    """Quantization-aware fine-tuning needs gradients on the float weights through the rounding."""
    module, _ = fake_quantize_module(digits_mlp, {"bits": 4})
    module.train()
    x, y = eval_data("mlp")
    loss = nn.functional.cross_entropy(module(torch.from_numpy(x[:64])), torch.from_numpy(y[:64]))
    loss.backward()
    for name in LAYERS["mlp"]:
        grad = module.get_submodule(name).layer.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---- export ----


def ort_outputs(model: OnnxModel, x: np.ndarray, *, qdq_fusion: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    if not qdq_fusion:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("exporter", ["auto", "legacy"])
@pytest.mark.parametrize("config", [
    {"bits": 8, "granularity": "channel"},
    {"bits": 4, "granularity": "tensor", "symmetric": False, "activations": True, "activation_bits": 6},
    {"bits": 8, "activations": True, "activation_observer": "entropy"},
], ids=["w8-channel", "w4-tensor-a6", "w8-a8-entropy"])
def test_export_to_onnx_qdq_runs_in_ort_and_matches(digits, config, exporter, tmp_path):
    name, model = digits
    quantized = fake_quant(model, data="sklearn:digits", **config)
    exported = get_pass("to-onnx")({"exporter": exporter}).run(quantized.model, Context(workdir=tmp_path))
    assert exported.stats["exporter"] == ("dynamo" if exporter == "auto" else "legacy")
    assert exported.stats["dynamic_shapes"] is True  # batch stays dynamic (dynamo needs the Meta kernels)
    ops = [n.op_type for n in exported.model.proto.graph.node]
    wrappers = len(LAYERS[name]) * (2 if config.get("activations") else 1)
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == wrappers
    assert exported.stats["max_abs_diff_vs_torch"] < 1e-4  # to-onnx's own check, default ORT session
    x, _ = eval_data(name)  # 450 samples: a batch size the export never saw
    expected = outputs(quantized.model.module, x)
    for qdq_fusion in (False, True):  # the graph as written, then with ORT's QDQ rewrites (int8 kernels)
        got = ort_outputs(exported.model, x, qdq_fusion=qdq_fusion)
        row_diff = np.abs(got - expected).max(axis=1)
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99
        if not config.get("activations"):
            assert row_diff.max() < 1e-4
        elif qdq_fusion and not cpu_has_vnni():
            # Without VNNI, ORT's fused u8*s8 kernels (AVX2 vpmaddubsw) saturate int16 pair sums with full
            # 8-bit weights, so the int8 path is not bit-faithful to the simulation (the int8 passes use
            # reduce_range there for this reason); only the predicted classes are checked on such CPUs.
            assert row_diff.max() < 10.0
        else:
            # An activation rounded on a float result: a last-bit difference between torch's and ORT's
            # GEMMs moves the rare value sitting on a rounding boundary by one step. Such rows are few.
            assert (row_diff < 1e-4).mean() >= 0.98 and row_diff.max() < 0.2


def test_recipe_fake_quant_then_to_onnx(digits_cnn, tmp_path):
    from slimkit.pipeline import parse_recipe, run_pipeline

    recipe = parse_recipe({"passes": [{"pass": "fake-quant", "activations": True, "bits": 8}, "to-onnx"]})
    result = run_pipeline(load(digits_cnn), recipe, Context(data="sklearn:digits", workdir=tmp_path))
    assert [s["pass"] for s in result.steps] == ["fake-quant", "to-onnx"]
    assert result.steps[0]["stats"]["quantized"] == LAYERS["cnn"]
    assert result.steps[1]["stats"]["exporter"] == "dynamo" and result.steps[1]["stats"]["dynamic_shapes"] is True
    ops = [n.op_type for n in result.model.proto.graph.node]
    assert ops.count("DequantizeLinear") == 2 * len(LAYERS["cnn"])
    x, y = eval_data("cnn")
    assert (ort_outputs(result.model, x).argmax(1) == y).mean() >= accuracy(digits_cnn, "cnn") - 0.01
