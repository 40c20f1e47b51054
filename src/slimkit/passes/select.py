"""Which weights a compression pass touches: op types, a size threshold, include/exclude name patterns."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from slimkit.errors import SlimkitError


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_names(candidates: Iterable[tuple[str, int]], *, include: Sequence[str], exclude: Sequence[str],
                 min_params: int, what: str) -> list[str]:
    """Names of (name, params) candidates passing the filters; a pattern matching nothing is an error."""
    candidates = list(candidates)
    names = [n for n, _ in candidates]
    for pattern in list(include) + list(exclude):
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            listing = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise SlimkitError(f"pattern '{pattern}' matches no {what}", f"the {what}s are: {listing}")
    chosen = [n for n, p in candidates
              if p >= min_params and (not include or matches(n, include)) and not matches(n, exclude)]
    return chosen
