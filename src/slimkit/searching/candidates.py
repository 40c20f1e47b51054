"""The candidates a search proposes: the queue of cheap, likely winners that starts it, what a trial asks
Optuna for (a format, a pass per stage, each pass's searchable values), and the label a user reads."""

from __future__ import annotations

from typing import Any

from slimkit.searching.space import NONE, Chain, Space, default_values, searchable_fields


def cheap_first(space: Space) -> list[dict[str, Any]]:
    """The candidates tried before the sampler takes over, cheapest likely winners first: each format's
    precision lowerings (int8 variants, fp16, OpenVINO and TFLite precisions), then its plain conversion at
    each precision its converter offers, then each other technique alone on the first format (ONNX Runtime),
    at its start values: those that train last. Together they cover what every single built-in recipe does,
    so the sampler starts from their figures and spends the rest of the budget on combinations."""
    quantized, plain = [], []
    for fmt in space.formats:
        for quant in space.quantizers[fmt]:
            chain = space.chain(fmt, {"quantize": quant})
            if chain is None or chain.trains:
                continue
            base = {**_stage_params(space, fmt, {"quantize": quant}), **default_values(chain)}
            if quant != NONE:
                quantized.append(base)
                continue
            plain.append(base)
            for key, choices in _converter_choices(chain).items():
                plain.extend({**base, key: c} for c in choices if c != base.get(key))
    alone: list[tuple[bool, dict[str, Any]]] = []
    fmt = space.formats[0]
    choices = [{stage: name} for stage, names in space.stage_choices.items() if stage != "recover"
               for name in names if name != NONE]
    choices += [{"structure": s, "recover": r} for s in space.stage_choices.get("structure", ()) if s != NONE
                for r in space.stage_choices.get("recover", ()) if r != NONE]
    for choice in choices:
        chain = space.chain(fmt, choice)
        if chain is not None:
            alone.append((chain.trains, {**_stage_params(space, fmt, choice), **default_values(chain)}))
    alone.sort(key=lambda item: item[0])  # stable: the techniques that do not train first
    return quantized + plain + [params for _trains, params in alone]


def _converter_choices(chain: Chain) -> dict[str, list]:
    out = {}
    for name in chain.steps:
        for fieldname, spec in searchable_fields(name).items():
            if "choices" in spec:
                out[f"{name}.{fieldname}"] = list(spec["choices"])
    return out


def _stage_params(space: Space, fmt: str, choice: dict[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = {"format": fmt}
    for stage in space.stage_choices:
        if stage == "recover" and choice.get("structure", NONE) == NONE:
            continue
        params[f"stage.{stage}"] = choice.get(stage, NONE)
    params[f"quantize.{fmt}"] = choice.get("quantize", NONE)
    return params


def suggest_chain(trial, space: Space) -> tuple[Chain | None, dict[str, Any]]:
    """Ask the trial for a format, a pass per stage and the pass's searchable values."""
    fmt = trial.suggest_categorical("format", list(space.formats))
    choice: dict[str, str] = {}
    for stage, options in space.stage_choices.items():
        if stage == "recover" and choice.get("structure", NONE) == NONE:
            continue
        choice[stage] = trial.suggest_categorical(f"stage.{stage}", list(options))
    choice["quantize"] = trial.suggest_categorical(f"quantize.{fmt}", list(space.quantizers[fmt]))
    chain = space.chain(fmt, choice)
    if chain is None:
        return None, {}
    values: dict[str, Any] = {}
    for name in chain.steps:
        for fieldname, spec in searchable_fields(name).items():
            key = f"{name}.{fieldname}"
            if "choices" in spec:
                values[key] = trial.suggest_categorical(key, list(spec["choices"]))
            elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
                values[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step") or 1,
                                                log=bool(spec.get("log")))
            else:
                drawn = trial.suggest_float(key, spec["low"], spec["high"], step=spec.get("step"),
                                            log=bool(spec.get("log")))
                values[key] = float(f"{drawn:.10g}")  # 0.30000000000000004 (a stepped float) is 0.3
    return chain, values


def trial_label(chain: Chain, values: dict[str, Any], runtime: str) -> str:
    """'openvino: ov-weights(bits=4) [to-openvino precision=bf16]': what a user needs to rebuild it."""
    parts = []
    for _stage, name in chain.stages:
        mine = {k.split(".", 1)[1]: v for k, v in values.items() if k.split(".", 1)[0] == name}
        parts.append(name + (f"({', '.join(f'{k}={v}' for k, v in mine.items())})" if mine else ""))
    conv = [f"{k.split('.', 1)[1]}={v}" for k, v in values.items()
            if k.split(".", 1)[0] not in {n for _s, n in chain.stages}]
    text = f"{runtime}: " + (" > ".join(parts) or "plain")
    return text + (f" [{', '.join(conv)}]" if conv else "")
