"""Scoped thread counts: a runner or a training loop pins PyTorch's intra-op threads for its own work and
gives the process its previous count back, so measuring one model never changes how the caller's code runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `torch.set_num_threads(count)`, restoring the previous count after (also on error)."""
    import torch

    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
