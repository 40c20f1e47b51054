"""The search's report, rebuilt from the store alone (`slimkit report DIR` does exactly this): report.json,
report.html (see `report_html`) and the terminal summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimkit.report.build import to_jsonable
from slimkit.report.environment import environment, package_versions
from slimkit.searching import explain
from slimkit.searching.store import STUDY_NAME, all_records, import_optuna, open_store

SCHEMA = "slimkit.search-report/1"
BASELINE_LABEL = "ONNX fp32 (ONNX Runtime)"
# Below this many evaluation samples an accuracy's 95% interval is wider than a typical floor: warn.
FEW_SAMPLES = 500


def load_study(folder: Path):
    optuna = import_optuna()
    storage = open_store(folder, create=False)
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=storage)
    except KeyError:
        from slimkit.errors import SlimkitError

        raise SlimkitError(f"{folder} holds no slimkit search", "point slimkit report at a search's -o folder") from None


def build_search_report(study: Any, folder: Path) -> dict:
    """The report dict (schema slimkit.search-report/1) from what the store holds."""
    attrs = dict(study.user_attrs)
    floor = attrs.get("floor") or {}
    objective = attrs.get("objective", "latency")
    final = attrs.get("final") or {}
    records = [r for r in all_records(study) if r.get("state") != "skipped"]
    records = explain.annotate(records)
    chosen, met = explain.recommend(records, objective, final)
    by_number = {e.get("trial"): e for e in final.get("entries") or []}
    trials = []
    for r in records:
        trials.append({key: r.get(key) for key in (
            "number", "state", "label", "chain", "runtime", "passes", "params", "artifact", "duration_s",
            "error", "pruned_reason", "validation", "flags", "pareto", "trains", "task_wall_s")}
            | {"final": by_number.get(r["number"])})
    recommendation = None
    if chosen is not None:
        v = chosen.get("validation") or {}
        shortfall = None
        if not met:
            gap = (floor.get("threshold") or 0) - (v.get("metric") or 0)
            shortfall = (f"{gap * 100:.2f} accuracy points" if floor.get("metric") == "accuracy"
                         else f"{gap:.4f} cosine") + f" below the floor ({floor.get('text')})"
        recommendation = {
            "trial": chosen["number"], "label": chosen.get("label"), "chain": chosen.get("chain"),
            "passes": chosen.get("passes"), "artifact": "best/" if met else None,
            "reason": explain.reason(records, chosen, met, floor, BASELINE_LABEL, final),
            "meets_floor": met, "shortfall": shortfall, "closest_trial": None if met else chosen["number"],
            "validation": v, "final": by_number.get(chosen["number"]),
        }
    else:
        recommendation = {"trial": None, "label": None, "meets_floor": False,
                          "reason": explain.reason(records, None, False, floor, BASELINE_LABEL, final),
                          "shortfall": "no trial completed"}
    timings = attrs.get("timings") or {}
    wall = timings.get("wall_s")
    trials_s = timings.get("trials_s")
    warnings = _warnings(attrs, final, floor)
    baseline = _validation_baseline(records, floor)
    report = {
        "schema": SCHEMA,
        "command": "search",
        "model": {"source": attrs.get("model"), "kind": attrs.get("model_kind")},
        "objective": objective,
        "floor": floor,
        "data": attrs.get("split"),
        "budget": attrs.get("budget"),
        "executor": timings.get("executor"),
        "seed": attrs.get("seed"),
        "baseline": {"label": BASELINE_LABEL, **{k: baseline.get(k) for k in ("latency_ms", "size_bytes", "metric")}},
        "trials": trials,
        "pareto": explain.pareto_front(records),
        "recommendation": recommendation,
        "final_measurement": final or None,
        "sensitivity": (chosen or {}).get("sensitivity") or _first_sensitivity(records),
        "histograms": _histograms(folder, chosen, records, objective),
        "environment": {**environment((attrs.get("settings") or {}).get("threads", 2)),
                        "packages": {**package_versions(), **package_versions(("optuna", "ray", "plotly"))}},
        "warnings": warnings,
        "overhead": _overhead(timings, wall, trials_s),
        "ray": _ray_overhead(records) if timings.get("executor") == "ray" else None,
    }
    report["summary"] = summary_text(report)
    return to_jsonable(report)


def _validation_baseline(records: list[dict], floor: dict) -> dict:
    """The plain ONNX baseline as the trials saw it on validation (median latency over the trials' own
    interleaved runs), so it sits on the same axes as they do in the chart."""
    runs = [m[0] for r in explain.measured(records) if (m := r.get("measurements"))]
    if not runs:
        return {}
    latencies = sorted(x for m in runs if (x := (m.get("latency_ms") or {}).get("p50")) is not None)
    first = runs[0]
    metric = ((first.get("metrics") or {}).get("accuracy") if floor.get("metric") == "accuracy"
              else (first.get("fidelity") or {}).get("cosine_mean"))
    return {"latency_ms": latencies[len(latencies) // 2] if latencies else None,
            "size_bytes": first.get("size_bytes"), "metric": metric}


def _first_sensitivity(records: list[dict]) -> list | None:
    for r in records:
        if r.get("sensitivity"):
            return r["sensitivity"]
    return None


def _histograms(folder: Path, chosen: dict | None, records: list[dict], objective: str) -> list[dict]:
    """Before/after weight histograms of the recommended artifact; when it changed no weight values (pruning
    removes units, it does not round them), those of the best measured trial that quantized or clustered."""
    from slimkit.searching.histograms import weight_histograms

    ranked = sorted(explain.measured(records), key=lambda r: explain.score(r["validation"], objective))
    for record in ([chosen] if chosen else []) + [r for r in ranked if r is not chosen]:
        if not record or not record.get("artifact"):
            continue
        try:
            found = [h for h in weight_histograms(folder / "baseline", folder / record["artifact"])
                     if h["technique"] != "unchanged"]
        except (OSError, ValueError):
            continue
        if found:
            return [{**h, "trial": record["number"], "label": record.get("label")} for h in found]
    return []


def _warnings(attrs: dict, final: dict, floor: dict) -> list[str]:
    from slimkit.evaluate.fidelity import wilson_interval

    warnings = []
    split = attrs.get("split") or {}
    for part, samples, metric in (("validation", split.get("validation"), attrs.get("original_metric")),
                                  ("evaluation", final.get("samples"), final.get("original_metric"))):
        if not samples:
            continue
        if floor.get("metric") == "accuracy" and metric is not None and samples < FEW_SAMPLES:
            low, high = wilson_interval(round(metric * samples), samples)
            warnings.append(f"the {part} data has {samples} samples: the original's accuracy "
                            f"{metric * 100:.1f}% has a 95% interval of {low * 100:.1f}-{high * 100:.1f}%, wider "
                            f"than the floor's {floor.get('value', 0) * 100:g} points; give more data to tell "
                            "candidates apart reliably")
        elif floor.get("metric") == "cosine" and samples < 64:
            warnings.append(f"the {part} data has {samples} samples: a mean cosine over so few sentences is "
                            "a rough estimate; give 64 or more")
    return warnings


def _overhead(timings: dict, wall: float | None, trials_s: float | None) -> dict:
    if not wall:
        return {}
    parts = {k: timings.get(k) for k in ("setup_s", "sampler_s", "store_s", "best_s", "final_s")}
    machinery = sum(v for k, v in parts.items() if v and k in ("sampler_s", "store_s", "best_s"))
    # Summed from its parts, not wall minus trials: on Ray the trials overlap, so their sum exceeds the wall.
    outside = sum(v for v in parts.values() if v)
    return {"wall_s": wall, "trials_s": trials_s, "fraction": outside / wall,
            "machinery_fraction": machinery / wall, **parts}


def _ray_overhead(records: list[dict]) -> dict | None:
    gaps = [r["task_wall_s"] - r["duration_s"] for r in records
            if r.get("task_wall_s") is not None and r.get("duration_s") is not None]
    if not gaps:
        return None
    gaps.sort()
    return {"per_trial_overhead_s_median": gaps[len(gaps) // 2], "min_s": gaps[0], "max_s": gaps[-1],
            "trials": len(gaps)}


def _fmt_metric(floor: dict, value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value * 100:.2f}%" if floor.get("metric") == "accuracy" else f"{value:.4f}"


def summary_text(report: dict) -> str:
    rec = report.get("recommendation") or {}
    trials = report.get("trials") or []
    states: dict[str, int] = {}
    for t in trials:
        states[t.get("state") or "?"] = states.get(t.get("state") or "?", 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return f"{len(trials)} trials ({counts}). {rec.get('reason') or ''}"


def terminal_lines(report: dict, top: int = 10) -> list[str]:
    """The summary a terminal shows: the answer first, then the best trials and the traps."""
    floor = report.get("floor") or {}
    rec = report.get("recommendation") or {}
    lines = [f"search: {report.get('summary')}"]
    if rec.get("trial") is not None:
        lines.append(f"recommended: trial {rec['trial']} {rec.get('label')}"
                     + ("" if rec.get("meets_floor") else f" (floor NOT met: {rec.get('shortfall')})"))
    lines.append(f"{'#':>4} {'state':9} {'speed':>7} {'size':>7} {'metric':>8}  label")
    done = [t for t in report.get("trials") or [] if t.get("validation")]
    done.sort(key=lambda t: explain.score(t["validation"], report.get("objective", "latency")))
    for t in done[:top]:
        v = t["validation"]
        mark = "*" if t["number"] == rec.get("trial") else ("p" if t.get("pareto") else " ")
        speed = f"{v['speedup']:.2f}x" if v.get("speedup") else "?"
        size = f"{1 / v['size_ratio']:.2f}x" if v.get("size_ratio") else "?"
        flags = f"  [{', '.join(t.get('flags') or [])}]" if t.get("flags") else ""
        lines.append(f"{t['number']:>3}{mark} {t['state']:9} {speed:>7} {size:>7} "
                     f"{_fmt_metric(floor, v.get('metric')):>8}  {t.get('label')}{flags}")
    others = [t for t in report.get("trials") or [] if not t.get("validation")]
    if others:
        lines.append(f"not measured: {len(others)} (" + "; ".join(
            f"#{t['number']} {t['state']}: {(t.get('error') or t.get('pruned_reason') or '')[:80]}" for t in others[:3])
            + (" ..." if len(others) > 3 else "") + ")")
    for warning in report.get("warnings") or []:
        lines.append(f"warning: {warning}")
    overhead = report.get("overhead") or {}
    if overhead.get("wall_s"):
        lines.append(f"wall {overhead['wall_s']:.0f}s, trials {overhead.get('trials_s') or 0:.0f}s, search machinery "
                     f"{(overhead.get('machinery_fraction') or 0) * 100:.1f}% of the wall time")
    return lines


def write_search_report(folder: Path, report: dict) -> tuple[Path, Path]:
    """report.json and report.html in `folder`, each written whole then renamed."""
    from slimkit.report.write import write_pair
    from slimkit.searching.report_html import render_search_html

    data = to_jsonable(report)
    return write_pair(Path(folder), data, render_search_html(data))


def rebuild(folder: Path) -> dict:
    """`slimkit report DIR`: report.json and report.html again from the store."""
    study = load_study(Path(folder))
    report = build_search_report(study, Path(folder))
    write_search_report(Path(folder), report)
    return report
