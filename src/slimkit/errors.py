"""User-facing errors: one line saying what is wrong and what to do.

The CLI turns any `SlimkitError` into that line and exit code 2; anything else is a bug, reported as
one "internal error" line (exit 70) whose traceback `--verbose` shows.
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


def describe(exc: BaseException, limit: int = 300) -> str:
    """'TypeName: first line': what a stats entry or an internal-error line records about a failure, so a
    swallowed or reported error still says what really happened."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {first_line(exc, limit)}" if text else type(exc).__name__


def raised_by_library(exc: BaseException, libraries: tuple[str, ...]) -> bool:
    """True when `exc` came out of one of `libraries` (top-level package names), not out of slimkit's own code.

    Best-effort steps (graph fusion, quantization pre-processing) treat a library rejecting its input as an
    expected outcome and record why. Anything else must propagate: an exception that never went through
    the library, or whose innermost frame is slimkit's (our bug, even when the library called us back),
    and MemoryError or KeyboardInterrupt, which no step may swallow.
    """
    if not isinstance(exc, Exception) or isinstance(exc, MemoryError):
        return False
    packages = []
    tb = exc.__traceback__
    while tb is not None:
        packages.append(str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0])
        tb = tb.tb_next
    return bool(packages) and packages[-1] != "slimkit" and any(p in libraries for p in packages)


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise a `MissingExtraError` naming its extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via monkeypatched imports in tests
        raise MissingExtraError(module, extra) from exc
