"""Distillation of a standalone model from any teacher (a frozen model, a supernet path, a logit store)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cream.errors import ConfigError
from cream.teachers.base import LayerTeacher, Teacher
from cream.teachers.intermediates import record
from cream.teachers.losses import attention_relation_loss, distill_loss, hidden_relation_loss
from cream.train.strategy import Strategy


class Distill(Strategy):
    """Loss = (1 - alpha) · the engine's label loss + alpha · `loss`(student, teacher, temperature).

    The label loss is the engine's criterion, so mixup/cutmix soft targets and label smoothing keep
    working; an online teacher sees the same (mixed) images as the student. A store holds the
    teacher's outputs for unmixed images, so it cannot be combined with mixup or cutmix.

    MiniViT's relation losses add `attn_weight` · attention relations and `hidden_weight` · hidden
    relations between `student_layers` and the paired `teacher_layers`; they need a teacher that
    shows its layers (`LayerTeacher`: a frozen network).
    """

    def __init__(self, teacher: Teacher, loss: str = "kl", alpha: float = 0.5, temperature: float = 1.0, *,
                 attn_weight: float = 0.0, hidden_weight: float = 0.0, relation_heads: int = 1,
                 student_layers: Sequence[int] = (), teacher_layers: Sequence[int] = ()) -> None:
        self.teacher, self.distill_loss = teacher, distill_loss(loss)
        self.alpha, self.temperature = alpha, temperature
        self.attn_weight, self.hidden_weight, self.relation_heads = attn_weight, hidden_weight, relation_heads
        self.student_layers, self.teacher_layers = list(student_layers), list(teacher_layers)

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        if engine.mixup is not None and not self.teacher.sees_images:
            raise ConfigError("config key 'distill.teacher.kind' = 'store' cannot be used with data.mixup or "
                              "data.cutmix: the store holds the teacher's outputs for unmixed images")
        if (self.attn_weight or self.hidden_weight) and not isinstance(self.teacher, LayerTeacher):
            raise ConfigError("config keys 'distill.attn_weight'/'distill.hidden_weight' need a teacher network "
                              "that shows its layers (distill.teacher.kind timm)")
        self.teacher = self.teacher.to(engine.device)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        if not (self.attn_weight or self.hidden_weight):
            out = model(images)
            return self._logit_loss(out, self.teacher(images, self.engine.batch_keys), targets)
        with record(model, self.student_layers) as s:
            out = model(images)
        teacher, t = self.teacher.with_layers(images, self.teacher_layers)  # type: ignore[attr-defined]
        loss = self._logit_loss(out, teacher, targets)
        if self.attn_weight:
            loss = loss + self.attn_weight * attention_relation_loss(s.qkv, t.qkv, self.relation_heads)
        if self.hidden_weight:
            loss = loss + self.hidden_weight * hidden_relation_loss(s.hidden, t.hidden)
        return loss

    def _logit_loss(self, out: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        kd = self.distill_loss(out, teacher, self.temperature)
        return (1 - self.alpha) * self.engine.criterion(out, targets) + self.alpha * kd
