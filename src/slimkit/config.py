"""Strict configs shared by passes and training: the base class, the error a validator raises, and the
constrained number types most passes use.

It sits below both `slimkit.passes` and `slimkit.train` (a pass config embeds a `TrainConfig`), so training
never imports the passes. Every range or consistency rule that can be decided from a config alone lives in
its class (a `Field` bound or a validator), so a recipe is refused when it is planned, before any pass runs.
"""

from __future__ import annotations

from typing import Annotated

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


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


__all__ = ["Alpha", "AtLeastOne", "ConfigError", "Cosine", "Fraction", "NonNegative", "PassConfig",
           "Temperature", "is_power_of_two"]
