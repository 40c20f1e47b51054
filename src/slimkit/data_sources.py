"""One data reader for every source: batches of feed dicts keyed by model input names, plus labels.

Sources: `.npz` files (arrays named after the inputs, optional `labels`), folders of `.npy`
files, text files (one example per line, tokenized with the model's tokenizer), built-in
sklearn datasets (`sklearn:digits`), a dict of arrays or tensors (read like an .npz file's arrays), a
`torch.utils.data.DataLoader`, a Python iterable of dicts, or samples generated from the model's input
signature when no data is given.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import SlimkitError
from slimkit.models.base import InputSpec, WorkingModel
from slimkit.models.input_shapes import LABEL_KEYS
from slimkit.models.input_shapes import as_array as _as_array
from slimkit.models.limits import DEFAULT_SEQUENCE

_SEQUENCE_NAMES = ("seq", "sequence", "sequence_length", "seq_len", "tokens", "length")
_BATCH_NAMES = ("batch", "batch_size", "n", "N", "b", "B")


@dataclass
class Batch:
    feed: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(next(iter(self.feed.values())).shape[0]) if self.feed else 0


@dataclass
class Dataset:
    """A list of batches. `generated` marks random inputs: fine for latency, weak for fidelity."""

    batches: list[Batch] = field(default_factory=list)
    source: str = ""
    generated: bool = False

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)

    @property
    def num_samples(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def has_labels(self) -> bool:
        return bool(self.batches) and all(b.labels is not None for b in self.batches)

    def arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """All samples as one array per input, plus the labels (None when any batch has none)."""
        names = list(self.batches[0].feed)
        arrays = {n: np.concatenate([b.feed[n] for b in self.batches]) for n in names}
        labels = np.concatenate([b.labels for b in self.batches]) if self.has_labels else None
        return arrays, labels

    def rebatch(self, batch_size: int) -> Dataset:
        """The same samples in batches of `batch_size` (the last one may be smaller)."""
        if not self.batches:
            return self
        arrays, labels = self.arrays()
        return Dataset(_split(arrays, labels, batch_size), self.source, self.generated)

    def take(self, indices: Sequence[int] | np.ndarray, *, batch_size: int | None = None,
             source: str | None = None) -> Dataset:
        """The samples at `indices` (in that order), re-batched."""
        if not self.batches:
            return self
        arrays, labels = self.arrays()
        idx = np.asarray(indices, dtype=np.int64)
        size = batch_size or self.batches[0].size or 1
        return Dataset(_split({k: v[idx] for k, v in arrays.items()}, labels[idx] if labels is not None else None,
                              size), source or self.source, self.generated)

    def head(self, max_samples: int | None, batch_size: int | None = None) -> Dataset:
        """At most `max_samples` samples (all when None), in batches of `batch_size` (kept when None)."""
        if not self.batches or self.generated:
            return self
        n = self.num_samples
        keep = n if not max_samples else min(n, max_samples)
        batched = batch_size is None or (all(b.size == batch_size for b in self.batches[:-1])
                                         and self.batches[-1].size <= batch_size)
        if keep == n and batched:
            return self
        return self.take(np.arange(keep), batch_size=batch_size)


@dataclass(frozen=True)
class Subset:
    """Part of a data source: the samples at `indices` of what `source` loads (train/validation splits).

    Kept as (source, indices) rather than arrays, so every pass can load it for its own model kind,
    batch size and sequence length, exactly like the whole source.
    """

    source: Any
    indices: tuple[int, ...]
    role: str  # "train" or "validation"

    def describe(self) -> str:
        return f"{self.role} part ({len(self.indices)} samples) of {describe_source(self.source)}"


def describe_source(source: Any) -> str:
    """A short name for a data source, for reports."""
    if source is None:
        return "generated inputs"
    if isinstance(source, Subset):
        return source.describe()
    if isinstance(source, Dataset):
        return source.source or "dataset"
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, Mapping):
        return _DICT_SOURCE
    if _is_data_loader(source):
        return _LOADER_SOURCE
    return type(source).__name__


def split_indices(n: int, labels: np.ndarray | None, *, validation_fraction: float = 0.2,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """(train, validation, stratified): a seeded split of n samples, stratified by class when labels allow."""
    if n < 2:
        raise SlimkitError(f"{n} sample is too few to split into a training and a validation part",
                           "give more data, or a separate validation set (--data) and --train-data")
    n_val = min(n - 1, max(1, int(round(n * validation_fraction))))
    from sklearn.model_selection import train_test_split

    everything = np.arange(n)
    stratify = None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        classes, counts = np.unique(labels, return_counts=True)
        if labels.dtype.kind in "iub" and counts.min() >= 2 and len(classes) <= n_val <= n - len(classes):
            stratify = labels
    train, val = train_test_split(everything, test_size=n_val, random_state=seed, shuffle=True, stratify=stratify)
    return np.sort(train), np.sort(val), stratify is not None


def parse_shapes(items: Sequence[str] | None) -> dict[str, list[int]]:
    """`["input=1x3x224x224", ...]` -> `{"input": [1, 3, 224, 224]}`."""
    shapes: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise SlimkitError(f"--shape '{item}' is not NAME=DxDx...", "example: --shape input=1x3x224x224") from None
    return shapes


def load_data(
    source: Any,
    model: WorkingModel,
    *,
    batch_size: int = 1,
    seq_len: int = DEFAULT_SEQUENCE,
    max_samples: int | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    generated_samples: int = 8,
    seed: int = 0,
) -> Dataset:
    """Read `source` into batches that match `model`'s inputs, or explain why they cannot."""
    specs = input_specs_of(model)
    if source is None:
        return generate_data(specs, batch_size=batch_size, seq_len=seq_len, shapes=shapes,
                             num_batches=max(1, generated_samples // max(batch_size, 1)), seed=seed)
    if isinstance(source, Dataset):
        return source.head(max_samples, batch_size=None if source.generated else batch_size)
    if isinstance(source, Subset):
        whole = load_data(source.source, model, batch_size=batch_size, seq_len=seq_len, shapes=shapes, seed=seed)
        if whole.generated:
            return whole
        indices = list(source.indices)[:max_samples] if max_samples else list(source.indices)
        return whole.take(indices, batch_size=batch_size, source=source.describe())
    if isinstance(source, (str, Path)):
        text = str(source)
        if text.startswith("sklearn:"):
            arrays, labels = _sklearn_arrays(text, specs)
            return _finish(arrays, labels, specs, batch_size, max_samples, text)
        path = Path(text)
        if not path.exists():
            raise SlimkitError(f"no such data file or folder: {path}", "check the --data path")
        if path.is_dir():
            arrays = {p.stem: np.load(p, allow_pickle=False) for p in sorted(path.glob("*.npy"))}
            if not arrays:
                raise SlimkitError(f"{path} holds no .npy files", "put one NAME.npy per model input there")
            labels = _pop_labels(arrays)
            return _finish(arrays, labels, specs, batch_size, max_samples, str(path))
        if path.suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
            except Exception as exc:
                raise SlimkitError(f"{path} is not a readable .npz file ({type(exc).__name__})",
                                   "save arrays with numpy.savez") from exc
            labels = _pop_labels(arrays)
            return _finish(arrays, labels, specs, batch_size, max_samples, str(path))
        if path.suffix in (".txt", ".text", ".tsv") or path.suffix == "":
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            return text_data(lines, model, batch_size=batch_size, seq_len=seq_len, max_samples=max_samples,
                             source=str(path))
        raise SlimkitError(f"{path}: unknown data file type '{path.suffix}'",
                           "pass .npz, a folder of .npy files, a .txt file (one example per line) or sklearn:digits")
    if isinstance(source, Mapping):
        return _from_arrays(source, specs, batch_size, max_samples, _DICT_SOURCE)
    if _is_data_loader(source):
        return _from_arrays(_loader_arrays(source, specs), specs, batch_size, max_samples, _LOADER_SOURCE)
    if isinstance(source, Iterable):
        return _from_iterable(source, specs, batch_size, max_samples)
    raise SlimkitError(f"cannot read data from a {type(source).__name__}",
                       "pass a path, a dict of arrays {input_name: array, 'labels': array}, a DataLoader "
                       "or a list of dicts")


def input_specs_of(model: WorkingModel) -> list[InputSpec]:
    specs = getattr(model, "input_specs", None)
    if specs is None:
        from slimkit.formats import make_runner

        specs = make_runner(model, threads=1).input_specs
    return list(specs)


def text_data(
    lines: Sequence[str], model: WorkingModel, *, batch_size: int = 1, seq_len: int = DEFAULT_SEQUENCE,
    max_samples: int | None = None, source: str = "text",
) -> Dataset:
    """Tokenize sentences with the model's tokenizer, padded to `seq_len` (what latency is quoted at)."""
    if model.tokenizer_dir is None:
        raise SlimkitError(f"text data ({source}) needs the model's tokenizer, and this model has none",
                           "pass a Hugging Face folder, or an ONNX model slimkit exported from one")
    from slimkit.errors import require

    transformers = require("transformers", "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model.tokenizer_dir))
    if max_samples:
        lines = list(lines)[:max_samples]
    if not lines:
        raise SlimkitError(f"{source} has no text lines", "put one example per line")
    specs = input_specs_of(model)
    names = [s.name for s in specs]
    enc = tokenizer(list(lines), padding="max_length", max_length=seq_len, truncation=True, return_tensors="np")
    arrays = {}
    for spec in specs:
        if spec.name not in enc:
            raise SlimkitError(f"the tokenizer does not produce input '{spec.name}'", f"the model takes {names}")
        arrays[spec.name] = enc[spec.name].astype(spec.dtype if spec.dtype.startswith("int") else "int64")
    return Dataset(_split(arrays, None, batch_size), source)


def generate_data(
    specs: Sequence[InputSpec], *, batch_size: int = 1, seq_len: int = DEFAULT_SEQUENCE,
    shapes: Mapping[str, Sequence[int]] | None = None, num_batches: int = 1, seed: int = 0,
) -> Dataset:
    """Random inputs from the signature: normal floats, small token ids, all-ones attention masks."""
    rng = np.random.default_rng(seed)
    batches = []
    resolved = {s.name: resolve_shape(s, batch_size=batch_size, seq_len=seq_len, shapes=shapes) for s in specs}
    _check_generated_size(specs, resolved)
    for _ in range(num_batches):
        feed = {}
        for spec in specs:
            shape = resolved[spec.name]
            if spec.dtype.startswith("float"):
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype == "bool":
                feed[spec.name] = np.ones(shape, dtype=bool)
            elif "mask" in spec.name:
                feed[spec.name] = np.ones(shape, dtype=spec.dtype)
            elif "type" in spec.name:
                feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
            else:
                feed[spec.name] = rng.integers(0, 100, size=shape).astype(spec.dtype)
        batches.append(Batch(feed))
    return Dataset(batches, "generated from the input signature", generated=True)


def _check_generated_size(specs: Sequence[InputSpec], resolved: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse to generate an input no machine could hold (a damaged model declaring a 10^9 dim) or one with a
    negative dim, before numpy tries to allocate it."""
    from slimkit.models.onnx_checks import MAX_INPUT_ELEMENTS

    for spec in specs:
        shape = resolved[spec.name]
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if any(d < 0 for d in shape) or count > MAX_INPUT_ELEMENTS:
            raise SlimkitError(f"input '{spec.name}' would be generated at shape {list(shape)} ({spec.describe()}), "
                               f"{'a negative dim' if count < 0 or any(d < 0 for d in shape) else 'too large'}",
                               f"fix it with --shape {spec.name}=" + "x".join("1" for _ in shape) + " (your sizes)")


def resolve_shape(spec: InputSpec, *, batch_size: int, seq_len: int,
                  shapes: Mapping[str, Sequence[int]] | None = None) -> tuple[int, ...]:
    """Fix every dynamic dimension, or say which input and dimension needs `--shape`."""
    if shapes and spec.name in shapes:
        fixed = tuple(int(d) for d in shapes[spec.name])
        if len(fixed) != len(spec.shape):
            raise SlimkitError(f"--shape {spec.name} has {len(fixed)} dims but the input has {len(spec.shape)}",
                               f"the input is {spec.describe()}")
        return fixed
    out = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            out.append(dim)
        elif axis == 0 and (dim is None or str(dim) in _BATCH_NAMES or "batch" in str(dim).lower()):
            out.append(batch_size)
        elif dim is not None and any(k in str(dim).lower() for k in _SEQUENCE_NAMES):
            out.append(seq_len)
        elif axis == 1 and len(spec.shape) == 2 and spec.dtype.startswith("int"):
            out.append(seq_len)  # token ids: [batch, sequence]
        else:
            label = dim if dim is not None else "?"
            raise SlimkitError(
                f"input '{spec.name}' has a dynamic dimension {axis} ('{label}') slimkit cannot guess",
                f"fix it with --shape {spec.name}=" + "x".join(str(d if isinstance(d, int) else 1) for d in spec.shape),
            )
    return tuple(out)


def _pop_labels(arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    for key in LABEL_KEYS:
        if key in arrays:
            return arrays.pop(key)
    return None


def _sklearn_arrays(text: str, specs: Sequence[InputSpec]):
    name, _, split = text.split(":", 1)[1].partition(":")
    split = split or "test"
    from slimkit.bundled_data import DIGITS_SPLITS, digits_arrays

    if name != "digits" or split not in DIGITS_SPLITS:
        raise SlimkitError(f"unknown built-in dataset '{text.split(':', 1)[1]}'",
                           "available: sklearn:digits (the test split), sklearn:digits:train, sklearn:digits:test, and "
                           "sklearn:digits:fit / sklearn:digits:val (the train split cut 85/15)")
    if len(specs) != 1:
        raise SlimkitError("sklearn:digits feeds models with one input", f"this model takes {[s.name for s in specs]}")
    spec = specs[0]
    x, y = digits_arrays(split=split, image=len(spec.shape) == 4)
    return {spec.name: x}, y


def _from_iterable(items: Iterable, specs, batch_size, max_samples) -> Dataset:
    rows = list(items)
    if not rows or not all(isinstance(r, Mapping) for r in rows):
        raise SlimkitError("data from Python must be a non-empty iterable of dicts",
                           "yield {input_name: array, ...}, or pass one dict of arrays {input_name: array, "
                           "'labels': array}")
    arrays = _stack_rows(rows, specs, "python iterable")
    labels = _pop_labels(arrays)
    return _finish(arrays, labels, specs, batch_size, max_samples, "python iterable")


def _stack_rows(rows: Sequence[Mapping], specs, source: str) -> dict[str, np.ndarray]:
    """Dicts of samples or batches -> one array per key. A dict holding one sample (no batch axis, a scalar
    label) is stacked; batches are concatenated."""
    ranks = {s.name: len(s.shape) for s in specs}
    arrays = {}
    for k in rows[0]:
        missing = [i for i, r in enumerate(rows) if k not in r]
        if missing:
            raise SlimkitError(f"{source}: item {missing[0]} has no '{k}'", "give every item the same keys")
        values = [_as_array(r[k]) for r in rows]
        per_sample = all(v.ndim == ranks[k] - 1 for v in values) if k in ranks else all(v.ndim == 0 for v in values)
        try:
            arrays[str(k)] = np.stack(values) if per_sample else np.concatenate(values)
        except ValueError as exc:
            raise SlimkitError(f"{source}: the items' '{k}' arrays do not fit together ({exc})",
                               "give every item the same shape past the batch axis") from None
    return arrays


# What in-memory sources are called in reports and errors.
_DICT_SOURCE = "data dict"
_LOADER_SOURCE = "DataLoader"


def _from_arrays(values: Mapping, specs, batch_size, max_samples, source: str) -> Dataset:
    """{input name: array with samples on axis 0, optional 'labels': array}: read like an .npz file's arrays
    (the same names, label keys, checks and errors). The caller's dict is not changed."""
    arrays = {str(k): _as_array(v) for k, v in values.items()}
    labels = _pop_labels(arrays)
    return _finish(arrays, labels, specs, batch_size, max_samples, source)


def _is_data_loader(source: Any) -> bool:
    torch = sys.modules.get("torch")  # a DataLoader exists only once torch is imported
    return torch is not None and isinstance(source, torch.utils.data.DataLoader)


# Each DataLoader is read once: every later read (the parts of a split, each pass, the measurement) sees the
# same samples in the same order, even from a loader that shuffles.
_LOADER_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _loader_arrays(loader: Any, specs) -> dict[str, np.ndarray]:
    """A DataLoader's batches, concatenated into {input name: array, 'labels': array}.

    Batches are dicts keyed by input names, or tuples (inputs..., [labels]) in the model's input order, e.g.
    (x, y) or (x,) from a TensorDataset for a one-input model; a bare tensor is (x,).
    """
    rows = _LOADER_ROWS.get(loader)
    if rows is None:
        rows = [_loader_row(batch) for batch in loader]
        _LOADER_ROWS[loader] = rows
    if not rows:
        raise SlimkitError("the DataLoader holds no samples (it yields no batches)", "give at least one sample")
    names = [s.name for s in specs]
    named = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            named.append(row)
            continue
        if len(row) not in (len(names), len(names) + 1):
            raise SlimkitError(
                f"DataLoader batch {i} is a tuple of {len(row)} tensors but the model takes inputs {names}",
                f"yield ({', '.join(names)},) or ({', '.join(names)}, labels), or dicts keyed by {names}")
        named.append({**dict(zip(names, row, strict=False)), **({"labels": row[-1]} if len(row) > len(names) else {})})
    return _stack_rows(named, specs, _LOADER_SOURCE)


def _loader_row(batch: Any) -> Mapping | tuple:
    """One DataLoader batch with its tensors turned into numpy arrays: a dict, or a tuple of arrays."""
    if isinstance(batch, Mapping):
        return {k: _as_array(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return tuple(_as_array(v) for v in batch)
    return (_as_array(batch),)


def _finish(arrays, labels, specs, batch_size, max_samples, source) -> Dataset:
    arrays = check_arrays(arrays, specs, source)
    n = next(iter(arrays.values())).shape[0]
    if n == 0:
        raise SlimkitError(f"{source} holds no samples (its arrays have 0 rows)", "give at least one sample")
    if labels is not None and len(labels) != n:
        raise SlimkitError(f"{source}: {len(labels)} labels for {n} samples", "give one label per sample")
    if max_samples:
        arrays = {k: v[:max_samples] for k, v in arrays.items()}
        labels = labels[:max_samples] if labels is not None else None
    return Dataset(_split(arrays, labels, batch_size), source)


def check_arrays(arrays: dict[str, np.ndarray], specs: Sequence[InputSpec], source: str) -> dict[str, np.ndarray]:
    """Match arrays to inputs by name, rank, dtype kind and fixed dims; cast within a dtype kind."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise SlimkitError(
            f"{source} has no array for input '{missing[0]}' (it has {sorted(arrays)})",
            f"name the arrays after the model inputs {names}",
        )
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise SlimkitError(f"{source} has arrays {extra} that are not model inputs",
                           f"the model takes {names} (and optional 'labels')")
    out = {}
    counts = set()
    for spec in specs:
        arr = np.asarray(arrays[spec.name])
        if arr.ndim != len(spec.shape):
            raise SlimkitError(
                f"{source}: array '{spec.name}' has rank {arr.ndim} {list(arr.shape)} but the input is {spec.describe()}",
                "reshape the data to the model's input rank",
            )
        for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if axis > 0 and isinstance(want, int) and got != want:
                raise SlimkitError(
                    f"{source}: array '{spec.name}' has shape {list(arr.shape)} but the input is {spec.describe()}",
                    "fix the data shape",
                )
        want_kind = np.dtype(spec.dtype).kind if not spec.dtype.startswith("onnx-") else arr.dtype.kind
        if arr.dtype.kind != want_kind and not (want_kind in "iu" and arr.dtype.kind in "iu"):
            raise SlimkitError(f"{source}: array '{spec.name}' is {arr.dtype} but the input is {spec.dtype}",
                               f"save it as {spec.dtype}")
        if not spec.dtype.startswith("onnx-"):
            arr = arr.astype(spec.dtype, copy=False)
        out[spec.name] = arr
        counts.add(arr.shape[0])
    if len(counts) > 1:
        raise SlimkitError(f"{source}: arrays have different sample counts {sorted(counts)}", "give every input the same count")
    return out


def _split(arrays: dict[str, np.ndarray], labels: np.ndarray | None, batch_size: int) -> list[Batch]:
    n = next(iter(arrays.values())).shape[0]
    batch_size = max(1, int(batch_size))
    batches = []
    for start in range(0, n, batch_size):
        feed = {k: np.ascontiguousarray(v[start:start + batch_size]) for k, v in arrays.items()}
        batches.append(Batch(feed, labels[start:start + batch_size] if labels is not None else None))
    return batches
