"""The training step of CLIP distillation: a student learns a frozen teacher's affinities (spec §5.1).

Batches are (images, tokens). With no teacher the step is plain CLIP training (the hard contrastive loss),
which is how a teacher, or a from-scratch baseline, is trained.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cream.clip.loss import MAX_LOG_SCALE, AffinityLoss, clip_contrastive
from cream.train.strategy import Strategy


class FrozenClip:
    """A teacher CLIP: L2-normalised (image, text) features and its logit scale, never with gradients."""

    sees_images = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        image, text, scale = self.model(images, tokens)
        return image, text, scale

    def to(self, device: torch.device) -> FrozenClip:
        self.model.to(device)
        return self


class ClipDistill(Strategy):
    """Loss = `AffinityLoss` of the student against `teacher`, or the hard CLIP loss without a teacher."""

    def __init__(self, teacher: FrozenClip | None, loss: AffinityLoss) -> None:
        self.teacher, self.affinity = teacher, loss

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        if self.teacher is not None:
            self.teacher = self.teacher.to(engine.device)

    def loss(self, model: nn.Module, images: Tensor, tokens: Tensor, step: int) -> Tensor:
        image, text, scale = model(images, tokens)  # features L2-normalised, scale = exp(logit_scale)
        fixed = self.affinity.logit_scale
        if self.teacher is None:
            return clip_contrastive(image, text, fixed or scale)
        t_image, t_text, t_scale = self.teacher(images, tokens)
        return self.affinity((image, text), (t_image, t_text), scale, t_scale)

    def after_step(self, step: int, loss: float | None) -> None:
        if not self.affinity.logit_scale:  # the learned scale stays in [0, ln 100], as in CLIP
            with torch.no_grad():
                self.engine.model.logit_scale.clamp_(0, MAX_LOG_SCALE)

    def eval_archs(self) -> list[tuple[str, Any]]:
        return []  # a CLIP has no classifier: the workflow scores it zero-shot at the end
