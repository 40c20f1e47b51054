"""Input shapes and dtypes read from data, without reading the data: what a PyTorch model that cannot tell
its input shapes is traced with. Also the names label arrays go by, shared by the data readers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

LABEL_KEYS = ("labels", "label", "y")


def as_array(value: Any) -> np.ndarray:
    """A numpy array from an array, a list, or a torch tensor (on any device, with or without grad)."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)



def shapes_from_data(source: Any) -> dict[str, list[int]]:
    """Each input array's shape in an .npz file or a folder of .npy files, with the batch dim set to 1.

    Only the arrays' headers are read (no pickles, no data). Label arrays ("labels", "label", "y") are
    left out; anything else (text, `sklearn:...`, None, Python objects, unreadable files) gives {}.
    """
    return {name: shape for name, (shape, _) in array_headers(source).items()}


def array_headers(source: Any) -> dict[str, tuple[list[int], np.dtype]]:
    """{input name: (shape with batch 1, dtype)} from the .npy headers of an .npz file or a .npy folder."""
    import zipfile

    if isinstance(source, Mapping):  # a dict of arrays or tensors from Python (see slimkit.data_sources.load_data)
        firsts = {str(k): as_array(v[:1]) for k, v in source.items() if str(k) not in LABEL_KEYS and np.ndim(v)}
        return {k: ([1, *(int(d) for d in a.shape[1:])], a.dtype) for k, a in firsts.items() if not a.dtype.hasobject}
    if not isinstance(source, (str, Path)) or str(source).startswith("sklearn:"):
        return {}
    path = Path(source)
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        if path.is_dir():
            for file in sorted(path.glob("*.npy")):
                with file.open("rb") as handle:
                    headers[file.stem] = _npy_header(handle)
        elif path.is_file() and path.suffix.lower() == ".npz":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if member.endswith(".npy"):
                        with archive.open(member) as handle:
                            headers[member[: -len(".npy")]] = _npy_header(handle)
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
    return {name: ([1, *(int(d) for d in shape[1:])], dtype) for name, (shape, dtype) in headers.items()
            if name not in LABEL_KEYS and len(shape) >= 1 and not dtype.hasobject}


def _npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an open .npy stream's header; the array itself is not read."""
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(handle)
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, _, dtype = read_header(handle)
    return shape, dtype
