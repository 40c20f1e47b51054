"""The fine-tuning engine on the real digits models: accuracy, determinism, resume, early stopping,
divergence, step hooks, logged loss components, lr schedules and input adapters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from slimkit.bundled_data import digits_arrays
from slimkit.data_sources import Batch, Dataset
from slimkit.demo_models import DigitsCNN, DigitsMLP, digits_accuracy
from slimkit.errors import SlimkitError
from slimkit.train import CHECKPOINT_NAME, TrainConfig, TrainingDiverged, as_dataset, fit, learning_rate


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train faster on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    x, y = digits_arrays("train")
    return as_dataset(({"x": x}, y), batch_size=64)


def ce(module, batch):
    return nn.functional.cross_entropy(module(**batch.feed), batch.labels)


def mlp(seed: int = 0) -> DigitsMLP:
    torch.manual_seed(seed)
    return DigitsMLP()


def weights(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_fit_learns_digits(digits):
    module, lines = mlp(), []
    result = fit(module, ce, digits, TrainConfig(epochs=4, lr=2e-3, batch_size=64), progress=lines.append)
    losses = [row["loss"] for row in result.history]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert digits_accuracy(module, image=False) > 0.9
    assert not module.training
    assert result.steps == 4 * math.ceil(digits.num_samples / 64) and [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert len(lines) == 4 and lines[1].startswith("epoch 2/4 loss ")


def test_same_seed_is_bit_identical_and_seeds_differ(digits):
    config = TrainConfig(epochs=2, lr=2e-3)
    a, b, c = mlp(), mlp(), mlp()
    fit(a, ce, digits, config)
    fit(b, ce, digits, config)
    fit(c, ce, digits, config.model_copy(update={"seed": 1}))
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(c))


def test_resume_reproduces_an_uninterrupted_run(digits, tmp_path):
    config = TrainConfig(epochs=4, lr=2e-3, batch_size=64)
    per_epoch = math.ceil(digits.num_samples / 64)

    def run(seed=0, **kwargs):
        # `scale` is optimized but lives outside the module (like a distillation projection).
        module, scale = mlp(seed), nn.Parameter(torch.tensor(float(seed + 1)))
        result = fit(module, lambda m, b: ce(m, b) * scale, digits, config,
                     params=[*module.parameters(), scale], **kwargs)
        return weights(module) + [scale.detach()], result

    whole, _ = run()

    def interrupt(module, step):
        if step == 2 * per_epoch + 3:  # a few steps into epoch 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_dir=tmp_path, after_step=interrupt)
    assert (tmp_path / CHECKPOINT_NAME).is_file() and not list(tmp_path.glob(".*tmp"))
    # Other initial weights and scale: everything must come from the checkpoint.
    resumed, result = run(seed=5, checkpoint_dir=tmp_path, resume=True)
    assert result.resumed_from_epoch == 2
    assert len(result.history) == 4 and result.steps == 4 * per_epoch
    assert same(resumed, whole) and whole[-1].item() != 1.0


def test_resuming_a_finished_cnn_run_restores_batchnorm_buffers(tmp_path):
    x, y = digits_arrays("train", image=True)
    images = as_dataset(({"image": x[:256]}, y[:256]))
    torch.manual_seed(0)
    trained = DigitsCNN()
    config = TrainConfig(epochs=1, batch_size=64)
    done = fit(trained, ce, images, config, checkpoint_dir=tmp_path)
    torch.manual_seed(1)
    again = DigitsCNN()
    result = fit(again, ce, images, config, checkpoint_dir=tmp_path, resume=True)
    assert result.steps == done.steps == 4 and result.resumed_from_epoch == 1 and result.history == done.history
    ours, theirs = trained.state_dict(), again.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert int(theirs["features.1.num_batches_tracked"]) == 4 and not again.training


def test_resume_refuses_other_model_config_and_missing_checkpoint(digits, tmp_path):
    config = TrainConfig(epochs=1)
    fit(mlp(), ce, digits, config, checkpoint_dir=tmp_path)
    with pytest.raises(SlimkitError, match="different model"):
        fit(DigitsMLP(hidden=(32,)), ce, digits, config, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(SlimkitError, match=r"other training settings \(changed: \['lr'\]\)"):
        fit(mlp(), ce, digits, config.model_copy(update={"lr": 0.1}), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(SlimkitError, match="run without --resume first") as info:
        fit(mlp(), ce, digits, config, checkpoint_dir=tmp_path / "empty", resume=True)
    assert info.value.problem == f"no checkpoint in {tmp_path / 'empty'}"


def test_early_stopping_restores_best_weights(digits):
    snapshots: list[list[torch.Tensor]] = []

    def evaluate(module):
        snapshots.append(weights(module))
        return {"score": [0.5, 0.9, 0.8, 0.7, 0.6, 0.5][len(snapshots) - 1]}

    module = mlp()
    result = fit(module, ce, digits, TrainConfig(epochs=6, patience=2), evaluate=evaluate)
    assert result.stopped_early and len(result.history) == 4
    assert result.best_epoch == 2 and result.best_score == 0.9
    assert [row["score"] for row in result.history] == [0.5, 0.9, 0.8, 0.7]
    assert same(weights(module), snapshots[1]) and not same(weights(module), snapshots[-1])


def test_nan_loss_raises_and_keeps_last_good_weights(digits, tmp_path):
    per_epoch = math.ceil(digits.num_samples / 32)
    seen: list[list[torch.Tensor]] = []
    calls = {"n": 0}

    def loss(module, batch):
        calls["n"] += 1
        value = ce(module, batch)
        return value * float("nan") if calls["n"] == per_epoch + 5 else value

    module = mlp()
    with pytest.raises(TrainingDiverged, match="lower the learning rate") as info:
        fit(module, loss, digits, TrainConfig(epochs=3), checkpoint_dir=tmp_path,
            evaluate=lambda m: seen.append(weights(m)) or {"score": 0.0})
    message = str(info.value)
    assert f"step {per_epoch + 5} (epoch 2)" in message and "end of epoch 1" in message
    assert str(tmp_path / CHECKPOINT_NAME) in message
    assert info.value.result.diverged and len(info.value.result.history) == 1
    assert len(seen) == 1 and same(weights(module), seen[0])
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_exploding_lr_stops_with_initial_weights(digits):
    module = mlp()
    start = weights(module)
    with pytest.raises(TrainingDiverged, match="initial weights"):
        fit(module, ce, digits, TrainConfig(epochs=2, lr=1e12, optimizer="sgd", schedule="constant"))
    assert same(weights(module), start)


def test_step_hooks_keep_a_pruning_mask(digits):
    module = mlp()
    layer = module.net[0]
    mask = (torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    with torch.no_grad():
        layer.weight.mul_(mask)
    calls = {"before": 0, "after": []}

    def before(m):
        calls["before"] += 1
        m.net[0].weight.grad.mul_(mask)

    def after(m, step):
        calls["after"].append(step)
        with torch.no_grad():
            m.net[0].weight.mul_(mask)

    result = fit(module, ce, digits, TrainConfig(epochs=2, weight_decay=0.01, optimizer="adamw"),
                 before_step=before, after_step=after)
    assert calls["before"] == result.steps and calls["after"] == list(range(1, result.steps + 1))
    assert bool((layer.weight[mask == 0] == 0).all()) and bool((layer.weight[mask == 1] != 0).all())


def test_dict_losses_are_logged_per_epoch(digits):
    def loss(module, batch):
        logits = module(**batch.feed)
        hard = nn.functional.cross_entropy(logits, batch.labels)
        soft = logits.pow(2).mean() * 1e-3
        return {"loss": hard + soft, "hard": hard, "soft": soft}

    result = fit(mlp(), loss, digits, TrainConfig(epochs=3, max_steps=60), evaluate=lambda m: {"loss": -1.0, "score": 0.0})
    assert [set(r) for r in result.history] == [{"epoch", "steps", "lr", "loss", "hard", "soft", "eval_loss", "score"}] * 2
    assert [r["eval_loss"] for r in result.history] == [-1.0, -1.0]
    assert result.steps == 60 and [r["steps"] for r in result.history] == [43, 60]  # 1347 samples / 32
    for row in result.history:
        assert row["loss"] == pytest.approx(row["hard"] + row["soft"], rel=1e-5)
        assert row["soft"] > 0


def test_schedules_warm_up_and_decay_to_zero(digits):
    warm = TrainConfig(lr=0.1, warmup_steps=4, schedule="linear")
    assert [learning_rate(warm, s, 100) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert learning_rate(warm, 4, 100) == pytest.approx(0.1)
    for schedule in ("cosine", "linear"):
        config = TrainConfig(lr=0.1, schedule=schedule)
        assert learning_rate(config, 50, 100) == pytest.approx(0.05)
        assert learning_rate(config, 99, 100) < 0.1 * 0.011
    assert learning_rate(TrainConfig(schedule="constant", lr=0.1), 99, 100) == 0.1
    result = fit(mlp(), ce, digits, TrainConfig(epochs=3, lr=1e-2, schedule="linear"))
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] > lrs[1] > lrs[2] and lrs[2] < 1e-2 * 0.01


def test_as_dataset_from_torch_and_dicts(digits):
    x, y = digits_arrays("test")
    tensors = as_dataset(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=100)
    assert len(tensors) == math.ceil(len(x) / 100) and tensors.batches[0].feed["x"].shape == (100, 64)
    assert np.array_equal(np.concatenate([b.labels for b in tensors]), y)
    rows = as_dataset([{"image": x[i].reshape(1, 8, 8), "label": int(y[i])} for i in range(10)], batch_size=4)
    assert [b.size for b in rows] == [4, 4, 2] and rows.batches[0].feed["image"].shape == (4, 1, 8, 8)
    assert list(rows.batches[2].labels) == list(y[8:10])
    assert as_dataset(digits) is digits


def test_bad_inputs_are_user_errors(digits):
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"batch_size": 0}):
        with pytest.raises(SlimkitError, match="training config: "):
            TrainConfig(**bad)
    with pytest.raises(SlimkitError, match="empty"):
        fit(mlp(), ce, Dataset([Batch({"x": np.zeros((0, 64), np.float32)})]), TrainConfig())
    with pytest.raises(SlimkitError, match="empty"):
        as_dataset([])
    with pytest.raises(SlimkitError, match="no 'score' metric"):
        fit(mlp(), ce, digits, TrainConfig(epochs=1), evaluate=lambda m: {"a": 1.0, "b": 2.0})
