"""Training a compressed (student) model back towards the original (teacher): shared by every pass that trains.

The loss follows the task: logit distillation `alpha * CE + (1 - alpha) * T^2 KL` for classifiers, feature
distillation (MSE + cosine on the output embeddings, with a learned projection when widths differ) for
encoders. Teacher outputs are computed once per sample on the teacher's own runtime, so an ONNX teacher
works as well as a PyTorch one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from slimkit.data_sources import Dataset, load_data
from slimkit.errors import SlimkitError
from slimkit.formats import make_runner
from slimkit.models.base import TorchModel, WorkingModel
from slimkit.passes.base import Context


def refuse_onnx_training(pass_name: str, train: Any, what: str = "") -> None:
    """Passes that take `train:` work on ONNX too, but only a PyTorch model can be fine-tuned."""
    if train is not None:
        raise SlimkitError(f"{pass_name}: an ONNX model cannot be fine-tuned",
                           f"start from the PyTorch model to fine-tune{' ' + what if what else ''}, or drop train:")


def default_alpha(alpha: float | None, task: str | None, labeled: bool) -> float:
    """Labels are used when there are any and the model classifies; otherwise pure distillation (alpha = 0)."""
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise SlimkitError(f"alpha {alpha} is outside [0, 1]", "alpha weighs the label loss: 0 = teacher only")
        return alpha
    return 0.5 if labeled and task == "classification" else 0.0


def training_sets(like: TorchModel, ctx: Context, batch_size: int, pass_name: str) -> tuple[Dataset, Dataset | None]:
    """(train, eval): train on ctx.train_data (else ctx.data); evaluate on ctx.data when both are given."""
    source = ctx.train_data if ctx.train_data is not None else ctx.data
    if source is None:
        raise SlimkitError(f"pass '{pass_name}' trains and needs data",
                           "give --train-data (or --data) with real samples, e.g. sklearn:digits:train or a .txt file")
    train = load_data(source, like, batch_size=batch_size, seq_len=ctx.seq_len, shapes=ctx.shapes)
    if train.generated or train.num_samples == 0:
        raise SlimkitError(f"pass '{pass_name}' needs real training data", "give --train-data with real samples")
    held_out = None
    if ctx.train_data is not None and ctx.data is not None:
        held_out = load_data(ctx.data, like, batch_size=64, seq_len=ctx.seq_len, shapes=ctx.shapes)
    return train, held_out


def teacher_outputs(teacher: WorkingModel, data: Dataset, threads: int) -> np.ndarray:
    """The teacher's first output for every sample, in dataset order."""
    runner = make_runner(teacher, threads)
    return np.concatenate([runner.run(batch.feed)[0] for batch in data]).astype(np.float32)


def train_student(module: Any, *, like: TorchModel, teacher: WorkingModel, ctx: Context, train_config: Any,
                  pass_name: str, alpha: float | None = None, temperature: float = 4.0,
                  before_step: Callable | None = None, after_step: Callable | None = None,
                  ready: Callable[[], bool] | None = None,
                  on_train_data: Callable[[Dataset], None] | None = None) -> dict:
    """Fine-tune `module` in place against `teacher`; returns stats with the per-epoch loss curves.

    `ready()` False marks epochs that cannot be the final model (e.g. gradual pruning not yet at its target
    sparsity): they never count as the best epoch that early stopping restores.
    """
    import torch
    from torch import nn

    from slimkit.algorithms.distill import distillation_loss, feature_loss
    from slimkit.models.torch_module import flatten_outputs
    from slimkit.train import TrainBatch, fit

    if temperature <= 0:
        raise SlimkitError(f"temperature {temperature} must be > 0", "typical values are 2 to 8")
    train, held_out = training_sets(like, ctx, train_config.batch_size, pass_name)
    if on_train_data is not None:
        on_train_data(train)  # e.g. a pruning schedule sized by the number of steps
    classify = like.task == "classification"
    alpha = default_alpha(alpha, like.task, train.has_labels)
    if alpha > 0 and not train.has_labels:
        raise SlimkitError(f"pass '{pass_name}': alpha={alpha} uses labels but the training data has none",
                           "give labeled data (labels/y in the .npz) or set alpha: 0 to learn from the teacher only")
    ctx.progress(f"{pass_name}: computing teacher outputs on {train.num_samples} samples")
    targets = torch.from_numpy(teacher_outputs(teacher, train, ctx.threads))

    def student_out(m, feed):
        return flatten_outputs(m(**feed))[0].float()

    with torch.inference_mode():
        probe = student_out(module.eval(), {k: torch.from_numpy(v[:2]) for k, v in train.batches[0].feed.items()})
    projection = None
    if probe.shape[1:] != targets.shape[1:]:
        if classify or probe.dim() != 2 or targets.dim() != 2:
            raise SlimkitError(f"pass '{pass_name}': the student outputs {list(probe.shape[1:])} per sample but the "
                               f"teacher outputs {list(targets.shape[1:])}",
                               "give a student with the same output (number of classes) as the teacher")
        projection = nn.Linear(probe.shape[1], targets.shape[1])  # trained with the student, not exported

    hidden = HiddenStates(module, teacher) if not classify else None

    def loss_fn(m, batch: TrainBatch):
        out = student_out(m, batch.feed)
        teacher_batch = targets[batch.index]
        if classify:
            return distillation_loss(out, teacher_batch, batch.labels, alpha=alpha, temperature=temperature)
        parts = feature_loss(out, teacher_batch, projection)
        if hidden is not None and hidden.pairs:
            layer_mse = hidden.loss(batch.feed)
            parts = {**parts, "loss": parts["loss"] + layer_mse, "hidden": layer_mse.detach()}
        return parts

    evaluate, eval_on = _evaluator(held_out if held_out is not None else train, teacher, classify, ctx, student_out,
                                   projection)
    before = evaluate(module)
    if ready is not None:
        measure = evaluate

        def evaluate(m) -> dict[str, float]:
            metrics = measure(m)
            return metrics if ready() else {**metrics, "score": -2.0}  # below any accuracy or cosine
    params = list(p for p in module.parameters() if p.requires_grad)
    if projection is not None:
        params += list(projection.parameters())
    checkpoint = ctx.checkpoint_dir / pass_name if ctx.checkpoint_dir else None
    try:
        result = fit(module, loss_fn, train, train_config, evaluate=evaluate, score_key="score",
                     checkpoint_dir=checkpoint, resume=ctx.resume, before_step=before_step, after_step=after_step,
                     params=params, progress=lambda line: ctx.progress(f"{pass_name}: {line}"),
                     threads=ctx.threads)
        after = evaluate(module)
    finally:
        if hidden is not None:
            hidden.close()  # the hooks sit on the caller's teacher model too: never leave them behind
    return {"alpha": alpha, "temperature": temperature, "loss": "logits" if classify else "features",
            "projection": projection is not None,
            "hidden_layers_matched": len(hidden.pairs) if hidden is not None else 0, "train_samples": train.num_samples, "evaluated_on": eval_on,
            "before": before, "after": after, "epochs_run": len(result.history), "steps": result.steps,
            "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch, "history": result.history}


class HiddenStates:
    """Layer-wise distillation for encoders: MSE between each transformer block's output in the student and the
    teacher (TinyBERT-style), over real tokens only.

    Used when the teacher is a PyTorch model whose blocks (`...encoder.layer.N`) have the student's names and
    widths, as after head / MLP-width pruning or factorization. Per-layer targets give a pruned encoder far
    more signal than its final embedding alone.
    """

    _BLOCK = re.compile(r"(^|\.)(encoder\.layer|layers?|blocks?|h)\.\d+$")

    def __init__(self, student: Any, teacher: WorkingModel) -> None:
        self.pairs: list[str] = []
        self._hooks: list = []
        self._student: dict[str, Any] = {}
        self._teacher: dict[str, Any] = {}
        if not isinstance(teacher, TorchModel) or teacher.module is student:
            return
        self.teacher = teacher.module.eval()
        student_blocks = {n: m for n, m in student.named_modules() if self._BLOCK.search(n)}
        teacher_blocks = {n: m for n, m in self.teacher.named_modules() if self._BLOCK.search(n)}
        self.pairs = sorted(set(student_blocks) & set(teacher_blocks))
        for name in self.pairs:
            self._hooks.append(student_blocks[name].register_forward_hook(self._grab(self._student, name)))
            self._hooks.append(teacher_blocks[name].register_forward_hook(self._grab(self._teacher, name)))

    @staticmethod
    def _grab(store: dict, name: str):
        def hook(_module, _args, output):
            store[name] = output[0] if isinstance(output, tuple) else output
        return hook

    def loss(self, feed: dict) -> Any:
        """Mean over matched blocks of the masked MSE; call right after the student's forward on `feed`."""
        import torch

        with torch.no_grad():
            self.teacher(**feed)
        mask = feed.get("attention_mask")
        total = 0.0
        for name in self.pairs:
            s, t = self._student[name], self._teacher[name]
            if s.shape != t.shape:
                continue
            err = (s - t).pow(2).mean(-1)
            if mask is not None and err.shape == mask.shape:
                err = (err * mask).sum() / mask.sum().clamp(min=1)
            total = total + err.mean()
        self._student.clear()
        self._teacher.clear()
        return total / max(len(self.pairs), 1)

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


def _evaluator(data: Dataset, teacher: WorkingModel, classify: bool, ctx: Context, student_out, projection):
    """Accuracy on labeled held-out data for classifiers, else mean cosine to the teacher's outputs."""
    import torch

    eval_on = "held-out data" if ctx.train_data is not None and ctx.data is not None else "the training data"
    if classify and data.has_labels:
        labels = np.concatenate([b.labels for b in data])

        def evaluate(m) -> dict[str, float]:
            m.eval()
            with torch.inference_mode():
                pred = np.concatenate([student_out(m, _torch_feed(b.feed)).argmax(-1).numpy() for b in data])
            acc = float((pred == labels).mean())
            return {"accuracy": acc, "score": acc}
        return evaluate, eval_on
    reference = torch.from_numpy(teacher_outputs(teacher, data, ctx.threads))

    def evaluate(m) -> dict[str, float]:
        m.eval()
        with torch.inference_mode():
            out = torch.cat([student_out(m, _torch_feed(b.feed)) for b in data])
            if projection is not None:
                out = projection(out)
            cos = torch.nn.functional.cosine_similarity(out.reshape(len(out), -1), reference.reshape(len(out), -1))
        return {"cosine": float(cos.mean()), "score": float(cos.mean())}
    return evaluate, eval_on


def _torch_feed(feed: dict[str, np.ndarray]) -> dict:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}


def teacher_for(model: WorkingModel, ctx: Context, which: str = "original") -> WorkingModel:
    """The original model (ctx.reference) as teacher, or the pass's input model."""
    if which == "original" and ctx.reference is not None:
        return ctx.reference
    return model
