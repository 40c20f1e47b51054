"""Numbers a user can trust: disjoint data for training, selection and measurement; interleaved timing with
its spread; accuracy with its interval; a flag for outputs that do not match; options checked before work."""

from __future__ import annotations

import json

import numpy as np
import pytest

import slimkit
from slimkit.bundled_data import digits_arrays
from slimkit.cli import main
from slimkit.data_sources import Subset, load_data, split_indices
from slimkit.dataplan import plan_data
from slimkit.errors import SlimkitError, TargetNotMetError
from slimkit.evaluate.fidelity import accuracy_with_interval, wilson_interval
from slimkit.evaluate.latency import paired_ratio
from slimkit.evaluate.measure import Evaluator
from slimkit.formats import load
from slimkit.report.flags import accuracy_change, compute_flags, speed_verdict

QUICK = {"latency_rounds": 3, "round_runs": 3, "round_seconds": 0.0, "warmup": 1}


# ---- the split and the seen-data flag -------------------------------------------------------------------

def test_split_is_disjoint_seeded_and_stratified():
    _, y = digits_arrays("train")
    train, val, stratified = split_indices(len(y), y, validation_fraction=0.2, seed=0)
    assert stratified
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(y)
    assert abs(len(val) - round(0.2 * len(y))) <= 1
    # every class keeps its share (within one sample) in the validation part
    for c in range(10):
        share = (y == c).mean() * len(val)
        assert abs((y[val] == c).sum() - share) <= 1
    again, _, _ = split_indices(len(y), y, validation_fraction=0.2, seed=0)
    other, _, _ = split_indices(len(y), y, validation_fraction=0.2, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    with pytest.raises(SlimkitError, match="too few"):
        split_indices(1, None)


def test_subset_loads_exactly_its_samples(digits_mlp):
    model = load(digits_mlp, task="classification")
    whole = load_data("sklearn:digits:train", model, batch_size=64)
    x_all, y_all = whole.arrays()
    part = load_data(Subset("sklearn:digits:train", (3, 1, 7), "validation"), model, batch_size=2)
    x, y = part.arrays()
    assert np.array_equal(x["x"], x_all["x"][[3, 1, 7]]) and np.array_equal(y, y_all[[3, 1, 7]])
    assert [b.size for b in part] == [2, 1]


def test_data_plan_splits_a_lone_data_set_for_training_and_marks_what_saw_the_measurement(digits_mlp):
    model = load(digits_mlp, task="classification")
    plan = plan_data(model, {"train"}, data="sklearn:digits:train")
    assert isinstance(plan.train, Subset) and isinstance(plan.select, Subset)
    assert set(plan.train.indices).isdisjoint(plan.select.indices)
    assert plan.split["stratified"] and plan.split["train"] + plan.split["validation"] == plan.split["samples"]
    assert plan.seen_by == ["selection", "training"]  # measured on the same --data: flagged
    held_out = plan_data(model, {"train"}, data="sklearn:digits:train", eval_data="sklearn:digits:test")
    assert held_out.seen_by == [] and held_out.evaluate == "sklearn:digits:test"
    # calibration only: nothing is split, but measuring on the calibration data is still marked
    calib = plan_data(model, {"calibrate"}, data="sklearn:digits:val")
    assert calib.split is None and calib.select == "sklearn:digits:val" and calib.seen_by == ["calibration"]
    # a recipe that uses no data measures on --data without a mark
    assert plan_data(model, set(), data="sklearn:digits:val").seen_by == []


def test_optimize_trains_on_one_part_selects_on_the_other_and_flags_seen_data(digits_mlp):
    recipe = {"name": "prune-ft", "description": "", "passes": [
        {"pass": "prune", "sparsity": 0.5, "train": {"epochs": 1, "lr": 1e-3}}]}
    from slimkit.pipeline import parse_recipe

    seen = slimkit.optimize(load(digits_mlp, task="classification"), parse_recipe(recipe),
                            data="sklearn:digits:train", measure=True)
    report = seen.report
    assert report["data"]["split"]["validation"] > 0
    assert any("was split" in note and "stratified" in note for note in report["notes"])
    assert report["data"]["select"].startswith("validation part")
    assert "measured-on-seen-data" in [f["flag"] for f in report["flags"]]
    clean = slimkit.optimize(load(digits_mlp, task="classification"), parse_recipe(recipe),
                             data="sklearn:digits:train", eval_data="sklearn:digits:test")
    assert "measured-on-seen-data" not in [f["flag"] for f in clean.report["flags"]]
    measured = clean.report["measurements"][1]
    _, y_test = digits_arrays("test")
    assert measured["data"]["samples"] == len(y_test)  # labelled data evaluated whole (not cut at 256)
    low, high = measured["metrics"]["accuracy_ci95"]
    assert low < measured["metrics"]["accuracy"] < high


# ---- latency: interleaved rounds, paired ratio with spread ------------------------------------------------

def test_measure_all_interleaves_and_reports_spread(digits_mlp):
    model = load(digits_mlp, task="classification")
    ev = Evaluator("sklearn:digits:test", reference=model, like=model, **QUICK)
    ref, same = ev.measure_all([("reference", model), ("same", model)])
    for m in (ref, same):
        lat = m.latency_ms
        assert len(lat["p50_rounds"]) == 3
        assert lat["p50_spread"][0] <= lat["p50"] <= lat["p50_spread"][1]
        assert lat["p50"] == pytest.approx(float(np.median(lat["p50_rounds"])))
    flags = compute_flags([ref.as_dict(), same.as_dict()], "reference")
    assert not [f for f in flags if f["flag"] in ("slower", "faster-but-off")]


def test_paired_ratio_and_verdicts():
    ratio, spread = paired_ratio([2.0, 4.0, 1.0], [4.0, 8.0, 2.0])
    assert ratio == pytest.approx(0.5) and spread == pytest.approx([0.5, 0.5])
    assert paired_ratio([1.0], [1.0, 2.0]) is None
    assert speed_verdict({"p50_ratio": 0.5, "p50_ratio_spread": [0.45, 0.55]}) == "faster"
    assert speed_verdict({"p50_ratio": 1.5, "p50_ratio_spread": [1.3, 1.7]}) == "slower"
    # a spread that includes 1.0 is no measurable difference, however far the median is
    assert speed_verdict({"p50_ratio": 0.8, "p50_ratio_spread": [0.6, 1.05]}) == "same"
    assert speed_verdict({"p50_ratio": 1.3, "p50_ratio_spread": [0.95, 1.6]}) == "same"


def test_smaller_model_within_noise_is_flagged_not_faster():
    ref = {"label": "ref", "size_bytes": 1000, "latency_ms": {"p50": 1.0, "p50_rounds": [1.0] * 5}}
    noisy = {"label": "c", "size_bytes": 300, "latency_ms": {"p50": 0.9, "p50_rounds": [0.7, 0.9, 1.1, 1.2, 0.8]}}
    clear = {"label": "d", "size_bytes": 300, "latency_ms": {"p50": 0.5, "p50_rounds": [0.5, 0.4, 0.6, 1.3, 0.5]}}
    flags = [(f["model"], f["flag"]) for f in compute_flags([ref, noisy, clear], "ref")]
    assert ("c", "smaller-not-faster") in flags  # median 0.9x, but the spread includes 1.0
    assert ("d", "smaller-not-faster") not in flags  # one slow round does not hide a 2x speed-up


# ---- accuracy with its interval -------------------------------------------------------------------------

def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(95, 100) == pytest.approx((0.8882, 0.9785), abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    scores = [np.eye(3)[[0, 1, 2, 0]]]
    got = accuracy_with_interval(scores, [np.array([0, 1, 2, 1])])
    assert got["accuracy"] == 0.75 and got["accuracy_samples"] == 4
    assert got["accuracy_ci95"] == pytest.approx(list(wilson_interval(3, 4)))


def test_accuracy_change_inside_the_interval_is_not_a_drop():
    ref = {"label": "ref", "metrics": {"accuracy": 0.95, "accuracy_ci95": list(wilson_interval(91, 96))}}
    small = {"label": "c", "metrics": {"accuracy": 0.93}}  # 2 images fewer of 96: noise
    big = {"label": "d", "metrics": {"accuracy": 0.80}}
    assert accuracy_change(small, ref) == "same"
    assert accuracy_change(big, ref) == "drop"
    flags = [(f["model"], f["flag"]) for f in compute_flags([ref, small, big], "ref")]
    assert ("c", "accuracy-drop") not in flags and ("d", "accuracy-drop") in flags


# ---- bench: outputs that do not match, --json with the comparison -----------------------------------------

@pytest.fixture
def two_models(tmp_path, digits_mlp):
    """The digits MLP as ONNX, and a model with the same input but 5 outputs (a mismatch)."""
    import torch

    from slimkit.demo_models import DigitsMLP

    torch.manual_seed(0)
    good = slimkit.convert(load(digits_mlp), "onnx", tmp_path / "good.onnx")[0]
    other = DigitsMLP()
    other.net[-1] = torch.nn.Linear(100, 5)
    bad = slimkit.convert(load(other), "onnx", tmp_path / "bad.onnx")[0]
    x, y = digits_arrays("test")
    np.savez(tmp_path / "d.npz", x=x[:40], labels=y[:40])
    return good, bad, tmp_path / "d.npz"


def test_bench_json_reference_carries_comparison_and_mismatch_exits_nonzero(capsys, two_models):
    good, bad, data = two_models
    code = main(["bench", str(good), str(bad), "--reference", str(good), "--data", str(data), "--json"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 4
    by_label = {o["label"]: o for o in out}
    assert by_label["reference"]["reference"] is True and "vs_reference" not in by_label["reference"]
    same = by_label[str(good)]
    assert same["vs_reference"]["size_ratio"] == pytest.approx(1.0)
    assert "p50_ratio" in same["vs_reference"] and len(same["vs_reference"]["p50_ratio_spread"]) == 2
    assert "output-mismatch" in [f["flag"] for f in by_label[str(bad)]["flags"]]
    assert not [f for f in same["flags"] if f["flag"] == "output-mismatch"]
    assert main(["bench", str(good), "--reference", str(good), "--data", str(data), "--json"]) == 0


def test_bench_table_shows_output_mismatch(capsys, two_models):
    good, bad, data = two_models
    assert main(["bench", str(bad), "--reference", str(good), "--data", str(data)]) == 4
    captured = capsys.readouterr()
    assert "output-mismatch" in captured.out and "do not match" in captured.err


# ---- options checked before any work ---------------------------------------------------------------------

@pytest.mark.parametrize("option", [["--threads", "0"], ["--batch-size", "0"]])
def test_nonsense_options_are_refused_before_work(capsys, two_models, option, tmp_path):
    good, _, data = two_models
    code = main(["optimize", str(good), "--recipe", "int8-dynamic", "-o", str(tmp_path / "out"), *option])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert main(["bench", str(good), "--data", str(data), *option]) == 2


def test_empty_npz_is_one_clear_error(capsys, two_models, tmp_path):
    good, _, _ = two_models
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 64), np.float32))
    assert main(["bench", str(good), "--data", str(tmp_path / "empty.npz")]) == 2
    assert "no samples" in capsys.readouterr().err


# ---- --max-drop backs off a compression pass on the validation data ----------------------------------------

def test_max_drop_backs_off_pruning_until_the_validation_drop_holds(digits_mlp):
    from slimkit.pipeline import parse_recipe

    recipe = parse_recipe({"name": "prune-hard", "passes": [{"pass": "prune", "sparsity": 0.99}]})
    result = slimkit.optimize(load(digits_mlp, task="classification"), recipe, data="sklearn:digits:val",
                              eval_data="sklearn:digits:test", max_drop=0.05, measure=False)
    stats = result.steps[0]["stats"]
    attempts = stats["backoff"]["attempts"]
    sparsities = [a["config"]["sparsity"] for a in attempts]
    assert len(attempts) >= 2 and sparsities == sorted(sparsities, reverse=True) and sparsities[0] == 0.99
    assert all(a["drop"] > 0.05 for a in attempts[:-1]) and attempts[-1]["drop"] <= 0.05
    assert result.outcomes[0].status == "met" and result.steps[0]["config"]["sparsity"] == sparsities[-1]
    assert result.targets_missed() == [] and slimkit.api.targets_missed(result.report) == []
    result.require_targets()  # met: nothing raised


def test_max_drop_that_cannot_be_met_is_reported_as_missed(digits_mlp):
    from slimkit.pipeline import parse_recipe

    recipe = parse_recipe({"name": "share", "passes": [{"pass": "cluster", "k": 128, "min_params": 100}]})
    result = slimkit.optimize(load(digits_mlp, task="classification"), recipe, data="sklearn:digits:val",
                              max_drop=-0.5, measure=False)  # a gain of 50 points: impossible
    stats = result.steps[0]["stats"]
    assert [a["config"]["k"] for a in stats["backoff"]["attempts"]] == [128, 256]
    outcome = result.outcomes[0]
    assert outcome.missed and outcome.metric == "accuracy_drop" and outcome.target == -0.5
    assert outcome.measured == stats["backoff"]["attempts"][-1]["drop"]
    missed = [f"cluster: {outcome.reason}"]
    assert result.targets_missed() == slimkit.api.targets_missed(result.report) == missed
    with pytest.raises(TargetNotMetError, match="target not met") as info:
        result.require_targets()
    assert info.value.exit_code == 3


def test_max_drop_on_a_recipe_nothing_can_steer_is_refused(digits_mlp):
    with pytest.raises(SlimkitError, match="can steer"):
        slimkit.optimize(load(digits_mlp, task="classification"), "fp16", data="sklearn:digits:val", max_drop=0.01)
