"""Knowledge-distillation losses (Hinton et al. 2015), on plain tensors.

`L = alpha * L_hard + (1 - alpha) * L_soft`, with `L_soft = T^2 * KL(softmax(t/T) || softmax(s/T))`:
the T^2 factor keeps the soft gradients' size independent of the temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_teacher || p_student) at temperature T, averaged over the batch."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                      *, alpha: float, temperature: float) -> dict[str, torch.Tensor]:
    """The combined loss and its parts; alpha = 0 needs no labels (unlabeled data)."""
    soft = soft_loss(student_logits, teacher_logits, temperature)
    if alpha > 0:
        if labels is None:
            raise ValueError("alpha > 0 needs labels")
        hard = F.cross_entropy(student_logits, labels)
    else:
        hard = torch.zeros((), dtype=soft.dtype)
    return {"loss": alpha * hard + (1.0 - alpha) * soft, "hard": hard.detach(), "soft": soft.detach()}


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, projection: torch.nn.Module | None = None,
                 *, cosine_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """MSE between (projected) student features and the teacher's, plus 1 - cosine so direction counts too.

    Sentence embeddings are compared by cosine downstream; MSE alone lets small vectors drift in angle.
    """
    if projection is not None:
        student = projection(student)
    student = student.reshape(student.shape[0], -1)
    teacher = teacher.reshape(teacher.shape[0], -1)
    mse = F.mse_loss(student, teacher)
    cos = 1.0 - F.cosine_similarity(student, teacher, dim=-1).mean()
    return {"loss": mse + cosine_weight * cos, "mse": mse.detach(), "cosine": cos.detach()}
