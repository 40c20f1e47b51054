"""Atomic file writes: a temp file in the target's folder (same filesystem), fsync, then rename over it.

A crash or a Ctrl-C never leaves a half-written report or archive under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from slimkit.errors import SlimkitError


def write_atomic(path: Path, chunks: Iterable[bytes] | bytes, mode: int = 0o644) -> None:
    """Write `chunks` to `path` atomically; the file gets `mode` (mkstemp alone would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_not_input(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that is, or would replace, one of the inputs."""
    out = output.resolve()
    for item in inputs:
        src = Path(item).resolve()
        if out == src or (out.is_dir() and (src == out or out in src.parents)) or src in out.parents:
            raise SlimkitError(f"the output {output} is the input {item} (or contains it)",
                               "choose another output path; slimkit never overwrites its input")
