"""Latency with warm-up and a fixed thread count, quoted as percentiles (the machine is noisy)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def time_calls(
    call: Callable[[], object], *, warmup: int = 5, runs: int = 50, min_seconds: float = 0.5,
    max_seconds: float = 20.0,
) -> np.ndarray:
    """Per-call wall times in milliseconds: at least `runs` calls or `min_seconds`, capped by `max_seconds`."""
    for _ in range(warmup):
        call()
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - start
        if (len(times) >= runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    return np.asarray(times)


def summarize(times_ms: np.ndarray, batch_size: int) -> dict:
    p50 = float(np.percentile(times_ms, 50))
    return {
        "p50": p50,
        "p90": float(np.percentile(times_ms, 90)),
        "mean": float(times_ms.mean()),
        "runs": int(len(times_ms)),
        "throughput_per_s": float(batch_size * 1000.0 / p50) if p50 > 0 else None,
    }


def interleaved_p50(calls: dict[str, Callable[[], object]], *, rounds: int = 7, min_seconds: float = 0.3,
                    runs: int = 10, warmup: int = 3) -> dict[str, float]:
    """Median over rounds of each call's p50 (ms), the calls taking turns within each round.

    Comparing models one after the other lets machine noise land on one of them; taking turns spreads
    it over all, which is what makes a ratio from a shared machine trustworthy.
    """
    per_round: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times = time_calls(call, warmup=warmup, runs=runs, min_seconds=min_seconds)
            per_round[name].append(float(np.median(times)))
    return {name: float(np.median(values)) for name, values in per_round.items()}
