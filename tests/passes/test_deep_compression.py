"""Deep Compression end to end, cluster and factorization fine-tuning, the .slim artifact and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from slimkit.bundled_data import digits_arrays
from slimkit.demo_models import trained_digits_model
from slimkit.errors import SlimkitError
from slimkit.formats import load, make_runner
from slimkit.passes.base import Context, get_pass
from slimkit.pipeline import load_recipe, run_pipeline
from slimkit.settings import MeasureSettings


def accuracy(module) -> float:
    x, y = digits_arrays("test")
    with torch.inference_mode():
        return float((module.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def ctx(tmp_path, **kw) -> Context:
    # Train on "fit", pick epochs on "val": the test split that the assertions read had no say in training.
    return Context(train_data="sklearn:digits:fit", data="sklearn:digits:val", workdir=tmp_path, settings=MeasureSettings(threads=1), **kw)


@pytest.fixture
def mlp(digits_cache):
    return load(trained_digits_model("mlp", digits_cache), task="classification")


@pytest.fixture(scope="module")
def deep_compressed(digits_cache, tmp_path_factory):
    teacher = load(trained_digits_model("mlp", digits_cache), task="classification")
    result = run_pipeline(teacher, load_recipe("deep-compression"), ctx(tmp_path_factory.mktemp("dc")))
    return teacher, result


def test_deep_compression_is_40x_smaller_and_keeps_accuracy(deep_compressed):
    teacher, result = deep_compressed
    stats = result.steps[-1]["stats"]
    assert result.model.kind == "slim" and result.model.path.suffix == ".slim"
    assert stats["compression_vs_fp32_weights"] >= 40
    assert result.model.size_bytes() * 40 <= stats["fp32_weight_bytes"]
    x, y = digits_arrays("test")
    restored_acc = float((make_runner(result.model, 1).run({"x": x})[0].argmax(1) == y).mean())
    assert restored_acc >= accuracy(teacher.module) - 0.01
    prune_stats, cluster_stats = result.steps[0]["stats"], result.steps[1]["stats"]
    assert prune_stats["sparsity"] == pytest.approx(0.95, abs=0.002)
    assert cluster_stats["max_distinct_values"] <= 17  # 16 shared values plus the kept zero
    assert cluster_stats["training"]["history"]


def test_slim_archive_restores_the_pruned_clustered_weights_bit_exactly(deep_compressed, tmp_path):
    import onnx

    from slimkit.archive.onnx_io import load_onnx_archive

    _, result = deep_compressed
    onnx_before = result.steps[-2]  # onnx-cleanup's output was archived
    restored = load_onnx_archive(result.model.path)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in restored.graph.initializer}
    big = [w for w in weights.values() if w.ndim == 2]
    assert len(big) == 3
    for w in big:
        assert (w == 0).mean() == pytest.approx(0.95, abs=0.01)
        assert len(np.unique(w)) <= 17
    assert onnx_before["pass"] == "onnx-cleanup"
    loaded = load(result.model.path)
    assert loaded.kind == "slim"
    x, _ = digits_arrays("test")
    np.testing.assert_array_equal(make_runner(loaded, 1).run({"x": x})[0], make_runner(result.model, 1).run({"x": x})[0])


def test_corrupt_slim_file_is_one_clear_error(deep_compressed, tmp_path):
    _, result = deep_compressed
    data = result.model.path.read_bytes()
    broken = tmp_path / "broken.slim"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlimkitError, match="not a valid .slim archive"):
        load(broken)
    proc = subprocess.run([sys.executable, "-m", "slimkit.cli", "bench", str(broken)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not a valid .slim archive" in proc.stderr


def test_cluster_finetuning_keeps_shared_values_and_zeros(mlp, tmp_path):
    pruned = get_pass("prune")({"sparsity": 0.8}).run(mlp, ctx(tmp_path / "p")).model
    before = accuracy(pruned.module)
    cfg = {"k": 8, "min_params": 1000, "train": {"epochs": 6, "lr": 1e-3}}
    clustered = get_pass("cluster")(cfg).run(pruned, ctx(tmp_path / "c"))
    tuned = dict(clustered.model.module.named_parameters())
    original = dict(pruned.module.named_parameters())
    for name in ("net.0.weight", "net.2.weight", "net.4.weight"):
        w = tuned[name].detach()
        assert len(torch.unique(w)) <= 9  # 8 trained centroids + the zero
        assert torch.equal(w == 0, original[name].detach() == 0)  # pruned positions stay zero
    no_train = get_pass("cluster")({"k": 8, "min_params": 1000}).run(pruned, ctx(tmp_path / "n")).model
    assert not torch.equal(no_train.module.net[0].weight, tuned["net.0.weight"])  # centroids moved
    assert accuracy(clustered.model.module) >= accuracy(no_train.module) - 0.005
    assert accuracy(clustered.model.module) > before - 0.05


def test_factorize_with_finetuning_recovers_accuracy(mlp, tmp_path):
    cfg = {"ratio": 0.5, "train": {"epochs": 15, "lr": 2e-3}}
    tuned = get_pass("factorize")(cfg).run(mlp, ctx(tmp_path / "t"))
    plain = get_pass("factorize")({"ratio": 0.5}).run(mlp, ctx(tmp_path / "p"))
    assert tuned.stats["layers"] >= 2
    assert accuracy(tuned.model.module) >= accuracy(mlp.module) - 0.01
    # At rank 26/37 plain SVD loses little; with the epoch picked on "val" (not on the test split read here)
    # fine-tuning lands within a couple of test images of it. A broken recovery loop would lose far more.
    assert accuracy(tuned.model.module) >= accuracy(plain.model.module) - 0.01


def test_cli_distill_with_student_checkpoints_and_resume(digits_cache, tmp_path):
    import json

    from safetensors.torch import save_file

    weights = tmp_path / "mlp.safetensors"
    save_file(trained_digits_model("mlp", digits_cache).state_dict(), str(weights))
    cmd = [sys.executable, "-m", "slimkit.cli", "optimize", "slimkit.demo_models:DigitsMLP", "--weights", str(weights),
           "--task", "classification", "--recipe", "distill", "--student", "slimkit.demo_models:small_digits_mlp",
           "--train-data", "sklearn:digits:fit", "--data", "sklearn:digits:val", "--batch-size", "32",
           "--checkpoint-dir", str(tmp_path / "ck")]
    first = subprocess.run(cmd + ["-o", str(tmp_path / "a")], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    distill = next(p for p in report["passes"] if p["pass"] == "distill")["stats"]
    assert distill["student_params"] < 3000 and distill["after"]["accuracy"] > distill["before"]["accuracy"] + 0.5
    assert len(distill["history"]) == 10 and "soft" in distill["history"][0]
    assert (tmp_path / "ck" / "distill" / "checkpoint.pt").exists()
    html = (tmp_path / "a" / "report.html").read_text()
    assert "Training curves" in html and "distill: per epoch" in html
    assert html.count("<polyline") >= 3  # loss, hard, soft (and the eval accuracy)
    again = subprocess.run(cmd + ["-o", str(tmp_path / "b"), "--resume"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    resumed = next(p for p in json.loads((tmp_path / "b" / "report.json").read_text())["passes"]
                   if p["pass"] == "distill")["stats"]
    assert resumed["resumed_from_epoch"] is not None
    missing = subprocess.run(cmd[:-2] + ["--checkpoint-dir", str(tmp_path / "none"), "-o", str(tmp_path / "c"),
                                         "--resume"], capture_output=True, text=True)
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr
