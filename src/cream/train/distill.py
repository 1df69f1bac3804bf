"""Distillation of a standalone model from any teacher (a frozen model, a supernet path, a logit store)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cream.errors import ConfigError
from cream.teachers.base import Teacher
from cream.teachers.losses import distill_loss
from cream.train.strategy import Strategy


class Distill(Strategy):
    """Loss = (1 - alpha) · the engine's label loss + alpha · `loss`(student, teacher, temperature).

    The label loss is the engine's criterion, so mixup/cutmix soft targets and label smoothing keep
    working; an online teacher sees the same (mixed) images as the student. A store holds the
    teacher's outputs for unmixed images, so it cannot be combined with mixup or cutmix.
    """

    def __init__(self, teacher: Teacher, loss: str = "kl", alpha: float = 0.5, temperature: float = 1.0) -> None:
        self.teacher, self.distill_loss = teacher, distill_loss(loss)
        self.alpha, self.temperature = alpha, temperature

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        if engine.mixup is not None and not self.teacher.sees_images:
            raise ConfigError("config key 'distill.teacher.kind' = 'store' cannot be used with data.mixup or "
                              "data.cutmix: the store holds the teacher's outputs for unmixed images")
        self.teacher = self.teacher.to(engine.device)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        out = model(images)
        teacher = self.teacher(images, self.engine.batch_keys)
        kd = self.distill_loss(out, teacher, self.temperature)
        return (1 - self.alpha) * self.engine.criterion(out, targets) + self.alpha * kd
