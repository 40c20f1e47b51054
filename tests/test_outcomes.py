"""Typed pass outcomes: the pipeline, the API and the CLI act on `PassResult.outcome` (done, met, missed with
its numbers, skipped with its reason), never on keys found in a pass's stats."""

from __future__ import annotations

import json

import pytest

from slimkit.cli import main
from slimkit.demo_models import DigitsMLP
from slimkit.formats import load
from slimkit.models.base import ModelKind, WorkingModel
from slimkit.passes import base
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.outcome import Outcome, Status
from slimkit.pipeline import parse_recipe, run_pipeline
from slimkit.report.format import pass_rows


def test_outcome_constructors_and_report_form_round_trip():
    missed = Outcome.judged(False, metric="accuracy_drop", measured=0.07, target=0.01, reason="drop 0.07 > 0.01")
    assert missed.missed and missed.status == Status.MISSED and missed.reason == "drop 0.07 > 0.01"
    met = Outcome.judged(True, metric="cosine_mean", measured=0.999, target=0.99, reason="ignored when met")
    assert met.status == "met" and met.reason is None and not met.missed
    skipped = Outcome.skipped("already ONNX")
    assert skipped.is_skipped and skipped.reason == "already ONNX"
    for outcome in (missed, met, skipped, Outcome()):
        assert Outcome.from_dict(json.loads(json.dumps(outcome.as_dict()))) == outcome
    assert Outcome.from_dict({"skipped": []}) == Outcome() == Outcome.from_dict(None)  # no status: done


def test_fake_quant_is_not_reported_as_skipped(tmp_path):
    recipe = parse_recipe({"passes": [{"pass": "fake-quant", "bits": 8}]})
    result = run_pipeline(load(DigitsMLP()), recipe, Context(workdir=tmp_path))  # untrained: rounding is enough
    assert result.outcomes == [Outcome()] and result.steps[0]["outcome"]["status"] == "done"
    row = pass_rows({"passes": result.steps})[0]
    assert "skipped" not in row["stats"] and row["stats"].startswith("quantized=")


class MissConfig(PassConfig):
    reach: float = 0.5


class Miss(Pass):
    """Keeps the model and reports a target it could not reach: what int8-auto does at its best effort."""

    name = "test-miss"
    accepts = frozenset({ModelKind.ONNX})
    returns = None
    Config = MissConfig

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        outcome = Outcome.judged(False, metric="cosine_mean", measured=self.config.reach, target=0.99,
                                 reason=f"mean cosine {self.config.reach} < 0.99")
        return PassResult(model, {"tries": 3}, outcome)


@pytest.fixture
def miss_pass(monkeypatch):
    base.discover_passes()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register(Miss)


def test_a_missed_target_saves_the_result_then_exits_3(miss_pass, foreign_onnx, tmp_path, capsys):
    (tmp_path / "miss.yaml").write_text("name: miss\npasses:\n  - pass: test-miss\n    reach: 0.9\n")
    out = tmp_path / "out"
    code = main(["optimize", str(foreign_onnx[0]), "--recipe", str(tmp_path / "miss.yaml"), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 3
    last = captured.err.strip().splitlines()[-1]  # after any progress lines: the one line that says why
    assert "target not met (test-miss: mean cosine 0.9 < 0.99): the best configuration found was saved" \
        in last
    assert "target missed: mean cosine 0.9 < 0.99; tries=3" in captured.out  # the passes table says so too
    assert (out / "model.onnx").exists()
    step = json.loads((out / "report.json").read_text())["passes"][-1]
    assert step["outcome"] == {"status": "missed", "reason": "mean cosine 0.9 < 0.99", "metric": "cosine_mean",
                               "measured": 0.9, "target": 0.99}
    assert step["stats"] == {"tries": 3}
