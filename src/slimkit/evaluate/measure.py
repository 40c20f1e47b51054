"""Measure models side by side on the same data: size, latency, fidelity to a reference, task metric.

`Evaluator` loads the data once and caches the reference outputs, so comparing several artifacts
against one original costs one reference pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimkit.data_sources import Dataset, load_data
from slimkit.evaluate.fidelity import accuracy_with_interval, compare_outputs
from slimkit.evaluate.latency import interleaved_p50, interleaved_rounds, summarize_rounds
from slimkit.formats import make_runner
from slimkit.models.base import WorkingModel
from slimkit.models.limits import DEFAULT_SEQUENCE
from slimkit.settings import MeasureSettings


@dataclass
class Measurement:
    """What one model measured. `as_dict()` is the JSON shape used in reports and `bench --json`."""

    model: str
    kind: str
    runtime: str
    size_bytes: int
    params: int | None
    latency_ms: dict
    batch_size: int
    threads: int
    data: dict
    fidelity: dict | None = None
    metrics: dict = field(default_factory=dict)
    label: str = ""
    # The label of the measurement this one's size and speed are judged against (see slimkit.baseline);
    # None: the report's reference.
    baseline: str | None = None
    # NaN / Inf among the outputs on the measurement data (see `nonfinite_outputs`); None when all were finite.
    nonfinite_outputs: dict | None = None
    # How the runtime ran it, where the runner can say (LiteRT: which ops XNNPACK took, which fell back).
    execution: dict | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label or self.model,
            "model": self.model,
            "kind": self.kind,
            "runtime": self.runtime,
            "size_bytes": self.size_bytes,
            "params": self.params,
            "latency_ms": self.latency_ms,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "data": self.data,
            "fidelity": self.fidelity,
            "metrics": self.metrics,
            **({"baseline": self.baseline} if self.baseline else {}),
            **({"nonfinite_outputs": self.nonfinite_outputs} if self.nonfinite_outputs else {}),
            **({"execution": self.execution} if self.execution else {}),
        }


# Unlabelled data only serves fidelity (cosine to the reference): this many samples are plenty and keep
# transformer comparisons quick. Labelled data is evaluated whole, so an accuracy is never cut to a sample.
FIDELITY_SAMPLES = 256


class Evaluator:
    """Shared data and reference for measuring several models the same way.

    `measure_all` times the models taking turns round by round (see `interleaved_rounds`), so a ratio
    between them is not at the mercy of whatever else the machine did while one of them ran.
    """

    def __init__(
        self,
        data: Any = None,
        *,
        reference: WorkingModel | None = None,
        like: WorkingModel | None = None,
        settings: MeasureSettings | None = None,
        latency_rounds: int = 7,
        round_runs: int = 10,
        round_seconds: float = 0.1,
        warmup: int = 5,
    ) -> None:
        settings = settings or MeasureSettings()
        self.settings = settings
        self.threads = settings.threads
        self.batch_size = settings.batch_size  # as requested; the timed batch is smaller when the data is smaller
        self.latency_rounds = latency_rounds
        self.round_runs = round_runs
        self.round_seconds = round_seconds
        self.warmup = warmup
        template = like or reference
        if template is None:
            raise ValueError("Evaluator needs a model to read the input signature from (like= or reference=)")
        dataset = load_data(data, template, batch_size=settings.batch_size,
                            seq_len=settings.seq_len or DEFAULT_SEQUENCE, shapes=settings.shapes,
                            max_samples=settings.max_samples)
        if settings.max_samples is None and not dataset.generated and not dataset.has_labels:
            dataset = dataset.head(FIDELITY_SAMPLES)
        # Generated inputs already have the requested (or --shape-fixed) batch; real data is re-batched.
        self.dataset: Dataset = dataset if dataset.generated or not dataset.batches else dataset.rebatch(settings.batch_size)
        self.reference = reference
        self._reference_outputs: list[np.ndarray] | None = None

    def _timed_shapes(self) -> dict[str, list[int]]:
        """The input shapes latency was timed at (batch, sequence length, image size)."""
        return _timed_shapes_of(self.dataset)

    def reference_outputs(self) -> list[np.ndarray] | None:
        if self.reference is None:
            return None
        if self._reference_outputs is None:
            runner = make_runner(self.reference, self.threads)
            self._reference_outputs = [runner.run(b.feed)[0] for b in self.dataset]
        return self._reference_outputs

    def measure(self, model: WorkingModel, *, label: str = "", latency: bool = True) -> Measurement:
        """One model alone (no interleaving: use `measure_all` to compare models)."""
        return self.measure_all([(label, model)], latency=latency)[0]

    def measure_all(self, models: Sequence[tuple[str, WorkingModel]], *, latency: bool = True) -> list[Measurement]:
        """Measure (label, model) pairs on the same data; latency interleaved round by round across them."""
        runners = [make_runner(model, self.threads) for _label, model in models]
        feed = self.dataset.batches[0].feed
        lat: list[dict] = [{} for _ in models]
        if latency:
            calls = {str(i): (lambda r=runner: r.run(feed)) for i, runner in enumerate(runners)}
            timed = interleaved_rounds(calls, rounds=self.latency_rounds, min_seconds=self.round_seconds,
                                       runs=self.round_runs, warmup=self.warmup)
            lat = [summarize_rounds(*timed[str(i)], self.dataset.batches[0].size) for i in range(len(models))]
        return [self._outcome(label, model, runner, latency_ms)
                for (label, model), runner, latency_ms in zip(models, runners, lat, strict=True)]

    def _outcome(self, label: str, model: WorkingModel, runner, latency_ms: dict) -> Measurement:
        outputs = [runner.run(b.feed) for b in self.dataset]
        primary = [o[0] for o in outputs]
        fidelity = None
        refs = self.reference_outputs()
        if refs is not None:
            fidelity = compare_outputs(refs, primary, classification=_is_classifier(model, primary))
        metrics = {}
        if self.dataset.has_labels and model.task != "embedding":
            scored = accuracy_with_interval(primary, [b.labels for b in self.dataset])
            if scored is not None:
                metrics.update(scored)
        params = model.param_count() if hasattr(model, "param_count") else None
        return Measurement(
            model=model.source or label, kind=str(model.kind), runtime=runner.runtime,
            size_bytes=int(model.size_bytes()), params=params, latency_ms=latency_ms,
            batch_size=self.dataset.batches[0].size, threads=self.threads,
            data={"source": self.dataset.source, "samples": self.dataset.num_samples,
                  "generated": self.dataset.generated, "labelled": self.dataset.has_labels,
                  "batch_size_requested": self.batch_size, "inputs": self._timed_shapes()},
            fidelity=fidelity, metrics=metrics, label=label, nonfinite_outputs=nonfinite_outputs(outputs),
            execution=runner.execution() if hasattr(runner, "execution") else None,
        )


def nonfinite_outputs(outputs: Sequence[Sequence[np.ndarray]]) -> dict | None:
    """NaN and Inf counts over every float output of every batch, with how many values were checked; None
    when all are finite. A model that returns NaN measures "fast" and "small" all the same: the report must
    say so (the `nan-output` flag) rather than show figures computed from NaN."""
    nan = inf = total = 0
    for batch in outputs:
        for array in batch:
            array = np.asarray(array)
            if array.dtype.kind not in "fc":
                continue
            total += array.size
            nan += int(np.count_nonzero(np.isnan(array)))
            inf += int(np.count_nonzero(np.isinf(array)))
    return {"nan": nan, "inf": inf, "values": total} if nan or inf else None


def _timed_shapes_of(dataset: Dataset) -> dict[str, list[int]]:
    return {name: list(arr.shape) for name, arr in dataset.batches[0].feed.items()} if dataset.batches else {}


def _is_classifier(model: WorkingModel, outputs: list[np.ndarray]) -> bool:
    if model.task is not None:
        return model.task == "classification"
    return bool(outputs) and outputs[0].ndim == 2 and outputs[0].shape[1] > 1


def compare_latency(models: Mapping[str, WorkingModel], feed: dict, *, threads: int = 2, rounds: int = 7,
                    min_seconds: float = 0.3) -> dict[str, float]:
    """p50 (ms) of several models on one input, measured taking turns (see `interleaved_p50`)."""
    runners = {name: make_runner(model, threads) for name, model in models.items()}
    calls = {name: (lambda r=runner: r.run(feed)) for name, runner in runners.items()}
    return interleaved_p50(calls, rounds=rounds, min_seconds=min_seconds)


def evaluate(
    model: WorkingModel,
    data: Any = None,
    *,
    reference: WorkingModel | None = None,
    settings: MeasureSettings | None = None,
) -> Measurement:
    """Measure one model (optionally against a reference) on `data` or on generated inputs."""
    evaluator = Evaluator(data, reference=reference, like=model, settings=settings)
    return evaluator.measure(model)
