"""User-facing errors: one line saying what is wrong and what to do.

The CLI turns any `SlimkitError` into that line and exit code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class SlimkitError(Exception):
    """A user mistake or an environment problem the user can fix."""

    exit_code = 2

    def __init__(self, problem: str, hint: str | None = None) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}: {hint}" if hint else problem)


class MissingExtraError(SlimkitError):
    """An optional dependency is not installed; names the extra that brings it."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this needs the optional package '{module}', which is not installed",
            f"install it with: pip install 'slimkit[{extra}]'",
        )


class TargetNotMetError(SlimkitError):
    """A constraint (accuracy, fidelity) could not be met; the best effort was still saved. Raised by
    `OptimizeResult.require_targets` (the CLI calls it after writing the artifact and report): exit code 3."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), cut to `limit` characters.

    Library errors are often long multi-line dumps; a user-facing message quotes only their first line.
    """
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise a `MissingExtraError` naming its extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via monkeypatched imports in tests
        raise MissingExtraError(module, extra) from exc
