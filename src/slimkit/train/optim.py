"""Optimizer construction and the learning-rate schedule, a pure function of the global step."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.train.config import TrainConfig


def make_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over `params` (which must hold at least one trainable tensor)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise SlimkitError("there are no trainable parameters", "pass params=, or unfreeze some (requires_grad=True)")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The lr for 0-based optimizer step `step`: linear warmup, then constant/cosine/linear decay to 0.

    A function of the step alone, so a resumed run needs no scheduler state beyond the step count.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * (1.0 - progress)
