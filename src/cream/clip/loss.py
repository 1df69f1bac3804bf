"""Affinity mimicking (TinyCLIP, spec §5.1): the student copies the teacher's image-text affinities.

Each rank scores its own rows (its images, its texts) against the columns of every rank (all texts,
all images of the global batch). The columns come from `torch.distributed.nn.functional.all_gather`,
whose backward sends each rank's column gradients back to the rank that owns the features, so a
gathered batch trains exactly as one process holding the whole batch would.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cream.errors import ConfigError

#: the learned logit scale is clamped to [0, ln 100] after every step, as in CLIP.
MAX_LOG_SCALE = math.log(100.0)


def gather_columns(x: Tensor) -> Tensor:
    """The rows of `x` of every rank, in rank order, with gradients flowing back through the gather."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # newer torch marks it deprecated in favour of a private API; it still works
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), 0)


def affinities(image: Tensor, text: Tensor, scale: Tensor | float) -> tuple[Tensor, Tensor]:
    """(image-to-text, text-to-image) logits: this rank's rows against the global batch's columns."""
    return scale * image @ gather_columns(text).T, scale * text @ gather_columns(image).T


def soft_ce(logits: Tensor, target_logits: Tensor) -> Tensor:
    """Cross-entropy of softmax(logits) against softmax(target_logits), averaged over rows."""
    return -(target_logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()


def affinity_mimicking(student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor],
                       student_scale: Tensor | float, teacher_scale: Tensor | float) -> Tensor:
    """(L_I2T + L_T2I) / 2 of L2-normalised (image, text) features of student and teacher."""
    s_i2t, s_t2i = affinities(*(f.float() for f in student), student_scale)
    with torch.no_grad():
        t_i2t, t_t2i = affinities(*(f.float() for f in teacher), teacher_scale)
    return (soft_ce(s_i2t, t_i2t) + soft_ce(s_t2i, t_t2i)) / 2


def clip_contrastive(image: Tensor, text: Tensor, scale: Tensor | float) -> Tensor:
    """The hard CLIP loss: each row's own pair is its class among the global batch's columns."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    i2t, t2i = affinities(image.float(), text.float(), scale)
    labels = torch.arange(image.shape[0], device=image.device) + rank * image.shape[0]
    return (F.cross_entropy(i2t, labels) + F.cross_entropy(t2i, labels)) / 2


@dataclass(frozen=True)
class AffinityLoss:
    """w · (α · affinity mimicking + (1 − α) · hard CLIP loss) (the hard term only where α < 1).

    `logit_scale` > 0 fixes both scales (the paper uses 50); 0 uses each model's own exp(logit_scale),
    the student's learned and clamped to [0, ln 100] by the strategy."""

    logit_scale: float = 50.0
    weight: float = 1.0
    alpha: float = 1.0

    def __post_init__(self) -> None:
        for key, value, ok, allowed in (("logit_scale", self.logit_scale, self.logit_scale >= 0, ">= 0"),
                                        ("weight", self.weight, self.weight >= 0, ">= 0"),
                                        ("alpha", self.alpha, 0 <= self.alpha <= 1, "in [0, 1]")):
            if not ok:
                raise ConfigError(f"config key 'clip.loss.{key}' = {value!r} is not allowed; use a number {allowed}")

    def __call__(self, student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor],
                 student_scale: Tensor, teacher_scale: Tensor) -> Tensor:
        """`*_scale` are the models' own exp(logit_scale), used where `logit_scale` is 0."""
        s_scale = self.logit_scale or student_scale
        t_scale = self.logit_scale or teacher_scale
        loss = self.alpha * affinity_mimicking(student, teacher, s_scale, t_scale)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * clip_contrastive(*student, s_scale)
        return self.weight * loss
