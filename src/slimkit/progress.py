"""Plain progress lines on stderr for runs without a terminal (CI, a log file), where a spinner cannot show.

`ProgressLines.say(text)` prints `[  12.3s] text`. Every new step (a pass starting, measuring, writing) and
every training epoch end gets its line; further updates of one step (`int8-auto: sensitivity 7/40`) at most
one every `interval` seconds. A run that ends within `hold` seconds prints nothing: a quick command (or a
mistake refused at once) stays as short as before, its one-line error alone.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import TextIO

INTERVAL_S = 5.0
HOLD_S = 2.0
_EPOCH_END = re.compile(r"\bepoch \d+/\d+\b")  # train.engine's per-epoch line: "epoch 2/5 loss ... step 40"
_NUMBER = re.compile(r"\d+(\.\d+)?")


class ProgressLines:
    def __init__(self, *, interval: float | None = None, hold: float | None = None) -> None:
        self.interval = INTERVAL_S if interval is None else interval
        hold = HOLD_S if hold is None else hold
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._shape: str | None = None
        self._last = float("-inf")
        self._held: list[str] | None = [] if hold > 0 else None
        self._stream = _own_stderr()
        self._timer: threading.Timer | None = None
        if hold > 0:
            self._timer = threading.Timer(hold, self._release)
            self._timer.daemon = True
            self._timer.start()

    def say(self, message: str) -> None:
        now = time.monotonic()
        shape = _NUMBER.sub("#", message)  # the same step with other counts is an update of it
        with self._lock:
            if not _EPOCH_END.search(message) and shape == self._shape and now - self._last < self.interval:
                return
            self._shape, self._last = shape, now
            line = f"[{now - self._start:7.1f}s] {message}"
            if self._held is not None:
                self._held.append(line)
            else:
                self._write([line])

    def close(self) -> None:
        """Stop; lines still held (the run ended within `hold` seconds) are dropped."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._held = []  # a late timer prints nothing
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def _release(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            self._write(held)

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        stream = self._stream or sys.stderr
        try:
            stream.write("".join(f"{line}\n" for line in lines))
            stream.flush()
        except (OSError, ValueError):  # stderr closed: progress is not worth failing the run for
            pass


def _own_stderr() -> TextIO | None:
    """A copy of the process's stderr descriptor, so lines still reach it while `slimkit.quiet` diverts fd 2;
    None when sys.stderr is not the process's own (e.g. captured by a test), which is then written to."""
    if sys.stderr is not sys.__stderr__ or sys.stderr is None:
        return None
    try:
        return open(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                    errors="replace")
    except (OSError, ValueError, AttributeError):
        return None
