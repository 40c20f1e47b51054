"""Which data trains, which selects or calibrates, and which the reported figures are measured on.

Three disjoint sets keep a reported number honest: a figure measured on the samples that picked the
best epoch, the calibration ranges or the kept-float layers flatters the model. When a recipe trains
and the user gave one pool of data (only `--data`, or only `--train-data`), the pool is split here,
seeded and stratified by label where possible, and the split is recorded in the report. Measurements
taken on data that a pass saw are marked (`seen_by`), and the report flags them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slimkit.data_sources import Subset, describe_source, load_data, split_indices
from slimkit.models.base import WorkingModel

# What each data use is called in reports ("measured on data that training saw").
_USE_WORDS = {"train": "training", "select": "selection", "calibrate": "calibration"}
VALIDATION_FRACTION = 0.2


@dataclass
class DataPlan:
    """The sources passes and measurement read, and what the measurement set was used for before."""

    train: Any  # what training passes learn from (ctx.train_data)
    select: Any  # what training picks its best epoch on, selection chooses on, calibration reads (ctx.data)
    evaluate: Any  # what the reported figures are measured on
    uses: frozenset[str] = frozenset()
    split: dict | None = None
    seen_by: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "train": describe_source(self.train) if self.train is not None else None,
            "select": describe_source(self.select) if self.select is not None else None,
            "evaluate": describe_source(self.evaluate),
            "uses": sorted(self.uses),
            "split": self.split,
            "evaluation_seen_by": self.seen_by,
        }


def plan_data(
    model: WorkingModel, uses: Iterable[str], *, data: Any = None, train_data: Any = None, eval_data: Any = None,
    seed: int = 0, seq_len: int = 128, shapes: Mapping[str, Sequence[int]] | None = None,
) -> DataPlan:
    """Assign the user's data to training, selection and evaluation for a recipe that uses data as `uses`."""
    uses = frozenset(uses)
    train, select, split = train_data, data, None
    if "train" in uses and (train_data is None) != (data is None):
        pool = data if data is not None else train_data
        train, select, split = _split(model, pool, seed=seed, seq_len=seq_len, shapes=shapes)
    evaluate = eval_data if eval_data is not None else data
    seen = _seen_by(uses, evaluate=evaluate, eval_given=eval_data is not None, data=data, train_data=train_data,
                    split=split is not None)
    return DataPlan(train, select, evaluate, uses, split, seen)


def infer_task(model: WorkingModel, source: Any, *, seq_len: int = 128,
               shapes: Mapping[str, Sequence[int]] | None = None) -> str | None:
    """"classification" when the data carries integer labels, else None (the model's task stays unknown)."""
    if source is None:
        return None
    sample = load_data(source, model, batch_size=64, seq_len=seq_len, shapes=shapes, max_samples=64)
    if sample.generated or not sample.has_labels:
        return None
    labels = sample.arrays()[1]
    return "classification" if labels is not None and labels.dtype.kind in "iu" and labels.ndim == 1 else None


def _split(model: WorkingModel, pool: Any, *, seed: int, seq_len: int,
           shapes: Mapping[str, Sequence[int]] | None) -> tuple[Subset, Subset, dict]:
    whole = load_data(pool, model, batch_size=256, seq_len=seq_len, shapes=shapes, seed=seed)
    labels = whole.arrays()[1] if whole.batches and not whole.generated else None
    train_idx, val_idx, stratified = split_indices(whole.num_samples, labels,
                                                   validation_fraction=VALIDATION_FRACTION, seed=seed)
    record = {"source": describe_source(pool), "samples": whole.num_samples, "train": len(train_idx),
              "validation": len(val_idx), "seed": seed, "stratified": stratified,
              "why": "the recipe trains and one data set was given: training learns from the train part and "
                     "picks its best epoch (and any back-off) on the validation part"}
    return (Subset(pool, tuple(int(i) for i in train_idx), "train"),
            Subset(pool, tuple(int(i) for i in val_idx), "validation"), record)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, str | bytes) or hasattr(a, "__fspath__"):
        return str(a) == str(b)
    return a is b


def _seen_by(uses: frozenset[str], *, evaluate: Any, eval_given: bool, data: Any, train_data: Any,
             split: bool) -> list[str]:
    """Which uses saw the evaluation set. Training also selects its best epoch on --data (or on the
    validation part of a split pool), and a split pool was seen whole by training and selection."""
    if evaluate is None or not uses:
        return []
    on_data = (uses - {"train"}) | ({"select"} if "train" in uses else set())
    on_train = {"train"} if "train" in uses else set()
    if split:  # one pool: both parts come from it
        on_data = on_train = on_data | on_train
    seen: set[str] = set()
    if not eval_given or _same(evaluate, data):
        seen |= on_data if data is not None else set()
    if _same(evaluate, train_data):
        seen |= on_train
    return [_USE_WORDS[u] for u in sorted(seen)]
