"""The Ray executor on a local Ray instance started by the test (2 workers): the same store semantics and the
same answer as the local executor for the same seed, with Ray's per-trial overhead reported."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import save_file

from slimkit import cli
from slimkit.demo_models import trained_digits_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory, digits_cache):
    root = tmp_path_factory.mktemp("ray-mlp")
    module = trained_digits_model("mlp", digits_cache)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(root / "mlp.safetensors"))
    return root / "mlp.safetensors"


def _search(weights, out, *extra: str) -> dict:
    # size is the objective: deterministic, so both executors must agree exactly on the best
    code = cli.main(["search", "slimkit.demo_models:DigitsMLP", "--weights", str(weights), "--data",
                     "sklearn:digits:test", "--runtimes", "onnxruntime", "--max-drop", "0.02", "--objective", "size",
                     "--budget-trials", "4", "--threads", "1", "--seed", "7", "-o", str(out), *extra])
    assert code == 0
    return json.loads((out / "report.json").read_text())


def test_ray_executor_gives_the_local_answer(weights, tmp_path):
    local = _search(weights, tmp_path / "local")
    ray_report = _search(weights, tmp_path / "ray", "--executor", "ray", "--workers", "2")
    assert ray_report["executor"] == "ray" and local["executor"] == "local"
    pick = local["recommendation"]
    assert ray_report["recommendation"]["label"] == pick["label"]
    assert ray_report["recommendation"]["passes"] == pick["passes"]
    # every trial went through the store the same way, its artifact written by the driver
    trials = [t for t in ray_report["trials"] if t["state"] == "complete"]
    assert len(trials) == 4
    for t in trials:
        assert (tmp_path / "ray" / t["artifact"]).is_file()
        assert t["task_wall_s"] >= t["duration_s"] > 0
    overhead = ray_report["ray"]
    assert overhead["trials"] == 4 and overhead["per_trial_overhead_s_median"] >= 0
    assert (tmp_path / "ray" / "best" / "model.onnx").is_file()
