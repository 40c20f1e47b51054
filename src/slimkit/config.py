"""Strict configs shared by passes and training: the base class, the error a validator raises, and the
constrained number types most passes use.

It sits below both `slimkit.passes` and `slimkit.train` (a pass config embeds a `TrainConfig`), so training
never imports the passes. Every range or consistency rule that can be decided from a config alone lives in
its class (a `Field` bound or a validator), so a recipe is refused when it is planned, before any pass runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from slimkit.errors import SlimkitError


class PassConfig(BaseModel):
    """Base of every pass config: unknown keys are errors, not silently ignored; NaN and infinity are refused
    wherever a number is expected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConfigError(SlimkitError):
    """A config value that breaks a rule of its pass, raised by a validator; `key` names the key at fault.

    A SlimkitError, not a ValueError, so it leaves pydantic as it is: one line for the user, and
    `passes.base.make_config` puts the pass name in front.
    """

    def __init__(self, key: str, problem: str, hint: str | None = None) -> None:
        self.key = key
        super().__init__(problem, hint)


# Numbers most passes take. Each bound is checked when the config is built: a bad value is refused, keyed.
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Alpha = Annotated[float | None, Field(ge=0.0, le=1.0)]  # weight of the label loss; None: chosen from the data
Temperature = Annotated[float, Field(gt=0.0)]  # distillation softmax temperature
Cosine = Annotated[float, Field(gt=0.0, le=1.0)]  # a mean output cosine to the original model
AtLeastOne = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]


def searchable(*, choices: Sequence[Any] | None = None, low: float | None = None, high: float | None = None,
               step: float | None = None, log: bool = False) -> dict[str, Any]:
    """Mark a config field as one `slimkit search` varies: `Field(0.5, json_schema_extra=searchable(...))`.

    Either `choices` (a categorical) or a `low`..`high` range (an int range when both are ints, with `step`
    or `log`). Kept next to the field it describes, so a new pass joins the search without touching it.
    """
    if choices is not None:
        if not choices or low is not None or high is not None:
            raise ValueError("searchable: give non-empty choices, or low and high, not both")
        return {"search": {"choices": list(choices)}}
    if low is None or high is None or not low < high:
        raise ValueError("searchable: give choices, or low < high")
    return {"search": {"low": low, "high": high, "step": step, "log": log}}


def search_space_of(config_cls: type[PassConfig]) -> dict[str, dict[str, Any]]:
    """{field: its `searchable` description} for the fields of a config the search may vary."""
    found = {}
    for name, info in config_cls.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get("search"), dict):
            found[name] = dict(extra["search"])
    return found


def require_a_target(min_cosine: float | None, max_drop: float | None, pass_name: str,
                     hint: str = "pass --min-cosine 0.99 or --max-drop 0.01") -> None:
    """The rule every accuracy-aware pass's config shares: a target to hold, min_cosine or max_drop."""
    if min_cosine is None and max_drop is None:
        raise ConfigError("min_cosine", f"neither min_cosine nor max_drop is set, and {pass_name} needs a target",
                          hint)


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


__all__ = ["Alpha", "AtLeastOne", "ConfigError", "Cosine", "Fraction", "NonNegative", "PassConfig",
           "Temperature", "is_power_of_two", "search_space_of", "searchable"]
