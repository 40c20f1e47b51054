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


def interleaved_rounds(calls: dict[str, Callable[[], object]], *, rounds: int = 7, min_seconds: float = 0.3,
                       runs: int = 10, warmup: int = 3) -> dict[str, tuple[list[float], np.ndarray]]:
    """Per call: (its p50 in each round, all its call times), the calls taking turns within each round.

    Comparing models one after the other lets machine noise land on one of them; taking turns spreads
    it over all, which is what makes a ratio from a shared machine trustworthy.
    """
    per_round: dict[str, list[float]] = {name: [] for name in calls}
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times = time_calls(call, warmup=warmup, runs=runs, min_seconds=min_seconds)
            per_round[name].append(float(np.median(times)))
            pooled[name].append(times)
    return {name: (per_round[name], np.concatenate(pooled[name])) for name in calls}


def interleaved_p50(calls: dict[str, Callable[[], object]], *, rounds: int = 7, min_seconds: float = 0.3,
                    runs: int = 10, warmup: int = 3) -> dict[str, float]:
    """Median over rounds of each call's p50 (ms), the calls taking turns within each round."""
    measured = interleaved_rounds(calls, rounds=rounds, min_seconds=min_seconds, runs=runs, warmup=warmup)
    return {name: float(np.median(p50s)) for name, (p50s, _times) in measured.items()}


def summarize_rounds(round_p50s: list[float], times_ms: np.ndarray, batch_size: int) -> dict:
    """Latency of one model measured in interleaved rounds: the median of per-round p50s and its spread
    (interquartile range over rounds), plus pooled p90 and mean."""
    rounds = np.asarray(round_p50s, dtype=np.float64)
    out = summarize(times_ms, batch_size)
    p50 = float(np.median(rounds))
    out.update({
        "p50": p50,
        "p50_spread": [float(np.percentile(rounds, 25)), float(np.percentile(rounds, 75))],
        "p50_rounds": [float(r) for r in rounds],
        "throughput_per_s": float(batch_size * 1000.0 / p50) if p50 > 0 else None,
    })
    return out


def paired_ratio(candidate_rounds: list[float], reference_rounds: list[float]) -> tuple[float, list[float]] | None:
    """Median and interquartile range of the per-round latency ratios candidate / reference.

    Rounds are paired (both were timed in the same round), so machine-wide slowdowns cancel.
    """
    cand = np.asarray(candidate_rounds, dtype=np.float64)
    ref = np.asarray(reference_rounds, dtype=np.float64)
    if cand.size == 0 or cand.size != ref.size or np.any(ref <= 0):
        return None
    per_round = cand / ref
    return float(np.median(per_round)), [float(np.percentile(per_round, 25)), float(np.percentile(per_round, 75))]
