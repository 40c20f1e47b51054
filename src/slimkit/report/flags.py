"""Plain-language warnings about measurements, so a reader does not have to spot trade-offs in a table.

Pure functions over `Measurement.as_dict()` dicts. Every candidate is compared with its baseline: the
measurement its `baseline` key names (the plain export on its own runtime), else the reference (never the
reference with itself); a flag whose inputs are missing is not evaluated.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

# A candidate this much smaller than the reference (size ratio <=) is expected to be faster ...
SMALLER_SIZE_RATIO = 0.90
# ... and is flagged when it is not measurably faster (see `speed_verdict`).
# p50 latency ratio above which a candidate counts as slower than the reference.
SLOWER_P50_RATIO = 1.10
# p50 latency ratio below which a candidate counts as faster than the reference.
FASTER_P50_RATIO = 0.95
# Fidelity floors: below any of them, outputs have drifted from the reference.
MIN_COSINE_MEAN = 0.99
MIN_COSINE_MIN = 0.95
MIN_TOP1_AGREEMENT = 0.99
# Accuracy may fall by at most this much (absolute) below the reference's, and the fall must also leave
# the reference's 95% interval to count.
MAX_ACCURACY_DROP = 0.01


def value(measurement: dict, *path: str) -> float | None:
    """A finite number at `path` in a measurement dict, or None when absent or not a number."""
    current: Any = measurement
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    if isinstance(current, bool) or not isinstance(current, numbers.Real):  # numpy scalars are Real
        return None
    number = float(current)
    return number if math.isfinite(number) else None


def ratio(candidate: dict, reference: dict, *path: str) -> float | None:
    """candidate / reference at `path`; None when either is missing or the reference is not positive."""
    cand = value(candidate, *path)
    ref = value(reference, *path)
    if cand is None or ref is None or ref <= 0:
        return None
    return cand / ref


def _rounds(measurement: dict) -> list[float] | None:
    rounds = (measurement.get("latency_ms") or {}).get("p50_rounds") if isinstance(measurement, dict) else None
    if not isinstance(rounds, list) or not rounds:
        return None
    finite = all(isinstance(r, numbers.Real) and not isinstance(r, bool) and math.isfinite(r) for r in rounds)
    return [float(r) for r in rounds] if finite else None


def ratios(candidate: dict, reference: dict) -> dict[str, Any]:
    """Size and p50 latency of a candidate relative to the reference, where both are known.

    When both were timed in the same interleaved rounds, the p50 ratio is the median of the per-round
    ratios and `p50_ratio_spread` their interquartile range.
    """
    from slimkit.evaluate.latency import paired_ratio

    out: dict[str, Any] = {}
    size = ratio(candidate, reference, "size_bytes")
    if size is not None:
        out["size_ratio"] = size
    cand_rounds, ref_rounds = _rounds(candidate), _rounds(reference)
    paired = paired_ratio(cand_rounds, ref_rounds) if cand_rounds and ref_rounds else None
    if paired is not None:
        out["p50_ratio"], out["p50_ratio_spread"] = paired
    else:
        p50 = ratio(candidate, reference, "latency_ms", "p50")
        if p50 is not None:
            out["p50_ratio"] = p50
    return out


def speed_verdict(rel: dict) -> str | None:
    """"faster", "slower" or "same" (no measurable difference: the spread of the ratio includes 1.0, or the
    change is under the thresholds); None when there is no latency ratio."""
    p50_r = rel.get("p50_ratio")
    if p50_r is None:
        return None
    low, high = rel.get("p50_ratio_spread") or (p50_r, p50_r)
    if p50_r < FASTER_P50_RATIO and high < 1.0:
        return "faster"
    if p50_r > SLOWER_P50_RATIO and low > 1.0:
        return "slower"
    return "same"


def accuracy_change(candidate: dict, reference: dict | None) -> str | None:
    """"drop", "gain" or "same" for the candidate's accuracy against the reference's; None when unknown.

    A change counts only when it leaves the reference's 95% interval (Wilson) and exceeds MAX_ACCURACY_DROP
    for a drop: a swing the sample size cannot tell apart from noise is not called a drop or a gain.
    """
    acc = value(candidate, "metrics", "accuracy")
    ref_acc = value(reference, "metrics", "accuracy") if reference is not None else None
    if acc is None or ref_acc is None:
        return None
    interval = (reference or {}).get("metrics", {}).get("accuracy_ci95")
    low, high = interval if isinstance(interval, list) and len(interval) == 2 else (ref_acc, ref_acc)
    if ref_acc - acc > MAX_ACCURACY_DROP and acc < low:
        return "drop"
    if acc > high:
        return "gain"
    return "same"


def find_reference(measurements: list[dict], reference_label: str | None) -> dict | None:
    if reference_label is None:
        return None
    return next((m for m in measurements if m.get("label") == reference_label), None)


def baseline_of(measurement: dict, measurements: list[dict], reference_label: str | None) -> dict | None:
    """What a candidate's size and speed are judged against: the row its `baseline` key names (the plain
    fp32 export on the candidate's own runtime, so a runtime switch is not credited to a technique), else
    the reference. Fidelity is always to the reference's outputs."""
    named = measurement.get("baseline")
    if named and named != measurement.get("label"):
        found = find_reference(measurements, str(named))
        if found is not None:
            return found
    return find_reference(measurements, reference_label)


def fidelity_problems(measurement: dict) -> list[str] | None:
    """Which fidelity floors a candidate falls below; None when no fidelity figure was measured."""
    checks = (
        ("cosine mean", value(measurement, "fidelity", "cosine_mean"), MIN_COSINE_MEAN),
        ("cosine min", value(measurement, "fidelity", "cosine_min"), MIN_COSINE_MIN),
        ("top-1 agreement", value(measurement, "fidelity", "top1_agreement"), MIN_TOP1_AGREEMENT),
    )
    known = [(name, v, floor) for name, v, floor in checks if v is not None]
    if not known:
        return None
    return [f"{name} {v:.4f} < {floor}" for name, v, floor in known if v < floor]


def _flag(label: str, flag: str, message: str) -> dict:
    return {"model": label, "flag": flag, "message": message}


def nonfinite_flag(measurement: dict) -> dict | None:
    """The `nan-output` flag when a measurement's outputs held NaN or Inf (see `nonfinite_outputs` in
    slimkit.evaluate.measure), for the reference as for any candidate; else None."""
    counts = measurement.get("nonfinite_outputs")
    if not isinstance(counts, dict) or not (counts.get("nan") or counts.get("inf")):
        return None
    label = str(measurement.get("label") or measurement.get("model") or "?")
    found = " and ".join(f"{int(counts[key]):,} {name}" for key, name in (("nan", "NaN"), ("inf", "Inf"))
                         if counts.get(key))
    return _flag(label, "nan-output",
                 f"Its outputs hold {found} values (of {counts.get('values', '?')} checked), so its fidelity, "
                 "accuracy and speed figures describe a broken model; check its weights (slimkit inspect).")


def candidate_flags(candidate: dict, reference: dict | None) -> list[dict]:
    """Flags for one candidate; `reference` None evaluates only the flags that need no reference."""
    label = str(candidate.get("label") or candidate.get("model") or "?")
    flags = [f for f in (nonfinite_flag(candidate),) if f is not None]
    rel = ratios(candidate, reference) if reference is not None else {}
    size_r, p50_r = rel.get("size_ratio"), rel.get("p50_ratio")
    problems = fidelity_problems(candidate)

    speed = speed_verdict(rel)
    base = f"the baseline ({candidate['baseline']})" if candidate.get("baseline") else "the reference"
    spread = rel.get("p50_ratio_spread")
    spread_text = f" (interquartile range over rounds {spread[0]:.2f}-{spread[1]:.2f})" if spread else ""
    fidelity = candidate.get("fidelity")
    if isinstance(fidelity, dict) and fidelity.get("error"):
        flags.append(_flag(label, "output-mismatch",
                           f"Its outputs cannot be compared with the reference's: {fidelity['error']}."))
    if size_r is not None and speed is not None and size_r <= SMALLER_SIZE_RATIO and speed != "faster":
        flags.append(_flag(label, "smaller-not-faster",
                           f"It is {size_r:.2f}x the size of {base} but its p50 latency is {p50_r:.2f}x"
                           f"{spread_text}, so the smaller model is not measurably faster here."))
    if speed == "slower":
        flags.append(_flag(label, "slower",
                           f"Its p50 latency is {p50_r:.2f}x that of {base}{spread_text}, so it is slower."))
    if problems:
        flags.append(_flag(label, "fidelity-drop",
                           f"Its outputs drift from the reference ({'; '.join(problems)})."))
    if problems and speed == "faster":
        flags.append(_flag(label, "faster-but-off",
                           f"It is faster ({p50_r:.2f}x the p50 latency of {base}) but not faithful to "
                           "the reference's outputs, so the speed-up is not free."))
    if accuracy_change(candidate, reference) == "drop":
        acc, ref_acc = value(candidate, "metrics", "accuracy"), value(reference, "metrics", "accuracy")
        flags.append(_flag(label, "accuracy-drop",
                           f"Its accuracy is {acc:.4f} against {ref_acc:.4f} for {base} "
                           f"(down {ref_acc - acc:.4f}, outside that one's 95% interval)."))
    fell_back = _fallback_ops(candidate)
    if fell_back:
        flags.append(_flag(label, "reference-kernels",
                           f"{fell_back} of its ops fall back from XNNPACK to LiteRT's built-in kernels, which run "
                           "them one at a time and are often what makes a quantized TFLite model slow."))
    data = candidate.get("data")
    seen = data.get("seen_by") if isinstance(data, dict) else None
    if seen:
        flags.append(_flag(label, "measured-on-seen-data",
                           f"It was measured on data that {' and '.join(seen)} saw ({data.get('source')}), "
                           "so the figure is biased in its favour; give --eval-data with separate samples."))
    if problems is not None and isinstance(data, dict) and data.get("generated") is True:
        flags.append(_flag(label, "generated-inputs",
                           "Its fidelity was measured on generated random inputs rather than real data, "
                           "so it is weak evidence."))
    return flags


def _fallback_ops(measurement: dict) -> str | None:
    """'3 (DEQUANTIZE x2, CONV_2D x1)' when the runtime reported ops outside its delegate, else None."""
    execution = measurement.get("execution")
    by_type = execution.get("fallback_by_type") if isinstance(execution, dict) else None
    if not isinstance(by_type, dict) or not by_type:
        return None
    total = sum(int(n) for n in by_type.values())
    return f"{total} ({', '.join(f'{op} x{n}' for op, n in by_type.items())})"


def compute_flags(measurements: list[dict], reference_label: str | None) -> list[dict]:
    """All flags for every candidate (every measurement but the reference), each judged against its baseline,
    in measurement order; the reference itself is flagged only for NaN / Inf outputs."""
    flags = []
    for measurement in measurements:
        if reference_label is not None and measurement.get("label") == reference_label:
            flags.extend(f for f in (nonfinite_flag(measurement),) if f is not None)  # the only flag it can get
            continue
        flags.extend(candidate_flags(measurement, baseline_of(measurement, measurements, reference_label)))
    return flags
