"""From trial records to an answer: the Pareto front, the flags, the recommendation and its reason in words.

Pure functions over the records the store holds (dicts), so `slimkit report DIR` rebuilds the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# A ratio within this of 1.0 is "the same" (latency medians on a shared machine move by a few percent).
SAME = 0.05


def measured(records: Sequence[dict]) -> list[dict]:
    """Trials that ran to the end and have validation figures."""
    return [r for r in records if r.get("state") == "complete" and r.get("validation")]


def objective_values(validation: dict, objective: str) -> tuple[float, ...]:
    """What Optuna minimizes: latency and/or size relative to the ONNX fp32 baseline of the same run."""
    speed = validation.get("speedup") or 0.0
    latency = 1.0 / speed if speed > 0 else math.inf
    size = validation.get("size_ratio")
    size = math.inf if size is None else float(size)
    if objective == "latency":
        return (latency,)
    if objective == "size":
        return (size,)
    return (latency, size)


def score(validation: dict, objective: str) -> float:
    """One number to rank by: the objective, or for 'both' the geometric mean of relative latency and size."""
    values = objective_values(validation, objective)
    return math.prod(values) ** (1.0 / len(values))


def pareto_front(records: Sequence[dict]) -> list[int]:
    """Trial numbers not dominated in (latency, size, metric) among those that meet the floor on validation."""
    pool = [r for r in measured(records) if r["validation"].get("meets_floor")]

    def point(r: dict) -> tuple[float, float, float]:
        v = r["validation"]
        return (1.0 / v["speedup"] if v.get("speedup") else math.inf, v.get("size_ratio") or math.inf,
                -(v.get("metric") or 0.0))

    front = []
    for r in pool:
        p = point(r)
        dominated = any(all(a <= b for a, b in zip(point(o), p, strict=True)) and point(o) != p for o in pool)
        if not dominated:
            front.append(r["number"])
    return sorted(front)


def flags_of(record: dict) -> list[str]:
    """The traps a candidate fell into, from its validation figures."""
    v = record.get("validation") or {}
    flags = []
    speed, size = v.get("speedup"), v.get("size_ratio")
    if size is not None and speed is not None and size < 1 - SAME and speed < 1 + SAME:
        flags.append("smaller-not-faster")
    if speed is not None and speed > 1 + SAME and not v.get("meets_floor"):
        flags.append("faster-below-floor")
    if speed is not None and speed < 1 - SAME:
        flags.append("slower")
    if v.get("nonfinite_outputs"):
        flags.append("nan-output")
    return flags


def best_so_far(records: Sequence[dict], objective: str) -> tuple[dict | None, bool]:
    """(record, meets floor): the best trial meeting the floor on validation, else the one closest to it."""
    done = measured(records)
    feasible = [r for r in done if r["validation"].get("meets_floor") and not r["validation"].get("nonfinite_outputs")]
    if feasible:
        return min(feasible, key=lambda r: (score(r["validation"], objective), r["number"])), True
    if done:
        return max(done, key=lambda r: (r["validation"].get("metric") or -math.inf, -r["number"])), False
    return None, False


def recommend(records: Sequence[dict], objective: str, final: dict | None) -> tuple[dict | None, bool]:
    """The recommendation: among the finalists that met the floor on validation, the best by the objective as
    re-measured together on one node (latency is hardware, not data: choosing by it uses no held-out
    labels). Without a final measurement, the best on validation."""
    if final and final.get("entries"):
        by_number = {r["number"]: r for r in records}
        ranked = []
        for entry in final["entries"]:
            record = by_number.get(entry.get("trial"))
            if record is None or not (record.get("validation") or {}).get("meets_floor"):
                continue
            ranked.append((score(entry, objective), record["number"], record))
        if ranked:
            return min(ranked, key=lambda x: (x[0], x[1]))[2], True
    return best_so_far(records, objective)


def _times(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}x" if x < 10 else f"{x:.0f}x"


def _metric_text(floor: dict, value: float | None) -> str:
    if value is None:
        return f"{floor.get('metric', 'metric')} ?"
    if floor.get("metric") == "accuracy":
        return f"accuracy {value * 100:.2f}%"
    return f"cosine {value:.4f}"


def describe(record: dict, floor: dict, baseline_label: str, final_entry: dict | None = None) -> str:
    """'LABEL: 3.8x faster and 4.0x smaller than ONNX fp32 at cosine 0.996 (held-out: 0.995)'."""
    figures = final_entry or record.get("validation") or {}
    speed, size = figures.get("speedup"), figures.get("size_ratio")
    parts = []
    if speed is not None:
        parts.append(f"{_times(speed)} faster" if speed >= 1 else f"{_times(1 / speed)} slower")
    if size:
        parts.append(f"{_times(1 / size)} smaller" if size <= 1 else f"{_times(size)} larger")
    text = f"{record.get('label')}: {' and '.join(parts) or 'measured'} than {baseline_label} at "
    text += _metric_text(floor, (record.get("validation") or {}).get("metric")) + " on validation"
    if final_entry and final_entry.get("metric") is not None:
        text += f" ({_metric_text(floor, final_entry['metric'])} held out)"
    return text


def reason(records: Sequence[dict], chosen: dict | None, met: bool, floor: dict, baseline_label: str,
           final: dict | None) -> str:
    """The recommendation and the lessons of the other trials, in plain words, from the measurements."""
    if chosen is None:
        failed = [r for r in records if r.get("state") == "failed"]
        return (f"No trial completed ({len(failed)} failed"
                + (f"; first error: {failed[0].get('error')}" if failed else "") + ").")
    entry = _final_entry(final, chosen["number"])
    lines = [describe(chosen, floor, baseline_label, entry)]
    if not met:
        v = chosen.get("validation") or {}
        short = floor.get("threshold", 0) - (v.get("metric") or 0)
        lines[0] = (f"No trial met the floor ({floor.get('text')}); closest: " + lines[0]
                    + f", short by {short * (100 if floor.get('metric') == 'accuracy' else 1):.4g}"
                    + (" points" if floor.get("metric") == "accuracy" else ""))
    done = [r for r in measured(records) if r["number"] != chosen["number"]]
    smaller = [r for r in done if "smaller-not-faster" in (r.get("flags") or flags_of(r))]
    if smaller:
        r = min(smaller, key=lambda r: r["validation"]["size_ratio"])
        lines.append(f"{r['label']} was {_times(1 / r['validation']['size_ratio'])} smaller but not faster "
                     f"({_times(r['validation'].get('speedup'))} the baseline's speed)")
    below = [r for r in done if "faster-below-floor" in (r.get("flags") or flags_of(r))]
    if below:
        r = max(below, key=lambda r: r["validation"].get("speedup") or 0)
        lines.append(f"{r['label']} was {_times(r['validation'].get('speedup'))} faster but fell to "
                     f"{_metric_text(floor, r['validation'].get('metric'))}, below the floor")
    trained = [r for r in records if r.get("trains") and r.get("state") in ("complete", "pruned")]
    if trained:
        lost = [r for r in trained if r.get("state") == "pruned" or not (r.get("validation") or {}).get("meets_floor")]
        lines.append(f"{len(trained)} training candidates (pruning, distillation) ran, {len(lost)} missed the floor")
    failed = [r for r in records if r.get("state") == "failed"]
    if failed:
        lines.append(f"{len(failed)} trials failed (see the table)")
    return "; ".join(lines) + "."


def _final_entry(final: dict | None, number: int) -> dict | None:
    for entry in (final or {}).get("entries") or []:
        if entry.get("trial") == number:
            return entry
    return None


def annotate(records: list[dict]) -> list[dict]:
    """Each record with its flags and whether it is on the Pareto front."""
    front = set(pareto_front(records))
    out = []
    for r in records:
        r = dict(r)
        r["flags"] = flags_of(r) if r.get("validation") else []
        r["pareto"] = r["number"] in front
        out.append(r)
    return out


def ranked_finalists(records: Sequence[dict], objective: str, limit: int = 8) -> list[dict]:
    """The trials re-measured at the end: the best few by the objective among those meeting the floor (per-trial
    timings are noisy, so the runners-up get a second look), the rest of the Pareto front, and the best."""
    feasible = [r for r in measured(records) if r["validation"].get("meets_floor")]
    feasible.sort(key=lambda r: (score(r["validation"], objective), r["number"]))
    front = set(pareto_front(records))
    chosen = feasible[:3] + [r for r in feasible[3:] if r["number"] in front]
    best, _ = best_so_far(records, objective)
    if best is not None and all(r["number"] != best["number"] for r in chosen):
        chosen = [best, *chosen]
    return chosen[:limit]


__all__ = ["annotate", "best_so_far", "describe", "flags_of", "measured", "objective_values", "pareto_front",
           "ranked_finalists", "reason", "recommend", "score"]
