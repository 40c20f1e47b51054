"""Training data: turn what callers have (torch datasets, lists of dicts, arrays) into a slimkit Dataset,
and a Dataset into flat tensors the engine can shuffle per sample."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from slimkit.data_sources import LABEL_KEYS, Batch, Dataset
from slimkit.errors import SlimkitError


def as_dataset(data: Any, *, batch_size: int = 32, input_name: str = "x") -> Dataset:
    """A slimkit Dataset from a Dataset, `(arrays_dict, labels)`, a DataLoader (batches), or a torch
    dataset / iterable of per-sample `(x, y)` tuples or dicts (labels under "labels", "label" or "y").

    A bare `x` (not a dict) becomes the input named `input_name`, the keyword the module's forward takes.
    """
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Mapping) \
            and not isinstance(data[1], Mapping):
        arrays = {k: _array(v) for k, v in data[0].items()}
        labels = None if data[1] is None else _array(data[1])
    else:
        batched = isinstance(data, torch.utils.data.DataLoader)
        items = data
        if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
            items = [data[i] for i in range(len(data))]
        if not isinstance(items, Iterable) or isinstance(items, (str, bytes, Mapping)):
            raise SlimkitError(f"cannot train on a {type(data).__name__}",
                               "pass a slimkit Dataset, a torch Dataset of (x, y), a list of dicts or (arrays, labels)")
        rows = [_row(item, input_name) for item in items]
        if not rows:
            raise SlimkitError("the training data is empty", "pass at least one sample")
        keys = list(rows[0])
        if any(list(r) != keys for r in rows):
            raise SlimkitError(f"training samples have different keys (first has {keys})", "give every sample the same keys")
        join = np.concatenate if batched else np.stack
        arrays = {k: join([r[k] for r in rows]) for k in keys}
        labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    if not arrays or any(a.ndim == 0 for a in arrays.values()):
        raise SlimkitError("the training data has no input arrays", "give each sample at least one input array")
    counts = {len(a) for a in arrays.values()} | ({len(labels)} if labels is not None else set())
    if len(counts) != 1:
        raise SlimkitError(f"training arrays have different sample counts {sorted(counts)}",
                           "give every input (and labels) one row per sample")
    return Dataset([Batch(arrays, labels)], "python").rebatch(batch_size)


def _array(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _row(item: Any, input_name: str) -> dict[str, np.ndarray]:
    if isinstance(item, Mapping):
        return {str(k): _array(v) for k, v in item.items()}
    if isinstance(item, (tuple, list)) and len(item) == 2:
        x, y = item
        row = {str(k): _array(v) for k, v in x.items()} if isinstance(x, Mapping) else {input_name: _array(x)}
        return {**row, "labels": _array(y)}
    if isinstance(item, (tuple, list)) and len(item) == 1:
        item = item[0]
    return {input_name: _array(item)}


def flatten(data: Dataset) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """All samples as one tensor per input (plus labels), so each epoch can shuffle samples, not batches."""
    batches = [b for b in data.batches if b.size > 0]
    if not batches:
        raise SlimkitError(f"the training data{f' ({data.source})' if data.source else ''} is empty",
                           "pass at least one sample")
    names = list(batches[0].feed)
    if any(list(b.feed) != names for b in batches):
        raise SlimkitError("training batches have different inputs", f"give every batch the inputs {names}")
    feed = {n: torch.from_numpy(np.concatenate([b.feed[n] for b in batches])) for n in names}
    labels = None
    if all(b.labels is not None for b in batches):
        labels = torch.from_numpy(np.concatenate([np.asarray(b.labels) for b in batches]))
    return feed, labels
