"""The search space comes from the registries: chains plan, passes sit where their kinds allow, a new pass
joins by declaring a stage, and every value the sampler can draw makes a valid config."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import Field

from slimkit.config import PassConfig, searchable
from slimkit.models.base import ModelKind
from slimkit.passes import base as passes_base
from slimkit.passes.base import SEARCH_STAGES, Pass, PassResult, get_pass, make_config
from slimkit.searching.candidates import cheap_first, suggest_chain
from slimkit.searching.space import NONE, build_space, chain_steps, compose, runtime_formats
from slimkit.searching.store import import_optuna


@pytest.fixture(scope="module")
def torch_space():
    return build_space(ModelKind.TORCH, runtime_formats(None))


def test_chains_follow_stage_order_and_kinds(torch_space):
    assert {"onnx", "openvino", "tflite"} <= set(torch_space.formats)
    for chain in torch_space.chains:
        order = [SEARCH_STAGES.index(stage) for stage, _name in chain.stages]
        assert order == sorted(order), chain.key
        if chain.format == "openvino" and any(s == "quantize" for s, _ in chain.stages):
            # the precision is lowered in OpenVINO's own form, after the conversion
            assert chain.steps.index("to-openvino") < len(chain.steps) - 1
            assert get_pass(chain.steps[-1]).accepts == frozenset({ModelKind.OPENVINO})
        if any(name == "prune-structured" for _s, name in chain.stages):
            assert chain.steps.index("prune-structured") < chain.steps.index(
                "to-tflite" if chain.format == "tflite" else "to-onnx")
        if any(s == "recover" for s, _ in chain.stages):
            assert any(s == "structure" for s, _ in chain.stages), "recovery only after pruning"
        assert chain.trains == any(get_pass(n).search_trains for _s, n in chain.stages)
    # the ONNX Runtime quantizers end ONNX chains; NNCF's end OpenVINO ones
    assert "int8-dynamic" in torch_space.quantizers["onnx"] and "ov-int8" in torch_space.quantizers["openvino"]
    assert "int8-dynamic" not in torch_space.quantizers["openvino"]


def test_tflite_quantizers_end_tflite_chains_from_the_fp32_flatbuffer(torch_space):
    assert {"tflite-static", "tflite-dynamic", "tflite-weight-only", "tflite-int8-auto"} <= set(
        torch_space.quantizers["tflite"])
    chain = next(c for c in torch_space.chains if c.steps == ("to-tflite", "tflite-static"))
    # The sampler may pick fp16 weights for the conversion; a TFLite quantizer needs the fp32 file.
    steps = dict(chain_steps(chain, {"to-tflite.precision": "fp16", "tflite-static.activation_bits": 16}))
    assert steps["to-tflite"]["precision"] == "fp32" and steps["tflite-static"]["activation_bits"] == 16
    plain = next(c for c in torch_space.chains if c.steps == ("to-tflite",))
    assert dict(chain_steps(plain, {"to-tflite.precision": "fp16"}))["to-tflite"]["precision"] == "fp16"


def test_onnx_model_gets_no_pytorch_stages():
    space = build_space(ModelKind.ONNX, runtime_formats(["onnxruntime"]))
    assert space.formats == ("onnx",)
    assert space.stage_choices["structure"] == (NONE,)  # structured pruning needs the PyTorch model
    assert all(not chain.trains for chain in space.chains)


def test_fusion_goes_before_the_quantizer_that_needs_it():
    steps = compose(ModelKind.TORCH, [("to-onnx", {}), ("onnx-cleanup", {})], ["int8-dynamic"])
    assert [n for n, _ in steps] == ["to-onnx", "onnx-cleanup", "transformer-fusion", "int8-dynamic"]
    assert compose(ModelKind.ONNX, [("to-onnx", {}), ("onnx-cleanup", {})], ["prune-structured"]) is None


def test_unknown_runtime_is_one_clear_error():
    from slimkit.errors import SlimkitError

    with pytest.raises(SlimkitError, match="tensorrt"):
        runtime_formats(["tensorrt"])


def test_every_sampled_value_is_a_valid_config(torch_space):
    optuna = import_optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        chain, values = suggest_chain(trial, torch_space)
        if chain is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        seen.add(chain.key)
        for name, cfg in chain_steps(chain, values):
            make_config(name, get_pass(name).Config, cfg)  # raises on a bad value
        study.tell(trial, 1.0)
    assert len(seen) > 10


def test_cheap_candidates_come_first_and_training_ones_last(torch_space):
    params = cheap_first(torch_space)

    def chain_of(p):
        choice = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("stage.")}
        return torch_space.chain(p["format"], {**choice, "quantize": p[f"quantize.{p['format']}"]})

    chains = [chain_of(p) for p in params]
    assert all(c is not None for c in chains)
    trains = [c.trains for c in chains]
    assert any(trains) and trains == sorted(trains)  # every training candidate after every cheap one
    first_plain = next(i for i, p in enumerate(params) if p[f"quantize.{p['format']}"] == NONE)
    assert all(p[f"quantize.{p['format']}"] != NONE for p in params[:first_plain])
    precisions = {p.get("to-openvino.precision") for p in params if p["format"] == "openvino"}
    assert {"f32", "bf16"} <= precisions  # OpenVINO's precisions are tried early too
    # each technique alone is among them, so the sampler starts from what every single recipe does
    alone = {tuple(n for _s, n in c.stages) for c in chains if c.format == "onnx"}
    assert {("factorize",), ("cluster",), ("prune-structured",), ("prune-structured", "distill")} <= alone


class _HalveConfig(PassConfig):
    factor: float = Field(0.5, json_schema_extra=searchable(low=0.25, high=0.75))


class _Halve(Pass):
    """A pass declared in a test module: it joins the search by its stage and Config alone."""

    name = "test-halve"
    accepts = frozenset({ModelKind.ONNX})
    returns = ModelKind.ONNX
    Config = _HalveConfig
    search_stage = "share"
    search_config: ClassVar[dict] = {}

    def run(self, model, ctx):  # pragma: no cover - only planned here
        return PassResult(model)


def test_a_new_pass_joins_the_space_without_touching_the_search():
    passes_base.register(_Halve)
    try:
        space = build_space(ModelKind.TORCH, runtime_formats(["onnxruntime"]))
        assert "test-halve" in space.stage_choices["share"]
        chain = space.chain("onnx", {"share": "test-halve", "quantize": "int8-static"})
        assert chain is not None and chain.steps[-2:] == ("test-halve", "int8-static")
        steps = dict(chain_steps(chain, {"test-halve.factor": 0.3}))
        assert steps["test-halve"] == {"factor": 0.3}
    finally:
        passes_base._REGISTRY.pop("test-halve", None)
