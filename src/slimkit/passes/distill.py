"""Knowledge distillation: train a student to match the teacher (the original model by default).

The student is the model the pipeline carries (recovery after pruning, factorization or clustering) or a
user's model (`student: package.module:factory`). Loss curves (hard and soft) go into the report.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field

from slimkit.config import Alpha, Temperature, searchable
from slimkit.errors import SlimkitError
from slimkit.models.base import ModelKind, TorchModel, WorkingModel
from slimkit.passes.base import Context, Pass, PassConfig, PassResult, register
from slimkit.passes.recovery import teacher_for, train_student
from slimkit.train import TrainConfig


class DistillConfig(PassConfig):
    student: str | None = None
    teacher: Literal["original", "input"] = "original"
    alpha: Alpha = None  # None: 0.5 with labels on a classifier, else 0 (teacher only)
    temperature: Temperature = Field(4.0, json_schema_extra=searchable(choices=[2.0, 4.0, 8.0]))
    train: TrainConfig = TrainConfig(epochs=10, lr=1e-3)


@register
class Distill(Pass):
    name = "distill"
    accepts = frozenset({ModelKind.TORCH, ModelKind.ONNX})
    returns = ModelKind.TORCH
    Config = DistillConfig
    description = "knowledge distillation into the model (or a given student) from the original"
    search_stage = "recover"  # the searched chain's recovery after structured pruning
    search_trains = True
    search_config = {"train": {"epochs": 5, "lr": 1e-3}}

    def data_use(self) -> frozenset[str]:
        return frozenset({"train"})

    def check_input(self, kind: ModelKind) -> None:
        if kind != ModelKind.TORCH and not self.config.student:
            raise SlimkitError(f"distill: the model is {kind}, and only a PyTorch model can be trained as "
                               "the student", "give a PyTorch student with student: package.module:factory")

    def run(self, model: WorkingModel, ctx: Context) -> PassResult:
        cfg = self.config
        self.check_input(model.kind)
        teacher = teacher_for(model, ctx, cfg.teacher)
        if cfg.student:
            student = _load_student(cfg.student, model)
        else:
            assert isinstance(model, TorchModel)
            student = model.with_module(copy.deepcopy(model.module))
        student.task = student.task or model.task
        params_student = sum(p.numel() for p in student.module.parameters())
        stats = train_student(student.module, like=student, teacher=teacher, ctx=ctx, train_config=cfg.train,
                              pass_name=self.name, alpha=cfg.alpha, temperature=cfg.temperature)
        student.module.eval()
        return PassResult(student, {**stats, "student": cfg.student or "the input model",
                                    "teacher": teacher.source or cfg.teacher, "student_params": params_student})


def _load_student(ref: str, like: WorkingModel) -> TorchModel:
    from slimkit.formats import load

    student = load(ref, task=like.task)
    if not isinstance(student, TorchModel):
        raise SlimkitError(f"distill: student '{ref}' is not a PyTorch model", "give package.module:factory")
    teacher_inputs = sorted(s.name for s in getattr(like, "input_specs", []) or [])
    student_inputs = sorted(s.name for s in student.input_specs)
    if teacher_inputs and student_inputs != teacher_inputs:
        raise SlimkitError(f"distill: the student takes inputs {student_inputs} but the teacher takes {teacher_inputs}",
                           "make the student's forward() take the same input names")
    student.carry_over(like)
    return student
