"""`fit`: the one fine-tuning loop every training-based pass uses (distillation, gradual pruning,
cluster fine-tuning, recovery after factorization).

Deterministic per seed (a resumed run reproduces an uninterrupted one bit for bit), checkpointed after
every epoch, stops early on a stalled eval score, and stops at once on a NaN/Inf loss keeping good weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.data_sources import Dataset
from slimkit.errors import SlimkitError
from slimkit.threads import torch_threads
from slimkit.train.checkpoint import (
    CHECKPOINT_NAME,
    check_compatible,
    config_hash,
    load_checkpoint,
    save_checkpoint,
)
from slimkit.train.config import TrainConfig
from slimkit.train.optim import learning_rate, make_optimizer
from slimkit.train.samples import as_dataset, flatten

DIVERGED_HINT = "lower the learning rate (--lr) or enable grad_clip"


@dataclass
class TrainBatch:
    """What `loss_fn` receives: tensors on the module's device; `index` (on CPU) holds the samples'
    positions in the training data, so callers can cache per-sample values such as teacher outputs."""

    feed: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    index: torch.Tensor


@dataclass
class TrainResult:
    history: list[dict]  # per epoch: epoch, steps, lr, mean of each loss component, eval metrics
    steps: int
    best_epoch: int | None
    best_score: float | None
    stopped_early: bool
    resumed_from_epoch: int | None
    diverged: bool


class TrainingDiverged(SlimkitError):
    """The loss (or a weight) became NaN/Inf; the module holds the last good weights. `result` says how far it got."""

    def __init__(self, problem: str, result: TrainResult | None = None) -> None:
        super().__init__(problem, DIVERGED_HINT)
        self.result = result


LossFn = Callable[[nn.Module, TrainBatch], "torch.Tensor | dict[str, torch.Tensor]"]


def fit(
    module: nn.Module, loss_fn: LossFn, train_data: Dataset | Any, config: TrainConfig, *,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None, score_key: str | None = None,
    checkpoint_dir: Path | None = None, resume: bool = False,
    before_step: Callable[[nn.Module], None] | None = None,
    after_step: Callable[[nn.Module, int], None] | None = None,
    params: Iterable[nn.Parameter] | None = None, progress: Callable[[str], None] | None = None,
    show_bar: bool = False, threads: int | None = None,
) -> TrainResult:
    """Train `module` in place on `loss_fn` (a scalar, or a dict whose "loss" is optimized and the rest logged).

    `before_step(module)` runs after backward, before the optimizer step (gradient masking);
    `after_step(module, step)` after it, with the 1-based global step (re-apply masks, update schedules).
    With `evaluate`, the score (`score_key`, default "score" or the only metric) is maximized: early
    stopping uses it and the best-scoring weights are restored at the end. The module ends in eval() mode.
    `threads` pins PyTorch's thread count for the training loop (None: as the process has it); the caller's
    own count is restored afterwards (`slimkit.threads.torch_threads`).
    """
    feed, labels = flatten(as_dataset(train_data, batch_size=config.batch_size))
    n = len(next(iter(feed.values())))
    bs = config.batch_size
    total = config.epochs * math.ceil(n / bs)
    total = min(total, config.max_steps) if config.max_steps else total
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    optimizer = make_optimizer(module.parameters() if params is None else params, config)
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    own = {id(p) for p in module.parameters()}
    extra = [p for p in trained if id(p) not in own]  # e.g. a distillation projection: saved and restored too
    history: list[dict] = []
    step = done = 0
    best_score: float | None = None
    best_epoch: int | None = None
    best_weights: dict[str, Any] | None = None
    stopped = False
    resumed_from: int | None = None
    saved: Path | None = None
    if resume:
        if checkpoint_dir is None:
            raise SlimkitError("resume needs a checkpoint folder", "pass checkpoint_dir (--checkpoint-dir)")
        state = load_checkpoint(checkpoint_dir)
        saved = Path(checkpoint_dir) / CHECKPOINT_NAME
        check_compatible(state, module, extra, config, n, saved)
        _restore(module, extra, state["weights"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise SlimkitError(f"checkpoint {saved} optimizes other parameters than this run",
                               "resume with the same params, or use a new checkpoint folder") from exc
        history, step, done, stopped = list(state["history"]), state["step"], state["epoch"], state["stopped"]
        best_score, best_epoch, best_weights = state["best_score"], state["best_epoch"], state["best_weights"]
        resumed_from = done

    def result(diverged: bool = False) -> TrainResult:
        return TrainResult(history, step, best_epoch, best_score, stopped, resumed_from, diverged)

    good, good_epoch = _snapshot(module, extra), done

    def diverge(where: str, what: str) -> None:
        _restore(module, extra, good)
        kept = f"the weights from the end of epoch {good_epoch}" if good_epoch else "the initial weights"
        ckpt = f"; last good checkpoint: {saved}" if saved else ""
        raise TrainingDiverged(f"training diverged at {where}: {what}; kept {kept}{ckpt}", result(diverged=True))

    try:
        with torch_threads(threads), _bar(show_bar, total, step) as advance:
            for epoch in range(done, config.epochs):
                if stopped or step >= total:
                    break
                order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
                torch.manual_seed(config.seed + epoch)  # dropout etc.: same draws whether resumed or not
                module.train()
                sums: dict[str, float] = {}
                count, lr = 0, 0.0
                for start in range(0, n, bs):
                    if step >= total:
                        break
                    idx = order[start:start + bs]
                    batch = TrainBatch({k: v[idx].to(device) for k, v in feed.items()},
                                       None if labels is None else labels[idx].to(device), idx)
                    lr = learning_rate(config, step, total)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    parts = _components(loss_fn(module, batch))
                    values = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in parts.items()}
                    if not math.isfinite(values["loss"]):
                        diverge(f"step {step + 1} (epoch {epoch + 1})", f"the loss is {values['loss']}")
                    parts["loss"].backward()
                    if before_step is not None:
                        before_step(module)
                    if config.grad_clip is not None:
                        nn.utils.clip_grad_norm_(trained, config.grad_clip)
                    optimizer.step()
                    step += 1
                    if after_step is not None:
                        after_step(module, step)
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                    advance()
                if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                    diverge(f"the end of epoch {epoch + 1}", "a weight became NaN/Inf")
                row: dict[str, Any] = {"epoch": epoch + 1, "steps": step, "lr": lr,
                                       **{k: s / max(count, 1) for k, s in sums.items()}}
                good, good_epoch = _snapshot(module, extra), epoch + 1
                if evaluate is not None:
                    metrics = _evaluate(module, evaluate)
                    row.update({f"eval_{k}" if k in row else k: v for k, v in metrics.items()})
                    score = metrics[_score_key(metrics, score_key)]
                    if math.isfinite(score) and (best_score is None or score > best_score):
                        best_score, best_epoch, best_weights = score, epoch + 1, good
                    elif config.patience and epoch + 1 - (best_epoch or 0) >= config.patience:
                        stopped = True
                history.append(row)
                if progress is not None:
                    progress(_line(row, config.epochs))
                if checkpoint_dir is not None:
                    saved = save_checkpoint(Path(checkpoint_dir), {
                        "config_hash": config_hash(config), "config": config.model_dump(mode="json"),
                        "num_samples": n, "epoch": epoch + 1, "step": step, "history": history,
                        "stopped": stopped, "best_score": best_score, "best_epoch": best_epoch,
                        "weights": good, "best_weights": best_weights, "optimizer": optimizer.state_dict(),
                        "schedule": {"kind": config.schedule, "step": step, "total": total},
                    })
    finally:
        module.eval()
    if best_weights is not None:
        _restore(module, extra, best_weights)
    return result()


def _snapshot(module: nn.Module, extra: list[nn.Parameter]) -> dict[str, Any]:
    """A CPU copy of the module's state and of the optimized tensors outside it."""
    return {"model": {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()},
            "extra": [p.detach().to("cpu", copy=True) for p in extra]}


def _restore(module: nn.Module, extra: list[nn.Parameter], weights: dict[str, Any]) -> None:
    module.load_state_dict(weights["model"])
    with torch.no_grad():
        for p, value in zip(extra, weights["extra"], strict=True):
            p.copy_(value)


def _components(out: Any) -> dict[str, Any]:
    parts = {"loss": out} if isinstance(out, torch.Tensor) else dict(out) if isinstance(out, Mapping) else {}
    loss = parts.get("loss")
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise SlimkitError(f"loss_fn returned {type(out).__name__}, not a scalar loss",
                           "return a scalar tensor, or a dict with a scalar tensor under 'loss'")
    return parts


def _evaluate(module: nn.Module, evaluate: Callable[[nn.Module], dict[str, float]]) -> dict[str, float]:
    module.eval()
    with torch.inference_mode():
        return {str(k): float(v) for k, v in evaluate(module).items()}


def _score_key(metrics: dict[str, float], score_key: str | None) -> str:
    key = score_key or ("score" if "score" in metrics or len(metrics) != 1 else next(iter(metrics)))
    if key not in metrics:
        raise SlimkitError(f"evaluate returned no '{key}' metric (it returned {sorted(metrics)})",
                           "pass score_key= naming the metric to maximize, or return a 'score'")
    return key


def _line(row: dict[str, Any], epochs: int) -> str:
    rest = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "steps", "lr"))
    return f"epoch {row['epoch']}/{epochs} {rest} lr {row['lr']:.3g} step {row['steps']}"


@contextmanager
def _bar(show: bool, total: int, done: int) -> Iterator[Callable[[], None]]:
    if not show:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("training", total=total, completed=done)
        yield lambda: bar.advance(task)
