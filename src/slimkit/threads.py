"""Scoped thread counts: slimkit pins PyTorch to the user's `--threads` while it works, then gives the
process its own setting back.

`torch.set_num_threads` is process-wide. Left set, one measurement's count would silently become the
count of whatever the caller (a notebook, a training script) runs next, so every setter goes through
`torch_threads(n)`, which restores the previous count on exit, also when the body raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from slimkit.errors import SlimkitError


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with PyTorch's intra-op thread count at `n` (None: leave it), then restore the previous count.

    Setting the count it already has is skipped: resizing PyTorch's thread pool is not free, and a runner
    may enter this around every call.
    """
    if n is None:
        yield
        return
    if n < 1:
        raise SlimkitError(f"threads is {n}", "pass --threads 1 or more")
    import torch

    previous = torch.get_num_threads()
    if previous == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
