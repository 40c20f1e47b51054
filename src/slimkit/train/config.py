"""The training settings, a strict config so compression passes can embed one as `train:`.

Its base comes from `slimkit.config`, below both training and the passes: training never imports a pass."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from slimkit.config import ConfigError, PassConfig


class TrainConfig(PassConfig):
    """How to fine-tune. Every field is part of the checkpoint's config hash."""

    epochs: int = 3
    max_steps: int | None = None  # stop after this many optimizer steps in total
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = None
    patience: int | None = None  # early stopping: epochs without eval improvement
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        # A ConfigError (a SlimkitError, not a ValueError) escapes pydantic unwrapped: one line for the user.
        checks = [
            ("epochs", self.epochs >= 1, f"epochs is {self.epochs}", "set epochs to 1 or more"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, f"max_steps is {self.max_steps}",
             "set max_steps to 1 or more, or leave it unset"),
            ("batch_size", self.batch_size >= 1, f"batch_size is {self.batch_size}",
             "set batch_size to 1 or more"),
            ("lr", self.lr > 0, f"learning rate is {self.lr}",
             "set lr (--lr) to a positive number such as 1e-3"),
            ("weight_decay", self.weight_decay >= 0, f"weight_decay is {self.weight_decay}",
             "set weight_decay to 0 or more"),
            ("warmup_steps", self.warmup_steps >= 0, f"warmup_steps is {self.warmup_steps}",
             "set warmup_steps to 0 or more"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, f"grad_clip is {self.grad_clip}",
             "set grad_clip to a positive norm, or leave it unset"),
            ("patience", self.patience is None or self.patience >= 1, f"patience is {self.patience}",
             "set patience to 1 or more, or leave it unset"),
        ]
        for key, ok, problem, hint in checks:
            if not ok:
                raise ConfigError(f"train.{key}", f"training config: {problem}", hint)
        return self
