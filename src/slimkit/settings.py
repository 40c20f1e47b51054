"""Run settings as small typed groups, handed around as units instead of five loose keywords per function.

`MeasureSettings` says how every model of a run is measured (the original, the baseline and the artifact the
same way); `TrainSettings` says where training passes learn and checkpoint. Both check themselves when built,
so a bad value is refused before any work, with the option named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimkit.errors import SlimkitError


@dataclass(frozen=True)
class MeasureSettings:
    """Threads for every runtime, the batch latency is timed at, the text sequence length (None: 128, or the
    model's position limit when smaller), fixed shapes for dynamic inputs, and a cap on evaluation samples
    (None: labelled data is evaluated whole)."""

    threads: int = 2
    batch_size: int = 1
    seq_len: int | None = None
    shapes: Mapping[str, Sequence[int]] | None = None
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            raise SlimkitError(f"--threads {self.threads} is not a thread count", "give 1 or more")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise SlimkitError(f"--batch-size {self.batch_size} is not a batch size", "give 1 or more")
        if self.seq_len is not None and (not isinstance(self.seq_len, int) or self.seq_len < 1):
            raise SlimkitError(f"--seq-len {self.seq_len} is not a sequence length", "give 1 or more tokens")
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise SlimkitError(f"--samples {self.max_samples} is not a sample count", "give 1 or more")

    def with_seq_len(self, seq_len: int | None) -> MeasureSettings:
        return replace(self, seq_len=seq_len)


@dataclass(frozen=True)
class TrainSettings:
    """Training passes learn from `data` (default: the run's --data, split 80/20 when only one set is given),
    write a checkpoint per epoch under `checkpoint_dir` and continue from it with `resume`. With
    `keep_checkpoints` False the folder is removed once the run has succeeded."""

    data: Any = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    keep_checkpoints: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, Path):
            object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir))
        if self.resume and self.checkpoint_dir is None:
            raise SlimkitError("resume needs the checkpoint folder of the interrupted run", "pass --checkpoint-dir")
