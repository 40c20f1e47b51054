"""evaluate/latency.py: timing loops, percentiles and the interleaved, paired ratios that make numbers from a
shared machine comparable. Calls are real (sleeps and busy loops), so the asserted facts could fail."""

from __future__ import annotations

import time

import numpy as np
import pytest

from slimkit.evaluate.latency import (
    interleaved_p50,
    interleaved_rounds,
    paired_ratio,
    summarize,
    summarize_rounds,
    time_calls,
)


def test_time_calls_runs_warmup_then_at_least_runs_calls():
    count = []
    times = time_calls(lambda: count.append(1), warmup=3, runs=20, min_seconds=0.0)
    assert len(times) >= 20 and len(count) == len(times) + 3
    assert np.all(times >= 0)


def test_time_calls_stops_at_max_seconds_for_a_slow_call():
    start = time.perf_counter()
    times = time_calls(lambda: time.sleep(0.02), warmup=0, runs=1000, min_seconds=0.0, max_seconds=0.1)
    assert time.perf_counter() - start < 1.0
    assert 2 <= len(times) < 1000
    assert np.median(times) >= 15  # milliseconds: the sleep is really timed


def test_summarize_gives_percentiles_and_throughput():
    out = summarize(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), batch_size=8)
    assert out["p50"] == 3.0 and out["runs"] == 5
    assert out["p90"] > out["p50"] and out["mean"] == pytest.approx(22.0)
    assert out["throughput_per_s"] == pytest.approx(8 * 1000 / 3.0)


def test_interleaved_rounds_take_turns_and_rank_a_slower_call_slower():
    order: list[str] = []

    def call(name: str, seconds: float):
        def run():
            order.append(name)
            time.sleep(seconds)
        return run

    measured = interleaved_rounds({"fast": call("fast", 0.001), "slow": call("slow", 0.005)}, rounds=3,
                                  min_seconds=0.0, runs=2, warmup=1)
    assert len(measured["fast"][0]) == 3 and len(measured["slow"][0]) == 3
    # Each round times "fast" then "slow": the calls alternate round by round, never all of one first.
    switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert switches >= 5
    p50 = interleaved_p50({"fast": call("fast", 0.001), "slow": call("slow", 0.005)}, rounds=3,
                          min_seconds=0.0, runs=2, warmup=0)
    assert p50["slow"] > 2 * p50["fast"]


def test_summarize_rounds_quotes_the_median_round_and_its_spread():
    out = summarize_rounds([1.0, 2.0, 10.0], np.array([1.0, 2.0, 10.0, 2.0]), batch_size=1)
    assert out["p50"] == 2.0 and out["p50_rounds"] == [1.0, 2.0, 10.0]
    assert out["p50_spread"][0] <= 2.0 <= out["p50_spread"][1]
    assert out["throughput_per_s"] == pytest.approx(500.0)


def test_paired_ratio_cancels_a_machine_wide_slowdown():
    reference = [1.0, 2.0, 4.0]  # the machine got slower round by round
    candidate = [0.5, 1.0, 2.0]  # but the candidate is always half the reference
    median, spread = paired_ratio(candidate, reference)
    assert median == pytest.approx(0.5) and spread == [pytest.approx(0.5), pytest.approx(0.5)]
    assert paired_ratio([], []) is None
    assert paired_ratio([1.0], [1.0, 2.0]) is None  # unpaired rounds
    assert paired_ratio([1.0], [0.0]) is None
