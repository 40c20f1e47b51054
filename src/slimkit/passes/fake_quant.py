"""Fake quantization for PyTorch: Linear and Conv2d layers compute with weights (and optionally inputs)
rounded to a low-bit grid, while staying float modules.

Each chosen layer is wrapped in a `FakeQuantLayer` whose `FakeQuantizer`s call
`torch.fake_quantize_per_tensor_affine` / `torch.fake_quantize_per_channel_affine`. Those ops have
straight-through gradients (quantization-aware fine-tuning works on the result) and export to ONNX as
QuantizeLinear/DequantizeLinear pairs. Scales come from `slimkit.algorithms.quant` on the weights;
input ranges from forward pre-hooks over calibration batches, on the float model, with any observer
(minmax / percentile / entropy / mse).

Export to ONNX (slimkit's `to-onnx`, exporter `auto`, i.e. dynamo first) works with dynamic batch
dims. Two details make it so:

- torch has no Meta kernels for the fake-quant ops (`*_cachemask*`), so `torch.export` cannot trace
  them with symbolic shapes and the dynamo exporter would only succeed with a static batch. This
  module registers shape-only Meta kernels for them (only where torch has none), on first use.
- ONNX QDQ and both torch exporters take only the int8 (-128, 127) and uint8 (0, 255) ranges. Other
  ranges (the restricted ±127, or 2..7 bits) are exported as a clamp to the range's float bounds
  followed by 8-bit QDQ with the same scale and zero point: for integer bounds,
  round(clamp(x)) == clamp(round(x)), so the result is identical.

The TorchScript exporter (`exporter: legacy`) works too (it also keeps the bias rounding below as
Round/Mul nodes, which dynamo folds). Both keep the clamps as Clip or Max/Min nodes.

With quantized inputs the bias is rounded to multiples of input scale x weight scale, as int8 runtimes
store it (int32). ONNX Runtime's QDQ optimizer quantizes the bias that way, so without this the
exported model would differ from the torch one by more than to-onnx's tolerance. Rounding an
activation remains sensitive to last-bit differences between torch's and ORT's float GEMMs: a value
sitting on a rounding boundary can land one step apart, so outputs match exactly for weight-only
quantization and for all but a few samples with quantized activations.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from slimkit.algorithms.quant import (
    QuantScheme,
    RangeCollector,
    choose_qparams,
    compute_qparams,
    quantization_error,
)
from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, TorchModel, WorkingModel
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, make_config, register

_CALIBRATION_BATCH = 32
_QUANTIZABLE = (nn.Linear, nn.Conv2d)


class FakeQuantConfig(PassConfig):
    bits: int = Field(8, ge=2, le=8)
    symmetric: bool = True
    granularity: Literal["tensor", "channel"] = "channel"  # channel = one scale per output channel
    weight_observer: Literal["minmax", "percentile", "mse"] = "minmax"
    include: list[str] = ["*"]  # glob patterns on module names (e.g. "net.*", "features.0")
    exclude: list[str] = []
    min_params: int = Field(0, ge=0)  # layers with fewer weights stay float (small layers, big error share)
    activations: bool = False  # also fake-quantize each layer's input, calibrated on ctx.data
    activation_bits: int = Field(8, ge=2, le=8)
    activation_symmetric: bool = False  # asymmetric activations use uint8, symmetric ones int8
    activation_observer: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"
    percentile: float = Field(99.99, gt=50, le=100)
    calibration_samples: int = Field(512, ge=1)


# ---- modules ----


class FakeQuantizer(nn.Module):
    """Rounds a tensor to a fixed grid (scale, zero point) in the forward pass; gradients pass straight through.

    `scale` and `zero_point` come in algorithms.quant's layout (0-d, or broadcastable along `axis`).
    """

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray, scheme: QuantScheme, axis: int | None = None) -> None:
        super().__init__()
        _ensure_meta_kernels()
        qmin, qmax = scheme.qrange
        self.axis = axis
        self.bits = scheme.bits
        # The only ranges ONNX QDQ export takes; narrower ones are a clamp first (see module docstring).
        self.quant_min, self.quant_max = (-128, 127) if qmin < 0 else (0, 255)
        self.clip = (qmin, qmax) != (self.quant_min, self.quant_max)
        scale = np.asarray(scale, dtype=np.float32)
        zero = np.asarray(zero_point, dtype=np.int32)
        flat = (lambda a: a.reshape(-1)) if axis is not None else (lambda a: a.reshape(()))
        self.register_buffer("scale", torch.from_numpy(flat(scale).copy()))
        self.register_buffer("zero_point", torch.from_numpy(flat(zero).copy()))
        self.register_buffer("lo", torch.from_numpy(np.asarray((qmin - zero) * scale, dtype=np.float32)))
        self.register_buffer("hi", torch.from_numpy(np.asarray((qmax - zero) * scale, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clip:
            x = torch.clamp(x, self.lo, self.hi)
        if self.axis is None:
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.quant_min, self.quant_max)
        return torch.fake_quantize_per_channel_affine(
            x, self.scale, self.zero_point, self.axis, self.quant_min, self.quant_max)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, axis={self.axis}"


class FakeQuantLayer(nn.Module):
    """A Linear or Conv2d that computes with its fake-quantized weight (and optionally input).

    With a quantized input the bias is rounded to multiples of input scale x weight scale, as int8
    runtimes store it (int32); ONNX Runtime's QDQ optimizer quantizes the bias that way too, so the
    exported graph then computes what this module computes.
    """

    def __init__(self, layer: nn.Module, weight_quant: FakeQuantizer, input_quant: FakeQuantizer | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.weight_quant = weight_quant
        self.input_quant = input_quant

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # named like nn.Linear's, for keyword callers
        x = self.input_quant(input) if self.input_quant is not None else input
        weight = self.weight_quant(self.layer.weight)
        bias = self.layer.bias
        if bias is not None and self.input_quant is not None:
            bias = _round_to_step(bias, self.input_quant.scale * self.weight_quant.scale)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, weight, bias)
        return nn.functional.linear(x, weight, bias)


def _round_to_step(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """x rounded to multiples of `step` (half to even), with a straight-through gradient."""
    return x + (torch.round(x / step) * step - x).detach()


# ---- the reusable function ----


def fake_quantize_module(
    module: nn.Module, config: Mapping[str, Any] | FakeQuantConfig | None = None,
    calibration_batches: Iterable[Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A fake-quantized deep copy of `module` (the input is untouched) and stats about what was done.

    `calibration_batches` (needed when `activations` is on) yields what the module is called with:
    a `data.Batch` or a dict (keyword inputs), a tuple/list (positional inputs) or one array/tensor.
    """
    cfg = make_config("fake-quant", FakeQuantConfig, config)
    if cfg.activations and calibration_batches is None:
        raise SlimkitError("fake-quant with activations: true needs calibration data",
                           "pass data (e.g. --data sklearn:digits or an .npz file), or set activations: false")
    new = copy.deepcopy(module)
    chosen, not_quantized = select_layers(new, cfg)
    ranges, samples = _calibrate(new, chosen, cfg, calibration_batches) if cfg.activations else ({}, 0)
    sqnr: dict[str, float] = {}
    for name, layer in chosen.items():
        weight_quant, sqnr[name] = _weight_quantizer(layer.weight, cfg)
        input_quant = _input_quantizer(ranges[name], cfg) if name in ranges else None
        new = _replace(new, name, FakeQuantLayer(layer, weight_quant, input_quant))
    finite = [v for v in sqnr.values() if np.isfinite(v)]
    stats: dict[str, Any] = {
        "quantized": list(chosen), "not_quantized": not_quantized,
        "params_quantized": int(sum(layer.weight.numel() for layer in chosen.values())),
        "bits": cfg.bits, "symmetric": cfg.symmetric, "granularity": cfg.granularity,
        "weight_sqnr_db": {k: _finite(v) for k, v in sqnr.items()},
        "mean_weight_sqnr_db": _finite(float(np.mean(finite))) if finite else None,
    }
    if cfg.activations:
        stats["activations"] = {
            "bits": cfg.activation_bits, "symmetric": cfg.activation_symmetric,
            "observer": cfg.activation_observer, "calibration_samples": samples,
            "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in ranges.items()},
            "uncalibrated": [k for k in chosen if k not in ranges],  # never called: weights only
        }
    return new, stats


def _finite(value: float) -> float | None:
    """Rounded for reports; None for an infinite SQNR (a weight already on the grid), which JSON cannot hold."""
    return round(value, 3) if np.isfinite(value) else None


def select_layers(module: nn.Module, cfg: FakeQuantConfig) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Layers to wrap by name, and the ones left float with the reason."""
    chosen: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    wrapped = {f"{n}.layer" for n, m in module.named_modules() if isinstance(m, FakeQuantLayer)}
    for name, layer in module.named_modules():
        if not isinstance(layer, _QUANTIZABLE):
            continue
        if name in wrapped:
            skipped[name] = "already fake-quantized"
        elif type(layer) not in _QUANTIZABLE:  # a subclass may not compute a plain linear/conv in forward
            skipped[name] = f"{type(layer).__name__} subclasses {type(layer).__mro__[1].__name__}"
        elif not any(fnmatchcase(name, p) for p in cfg.include):
            skipped[name] = "not included"
        elif any(fnmatchcase(name, p) for p in cfg.exclude):
            skipped[name] = "excluded"
        elif layer.weight.numel() < cfg.min_params:
            skipped[name] = f"{layer.weight.numel()} weights < min_params {cfg.min_params}"
        else:
            chosen[name] = layer
    return chosen, skipped


def _weight_quantizer(weight: torch.Tensor, cfg: FakeQuantConfig) -> tuple[FakeQuantizer, float]:
    """A quantizer for one weight (output channels on axis 0), and the SQNR of what it produces."""
    scheme = QuantScheme(bits=cfg.bits, symmetric=cfg.symmetric, granularity=cfg.granularity, axis=0)
    values = weight.detach().float().cpu().numpy()
    opts = {"percentile": cfg.percentile} if cfg.weight_observer == "percentile" else {}
    scale, zero = choose_qparams(values, scheme, cfg.weight_observer, **opts)
    quantizer = FakeQuantizer(scale, zero, scheme, axis=0 if cfg.granularity == "channel" else None)
    with torch.no_grad():
        rounded = quantizer(weight.detach().float().cpu()).numpy()
    return quantizer, quantization_error(values, rounded)["sqnr_db"]


def _activation_scheme(cfg: FakeQuantConfig) -> QuantScheme:
    return QuantScheme(bits=cfg.activation_bits, symmetric=cfg.activation_symmetric, granularity="tensor",
                       signed=cfg.activation_symmetric)


def _input_quantizer(bounds: tuple[float, float], cfg: FakeQuantConfig) -> FakeQuantizer:
    scheme = _activation_scheme(cfg)
    scale, zero = compute_qparams(np.asarray(bounds[0]), np.asarray(bounds[1]), scheme)
    return FakeQuantizer(scale, zero, scheme)


def _calibrate(module: nn.Module, chosen: dict[str, nn.Module], cfg: FakeQuantConfig,
               batches: Iterable[Any]) -> tuple[dict[str, tuple[float, float]], int]:
    """Per-layer input ranges from forward pre-hooks, on the float model; returns (ranges, samples seen)."""
    collectors = {name: RangeCollector(seed=i) for i, name in enumerate(chosen)}
    hooks = [layer.register_forward_pre_hook(_observer(collectors[name])) for name, layer in chosen.items()]
    samples = 0
    try:
        with torch.inference_mode():
            for batch in batches:
                samples += _call(module, batch)
    finally:
        for hook in hooks:
            hook.remove()
    scheme = _activation_scheme(cfg)
    opts = {"percentile": cfg.percentile} if cfg.activation_observer == "percentile" else {}
    ranges = {}
    for name, collector in collectors.items():
        if collector.count:
            lo, hi = collector.estimate(scheme, cfg.activation_observer, **opts)
            ranges[name] = (float(lo), float(hi))
    return ranges, samples


def _observer(collector: RangeCollector):
    def hook(_module, args):
        if args and isinstance(args[0], torch.Tensor):  # keyword-only calls stay uncalibrated (reported)
            collector.update(args[0].detach().float().cpu().numpy())
    return hook


def _call(module: nn.Module, batch: Any) -> int:
    """Run one calibration batch; returns its sample count (size of the first input's dim 0)."""
    feed = getattr(batch, "feed", batch)
    if isinstance(feed, Mapping):
        tensors = {k: torch.as_tensor(v) for k, v in feed.items()}
        module(**tensors)
        first = next(iter(tensors.values()), None)
    elif isinstance(feed, tuple | list):
        args = [torch.as_tensor(v) for v in feed]
        module(*args)
        first = args[0] if args else None
    else:
        first = torch.as_tensor(feed)
        module(first)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _replace(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)
    return root


# ---- torch.export support ----

_META_LIB: torch.library.Library | None = None


def _ensure_meta_kernels() -> None:
    """Shape-only Meta kernels for the fake-quant ops, so torch.export traces them with dynamic dims."""
    global _META_LIB
    if _META_LIB is not None:
        return
    lib = torch.library.Library("aten", "IMPL")  # fills a gap in aten; defines no new op

    def masked(x, *_args):
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)

    for op in ("fake_quantize_per_tensor_affine_cachemask",
               "_fake_quantize_per_tensor_affine_cachemask_tensor_qparams",
               "fake_quantize_per_channel_affine_cachemask"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", "Meta"):
            lib.impl(op, masked, "Meta")
    _META_LIB = lib  # kept alive: the registrations last as long as the Library object


# ---- the pass ----


@register
class FakeQuant(Pass):
    """Wraps Linear/Conv2d layers so they compute with fake-quantized weights (and inputs)."""

    name = "fake-quant"
    accepts = frozenset({ModelKind.TORCH})
    returns = ModelKind.TORCH
    Config = FakeQuantConfig
    description = "PyTorch fake quantization of Linear/Conv2d weights (and inputs); exports as ONNX QDQ"
    quantizes = True  # exported as QDQ

    def data_use(self) -> frozenset[str]:
        return frozenset({"calibrate"}) if self.config.activations else frozenset()

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        assert isinstance(model, TorchModel)
        batches = _calibration_batches(model, ctx, self.config) if self.config.activations else None
        module, stats = fake_quantize_module(model.module, self.config, batches)
        result = dataclasses.replace(model, module=module, source_files=[], keras_file=None)
        return PassResult(result, stats)


def _calibration_batches(model: TorchModel, ctx: Context, cfg: FakeQuantConfig) -> list:
    """Up to `calibration_samples` samples of ctx.data, in batches of 32."""
    from slimkit.data_sources import load_data

    if ctx.data is None:
        raise SlimkitError("fake-quant with activations: true needs calibration data",
                           "pass data (e.g. --data sklearn:digits or an .npz file), or set activations: false")
    data = load_data(ctx.data, model, batch_size=_CALIBRATION_BATCH, seq_len=ctx.seq_len, shapes=ctx.shapes,
                     max_samples=cfg.calibration_samples)  # any source, Datasets too: capped and re-batched
    return [batch.feed for batch in data]


__all__ = ["FakeQuant", "FakeQuantConfig", "FakeQuantLayer", "FakeQuantizer", "fake_quantize_module",
           "select_layers"]
