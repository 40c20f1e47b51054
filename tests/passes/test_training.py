"""Passes that train: distillation, gradual pruning with fine-tuning, on the real digits models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimkit.bundled_data import digits_arrays
from slimkit.demo_models import trained_digits_model
from slimkit.errors import SlimkitError
from slimkit.formats import load
from slimkit.passes.base import Context, get_pass
from slimkit.pipeline import load_recipe, run_pipeline
from slimkit.settings import MeasureSettings


def accuracy(module) -> float:
    x, y = digits_arrays("test")
    with torch.inference_mode():
        return float((module.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@pytest.fixture
def teacher(digits_cache):
    return load(trained_digits_model("mlp", digits_cache), task="classification")


def ctx(tmp_path, **kw) -> Context:
    return Context(train_data="sklearn:digits:train", data="sklearn:digits:test", workdir=tmp_path, settings=MeasureSettings(threads=1), **kw)


def test_distill_small_student_learns_from_teacher(teacher, tmp_path):
    cfg = {"student": "slimkit.demo_models:small_digits_mlp", "alpha": 0.5, "temperature": 4.0,
           "train": {"epochs": 15, "lr": 1e-2, "batch_size": 64}}
    result = get_pass("distill")(cfg).run(teacher, ctx(tmp_path))
    stats = result.stats
    assert stats["loss"] == "logits" and stats["evaluated_on"] == "held-out data"
    assert stats["before"]["accuracy"] < 0.3  # untrained student
    assert accuracy(result.model.module) > 0.9
    assert stats["after"]["accuracy"] == pytest.approx(accuracy(result.model.module))
    assert sum(p.numel() for p in result.model.module.parameters()) < 3000
    history = stats["history"]
    assert len(history) == 15 and history[-1]["soft"] < history[0]["soft"] and history[-1]["hard"] < history[0]["hard"]


def test_distill_unlabeled_uses_teacher_only(teacher, tmp_path):
    cfg = {"student": "slimkit.demo_models:small_digits_mlp", "alpha": 0.0, "train": {"epochs": 8, "lr": 3e-3}}
    stats = get_pass("distill")(cfg).run(teacher, ctx(tmp_path)).stats
    assert all(row["hard"] == 0.0 for row in stats["history"])
    assert stats["after"]["accuracy"] > 0.85


def test_distill_rejects_labels_missing_and_mismatched_student(teacher, tmp_path):
    x, _ = digits_arrays("train")
    np.savez(tmp_path / "unlabeled.npz", x=x)
    bad = Context(train_data=str(tmp_path / "unlabeled.npz"), workdir=tmp_path, settings=MeasureSettings(threads=1))
    with pytest.raises(SlimkitError, match="training data has none"):
        get_pass("distill")({"student": "slimkit.demo_models:small_digits_mlp", "alpha": 0.5,
                             "train": {"epochs": 1}}).run(teacher, bad)
    with pytest.raises(SlimkitError, match="takes inputs"):
        get_pass("distill")({"student": "slimkit.demo_models:DigitsCNN", "train": {"epochs": 1}}).run(teacher, ctx(tmp_path))
    with pytest.raises(SlimkitError, match="needs data"):
        get_pass("distill")({"train": {"epochs": 1}}).run(teacher, Context(workdir=tmp_path))


def test_gradual_prune_with_finetuning_keeps_accuracy_and_masks(teacher, tmp_path):
    cfg = {"sparsity": 0.9, "schedule": "gradual", "train": {"epochs": 30, "lr": 2e-3}}
    result = get_pass("prune")(cfg).run(teacher, ctx(tmp_path))
    stats = result.stats
    assert stats["sparsity"] == pytest.approx(0.9, abs=0.005)
    for layer in stats["per_layer"]:
        assert layer["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert accuracy(result.model.module) >= accuracy(teacher.module) - 0.02
    # one-shot without training at the same sparsity is clearly worse than gradual with fine-tuning
    one_shot = get_pass("prune")({"sparsity": 0.9}).run(teacher, ctx(tmp_path / "oneshot"))
    assert accuracy(one_shot.model.module) < accuracy(result.model.module)
    assert teacher.module.net[0].weight.ne(0).all()  # the input model is untouched


def test_prune_then_export_runs_in_onnx_runtime_with_smaller_file(teacher, tmp_path):
    from slimkit.pipeline import parse_recipe

    recipe = parse_recipe({"name": "t", "passes": [{"pass": "prune", "sparsity": 0.5}, {"pass": "sparse-storage"}]})
    result = run_pipeline(teacher, recipe, Context(workdir=tmp_path))
    dense = run_pipeline(teacher, load_recipe("onnx"), Context(workdir=tmp_path / "dense")).model
    assert result.model.kind == "onnx"
    assert result.model.size_bytes() < 0.6 * dense.size_bytes()
    from slimkit.formats.onnx import OrtRunner

    x, _ = digits_arrays("test")
    out = OrtRunner(result.model, 1).run({"x": x})[0]
    pruned_torch = get_pass("prune")({"sparsity": 0.5}).run(teacher, Context(workdir=tmp_path / "t")).model
    with torch.inference_mode():
        np.testing.assert_allclose(out, pruned_torch.module(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_training_resumes_from_checkpoint(teacher, tmp_path):
    cfg = {"student": "slimkit.demo_models:small_digits_mlp", "train": {"epochs": 4, "lr": 3e-3}}
    full = get_pass("distill")(cfg).run(teacher, ctx(tmp_path / "a", checkpoint_dir=tmp_path / "ck-a"))
    assert (tmp_path / "ck-a" / "distill" / "checkpoint.pt").exists()
    again = get_pass("distill")(cfg).run(teacher, ctx(tmp_path / "b", checkpoint_dir=tmp_path / "ck-a", resume=True))
    assert again.stats["resumed_from_epoch"] is not None
    for a, b in zip(full.model.module.state_dict().values(), again.model.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return (torch.relu(self.lin(x)),)  # HF blocks return tuples


class _Encoder(torch.nn.Module):
    """Just the module layout of a BERT encoder: encoder.layer.N blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.layer = torch.nn.ModuleList([_Block(), _Block()])

    def forward(self, input_ids, attention_mask):
        h = input_ids
        for block in self.encoder.layer:
            h = block(h)[0]
        return h.mean(1)


def test_hidden_state_distillation_matches_blocks_and_masks_padding():
    import copy

    from slimkit.models.base import TorchModel
    from slimkit.passes.recovery import HiddenStates

    teacher = _Encoder()
    student = copy.deepcopy(teacher)
    hidden = HiddenStates(student, TorchModel(module=teacher))
    assert hidden.pairs == ["encoder.layer.0", "encoder.layer.1"]
    feed = {"input_ids": torch.randn(2, 3, 4), "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}
    student(**feed)
    assert hidden.loss(feed).item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        student.encoder.layer[1].lin.bias += 1.0
    student(**feed)
    assert hidden.loss(feed).item() > 0.1
    # differences on padded positions only do not count
    padded = {"input_ids": feed["input_ids"].clone(), "attention_mask": feed["attention_mask"]}
    student2 = copy.deepcopy(teacher)
    hidden2 = HiddenStates(student2, TorchModel(module=teacher))
    student2(**padded)
    hidden2._student["encoder.layer.0"] = hidden2._student["encoder.layer.0"].clone()
    hidden2._student["encoder.layer.0"][0, 2] += 5.0  # a padded token
    assert hidden2.loss(padded).item() == pytest.approx(0.0, abs=1e-12)
    hidden.close()
    hidden2.close()
    assert not teacher.encoder.layer[0]._forward_hooks


def test_student_option_needs_a_distill_recipe(teacher, tmp_path):
    from slimkit.api import optimize

    with pytest.raises(SlimkitError, match="options for pass distill but recipe prune-50 has no such pass"):
        optimize(teacher, "prune-50", overrides={"distill": {"student": "slimkit.demo_models:small_digits_mlp"}},
                 measure=False)
