"""What became of a pass, typed: it did its work, met or missed a target (with the numbers), or was skipped.

The pipeline, the API and the CLI decide from this (the exit code, "skipped" in the report), never from
keys that happen to be in a pass's stats; the stats keep the numbers the report shows.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


class Status(enum.StrEnum):
    DONE = "done"  # the pass did its work and had no target to meet
    MET = "met"  # it had a target and met it
    MISSED = "missed"  # it had a target and missed it: its best effort was kept
    SKIPPED = "skipped"  # it left the model as it was, for `reason`


@dataclass(frozen=True)
class Outcome:
    """A pass's outcome. With a target, `metric` names what was measured (e.g. "cosine_mean",
    "accuracy_drop"), `measured` is the value reached and `target` the bound it had to meet."""

    status: Status = Status.DONE
    reason: str | None = None
    metric: str | None = None
    measured: float | None = None
    target: float | None = None

    @classmethod
    def skipped(cls, reason: str) -> Outcome:
        return cls(Status.SKIPPED, reason)

    @classmethod
    def judged(cls, met: bool, *, metric: str, measured: float | None, target: float | None,
               reason: str | None = None) -> Outcome:
        """Met or missed a target; `reason` says how far off a miss was."""
        return cls(Status.MET if met else Status.MISSED, None if met else (reason or "target not met"),
                   metric, None if measured is None else float(measured),
                   None if target is None else float(target))

    @property
    def missed(self) -> bool:
        return self.status == Status.MISSED

    @property
    def is_skipped(self) -> bool:
        return self.status == Status.SKIPPED

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the report (every key present, so readers need no defaults)."""
        return {**asdict(self), "status": str(self.status)}

    @classmethod
    def from_dict(cls, data: Any) -> Outcome:
        """Read back a report's outcome; a report without one (older, or not from a pass) reads as done."""
        if not isinstance(data, dict) or data.get("status") not in set(Status):
            return cls()
        return cls(Status(data["status"]), data.get("reason"), data.get("metric"), data.get("measured"),
                   data.get("target"))


def targets_missed(passes: Iterable[tuple[str, Outcome]]) -> list[str]:
    """'pass: how far off' for each (pass name, outcome) that missed its target."""
    return [f"{name}: {outcome.reason}" for name, outcome in passes if outcome.missed]


__all__ = ["Outcome", "Status", "targets_missed"]
