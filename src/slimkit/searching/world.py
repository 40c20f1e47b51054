"""What every trial of a search shares: the original model, the three disjoint data parts, the floor, the
plain ONNX baseline every candidate is timed against, and the validation evaluator (reference outputs cached).

Built once by the driver for the local executor, and once per worker process from a picklable `WorldSpec`
on Ray, so a worker on another node measures exactly what a local trial would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.data_sources import Subset, describe_source, load_data, split_indices
from slimkit.errors import SlimkitError
from slimkit.evaluate.measure import Evaluator
from slimkit.models.base import WorkingModel
from slimkit.settings import MeasureSettings

# Fractions of --data when no --eval-data is given: fit (calibrate, train) / validation (rank trials) /
# held back (the final figures). With --eval-data, --data is split into fit and validation only.
HELD_BACK_FRACTION = 0.2
VALIDATION_FRACTION = 0.25
SPLIT_SEED = 0
BASELINE_RECIPE = "onnx"  # the plain export every candidate's speed and size are judged against


@dataclass(frozen=True)
class Floor:
    """The accuracy floor every candidate must keep on validation: `metric` ('accuracy' or 'cosine') at or
    above `threshold` (for max_drop: the original's validation accuracy minus the drop)."""

    metric: str
    rule: str  # "max_drop" | "min_cosine"
    value: float
    threshold: float

    def met(self, metric_value: float | None) -> bool:
        return metric_value is not None and metric_value >= self.threshold - 1e-12

    def text(self) -> str:
        if self.rule == "max_drop":
            return (f"accuracy drop <= {self.value * 100:g} points (>= {self.threshold * 100:.2f}% on "
                    "validation)")
        return f"mean cosine to the original >= {self.value:g}"

    def as_dict(self) -> dict:
        return {"metric": self.metric, "rule": self.rule, "value": self.value, "threshold": self.threshold,
                "text": self.text()}


@dataclass(frozen=True)
class WorldSpec:
    """Everything a worker needs to rebuild the world: picklable (a path or arrays, never a live model)."""

    model: Any  # a path, or a WorkingModel in the driver's own process
    fit: Any
    validation: Any
    settings: MeasureSettings
    floor_rule: str
    floor_value: float
    load_kwargs: dict = field(default_factory=dict)


@dataclass
class World:
    spec: WorldSpec
    original: WorkingModel
    baseline: WorkingModel
    evaluator: Evaluator
    floor: Floor
    original_metric: float | None
    settings: MeasureSettings
    baseline_steps: list = field(default_factory=list)  # the plain export's steps, as a chain spells them


_CACHE: dict[str, World] = {}


def build_world(spec: WorldSpec, *, cache_key: str | None = None) -> World:
    """Load the model, export the plain ONNX baseline, prepare the validation evaluator and fix the floor.
    With `cache_key`, a worker process builds it once for all its trials."""
    if cache_key is not None and cache_key in _CACHE:
        return _CACHE[cache_key]
    from slimkit.api import optimize
    from slimkit.formats import load

    original = spec.model if isinstance(spec.model, WorkingModel) else load(
        spec.model, shapes=spec.settings.shapes, data=spec.fit, **spec.load_kwargs)
    if original.task is None:
        from slimkit.dataplan import infer_task

        original.task = infer_task(original, spec.fit, seq_len=spec.settings.seq_len or 128,
                                   shapes=spec.settings.shapes)
    from slimkit.pipeline import load_recipe

    plain = load_recipe(BASELINE_RECIPE)
    baseline = optimize(original, plain, settings=spec.settings, measure=False).model
    evaluator = Evaluator(spec.validation, reference=original, like=original, settings=spec.settings)
    reference = evaluator.measure(original, label="original", latency=False)
    original_metric = reference.metrics.get("accuracy")
    if spec.floor_rule == "max_drop":
        if original_metric is None:
            raise SlimkitError("--max-drop needs labelled data for a classifier (the data has no labels, or the "
                               "model's outputs are not class scores)", "use --min-cosine instead")
        floor = Floor("accuracy", "max_drop", spec.floor_value, original_metric - spec.floor_value)
    else:
        floor = Floor("cosine", "min_cosine", spec.floor_value, spec.floor_value)
    world = World(spec, original, baseline, evaluator, floor, original_metric, spec.settings,
                  [(name, dict(cfg or {})) for name, cfg in plain.steps])
    if cache_key is not None:
        _CACHE[cache_key] = world
    return world


def metric_of(measurement: Any, floor: Floor) -> float | None:
    """The floor's metric from a Measurement (or its dict)."""
    data = measurement if isinstance(measurement, dict) else measurement.as_dict()
    if floor.metric == "accuracy":
        return (data.get("metrics") or {}).get("accuracy")
    return (data.get("fidelity") or {}).get("cosine_mean")


@dataclass(frozen=True)
class Splits:
    fit: Any
    validation: Any
    evaluation: Any
    held_back: bool
    record: dict


def split_data(model: WorkingModel, data: Any, eval_data: Any, settings: MeasureSettings) -> Splits:
    """Three disjoint parts: fit (calibration and training), validation (ranks the trials) and evaluation
    (the final figures: --eval-data, else a held-back part of --data that no trial sees)."""
    whole = load_data(data, model, batch_size=256, seq_len=settings.seq_len or 128, shapes=settings.shapes)
    if whole.generated:
        raise SlimkitError("search needs real data (--data): generated inputs cannot tell a good model from "
                           "a bad one", "give --data (an .npz, a text file, or a bundled set such as digits)")
    labels = whole.arrays()[1]
    n = whole.num_samples
    indices = np.arange(n)
    held: np.ndarray | None = None
    if eval_data is None:
        rest, held, _ = split_indices(n, labels, validation_fraction=HELD_BACK_FRACTION, seed=SPLIT_SEED)
        indices = rest
    sub_labels = None if labels is None else np.asarray(labels)[indices]
    fit_pos, val_pos, stratified = split_indices(len(indices), sub_labels, validation_fraction=VALIDATION_FRACTION,
                                                 seed=SPLIT_SEED + 1)
    fit = Subset(data, tuple(int(i) for i in indices[fit_pos]), "train")
    validation = Subset(data, tuple(int(i) for i in indices[val_pos]), "validation")
    evaluation = eval_data if held is None else Subset(data, tuple(int(i) for i in held), "evaluation")
    record = {"source": describe_source(data), "samples": n, "fit": len(fit.indices),
              "validation": len(validation.indices), "stratified": stratified,
              "evaluation": describe_source(evaluation),
              "evaluation_samples": len(held) if held is not None else None, "held_back": held is not None}
    return Splits(fit, validation, evaluation, held is not None, record)


def fingerprint(model_files: list[Path], data: Any) -> str:
    """Identifies the model (its files' bytes) and data a store was made for, so --resume refuses another."""
    digest = hashlib.sha256()
    for path in sorted(model_files):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    digest.update(describe_source(data).encode())
    if isinstance(data, dict):  # arrays from Python: their bytes, not only "a dict"
        for key in sorted(data, key=str):
            digest.update(str(key).encode())
            digest.update(np.ascontiguousarray(np.asarray(data[key])).tobytes())
    elif isinstance(data, str | Path) and Path(data).is_file():
        digest.update(Path(data).read_bytes())
    return digest.hexdigest()[:16]
