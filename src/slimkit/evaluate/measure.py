"""Measure models side by side on the same data: size, latency, fidelity to a reference, task metric.

`Evaluator` loads the data once and caches the reference outputs, so comparing several artifacts
against one original costs one reference pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimkit.data import Dataset, load_data
from slimkit.evaluate.fidelity import accuracy, compare_outputs
from slimkit.evaluate.latency import interleaved_p50, summarize, time_calls
from slimkit.evaluate.runners import make_runner
from slimkit.models.base import WorkingModel


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
        }


class Evaluator:
    """Shared data and reference for measuring several models the same way."""

    def __init__(
        self,
        data: Any = None,
        *,
        reference: WorkingModel | None = None,
        like: WorkingModel | None = None,
        threads: int = 2,
        batch_size: int = 1,
        seq_len: int = 128,
        shapes: Mapping[str, Sequence[int]] | None = None,
        max_samples: int | None = None,
        latency_runs: int = 50,
        latency_seconds: float = 0.5,
        warmup: int = 5,
    ) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self.latency_runs = latency_runs
        self.latency_seconds = latency_seconds
        self.warmup = warmup
        template = like or reference
        if template is None:
            raise ValueError("Evaluator needs a model to read the input signature from (like= or reference=)")
        dataset = load_data(data, template, batch_size=batch_size, seq_len=seq_len, shapes=shapes,
                            max_samples=max_samples)
        # Generated inputs already have the requested (or --shape-fixed) batch; real data is re-batched.
        self.dataset: Dataset = dataset if dataset.generated or not dataset.batches else dataset.rebatch(batch_size)
        self.reference = reference
        self._reference_outputs: list[np.ndarray] | None = None

    def reference_outputs(self) -> list[np.ndarray] | None:
        if self.reference is None:
            return None
        if self._reference_outputs is None:
            runner = make_runner(self.reference, self.threads)
            self._reference_outputs = [runner.run(b.feed)[0] for b in self.dataset]
        return self._reference_outputs

    def measure(self, model: WorkingModel, *, label: str = "", latency: bool = True) -> Measurement:
        runner = make_runner(model, self.threads)
        outputs = [runner.run(b.feed) for b in self.dataset]
        primary = [o[0] for o in outputs]
        lat = {}
        if latency:
            feed = self.dataset.batches[0].feed
            times = time_calls(lambda: runner.run(feed), warmup=self.warmup, runs=self.latency_runs,
                               min_seconds=self.latency_seconds)
            lat = summarize(times, self.dataset.batches[0].size)
        fidelity = None
        refs = self.reference_outputs()
        if refs is not None:
            fidelity = compare_outputs(refs, primary, classification=_is_classifier(model, primary))
        metrics = {}
        if self.dataset.has_labels and model.task != "embedding":
            acc = accuracy(primary, [b.labels for b in self.dataset])
            if acc is not None:
                metrics["accuracy"] = acc
        params = model.param_count() if hasattr(model, "param_count") else None
        return Measurement(
            model=model.source or label, kind=str(model.kind), runtime=runner.runtime,
            size_bytes=int(model.size_bytes()), params=params, latency_ms=lat,
            batch_size=self.dataset.batches[0].size, threads=self.threads,
            data={"source": self.dataset.source, "samples": self.dataset.num_samples,
                  "generated": self.dataset.generated},
            fidelity=fidelity, metrics=metrics, label=label,
        )


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
    threads: int = 2,
    batch_size: int = 1,
    seq_len: int = 128,
    shapes: Mapping[str, Sequence[int]] | None = None,
    max_samples: int | None = None,
) -> Measurement:
    """Measure one model (optionally against a reference) on `data` or on generated inputs."""
    evaluator = Evaluator(data, reference=reference, like=model, threads=threads, batch_size=batch_size,
                          seq_len=seq_len, shapes=shapes, max_samples=max_samples)
    return evaluator.measure(model)
