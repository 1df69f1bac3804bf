"""Distillation of a standalone model from any teacher (a frozen model, a supernet path, a logit store)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cream.teachers.base import Teacher
from cream.teachers.losses import distill_loss
from cream.train.strategy import Strategy


class Distill(Strategy):
    """Loss = (1 - alpha) · the engine's label loss + alpha · `loss`(student, teacher, temperature).

    The label loss is the engine's criterion, so mixup/cutmix soft targets and label smoothing keep
    working; an online teacher sees the same (mixed) images as the student, and so did the teacher
    that wrote a logit store (the replayed dataset mixes each pair as the teacher pass did).
    """

    def __init__(self, teacher: Teacher, loss: str = "kl", alpha: float = 0.5, temperature: float = 1.0) -> None:
        self.teacher, self.distill_loss = teacher, distill_loss(loss)
        self.alpha, self.temperature = alpha, temperature

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        self.teacher = self.teacher.to(engine.device)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        out = model(images)
        teacher = self.teacher(images, self.engine.batch_keys)
        kd = self.distill_loss(out, teacher, self.temperature)
        return (1 - self.alpha) * self.engine.criterion(out, targets) + self.alpha * kd
