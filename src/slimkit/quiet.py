"""Keep third-party noise (absl, TensorFlow-style native logs, torchao, LiteRT progress) off the user's terminal.

`quiet_native()` wraps a call into a noisy library: Python warnings and those libraries' loggers are
silenced, and the process's own stdout/stderr file descriptors (what C++ code writes to) go to a temp
file for the duration. When the call fails, the last captured lines are added to the error. With
`SLIMKIT_VERBOSE=1` (set by `slimkit --verbose`) nothing is hidden, but anything written to stdout goes to
stderr, so `--json` output stays pure JSON either way.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence

VERBOSE_ENV = "SLIMKIT_VERBOSE"
NOISY_LOGGERS = (
    "absl", "tensorflow", "jax", "torchao", "litert_torch", "ai_edge_litert", "ai_edge_quantizer",
    "torch", "torch.utils._pytree", "torch.export", "torch._dynamo", "torch.onnx", "onnxscript", "onnx_ir", "nncf",
)
TAIL_LINES = 15


def verbose() -> bool:
    """True when the user asked to see third-party output (`--verbose` / SLIMKIT_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def quiet_native(what: str) -> Iterator[None]:
    """Run the body with third-party output hidden (unless verbose); on failure the error carries its tail."""
    if verbose():
        with _stdout_to_stderr():
            yield
        return
    python_out = io.StringIO()
    with tempfile.TemporaryFile() as native, warnings.catch_warnings(), loggers_at(logging.ERROR), \
            contextlib.redirect_stdout(python_out):
        warnings.simplefilter("ignore")
        try:
            with _fds_to(native.fileno()):
                yield
        except BaseException as exc:
            native.seek(0)
            captured = python_out.getvalue() + native.read().decode("utf-8", "replace")
            _attach_tail(exc, what, captured)
            raise


def _attach_tail(exc: BaseException, what: str, captured: str) -> None:
    lines = [line.rstrip() for line in captured.splitlines() if line.strip()]
    if not lines or isinstance(exc, KeyboardInterrupt):
        return
    tail = "\n".join(f"  {line[:300]}" for line in lines[-TAIL_LINES:])
    heading = f"{what} output (last {min(len(lines), TAIL_LINES)} lines; --verbose shows it all):"
    from slimkit.errors import SlimkitError

    if isinstance(exc, SlimkitError):  # the CLI prints str(exc): the first line stays the one-line summary
        exc.args = (f"{exc.args[0] if exc.args else ''}\n{heading}\n{tail}",)
    else:
        exc.add_note(f"{heading}\n{tail}")


@contextlib.contextmanager
def loggers_at(level: int, names: Sequence[str] = NOISY_LOGGERS) -> Iterator[None]:
    """Raise these loggers to at least `level` for the body, then give each its own level back.

    Logger levels are process-wide: set and never restored, they would hide the caller's own logging of
    those libraries for the rest of the process.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(level, lg.level))
    try:
        yield
    finally:
        for lg, old in zip(loggers, levels, strict=True):
            lg.setLevel(old)


@contextlib.contextmanager
def _fds_to(target: int) -> Iterator[None]:
    """Point file descriptors 1 and 2 at `target`; restored afterwards (C buffers flushed first)."""
    _flush()
    saved: list[tuple[int, int]] = []
    try:
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(target, fd)
    except OSError:  # no such descriptor (e.g. a daemon): leave output where it goes
        _restore(saved)
        saved = []
    try:
        yield
    finally:
        _flush()
        _restore(saved)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Verbose: let everything through, but on stderr, so stdout holds only slimkit's own output."""
    _flush()
    saved = None
    with contextlib.suppress(OSError):
        saved = os.dup(1)
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _flush()
        if saved is not None:
            _restore([(1, saved)])


def _restore(saved: list[tuple[int, int]]) -> None:
    for fd, copy in saved:
        os.dup2(copy, fd)
        os.close(copy)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):  # C stdio buffers: printf output written before the switch
        import ctypes

        ctypes.CDLL(None).fflush(None)
