"""Distillation losses: what a student minimises given a teacher's logits.

Every loss in `DISTILL_LOSSES` is `fn(student_logits, teacher_logits, temperature) -> scalar`;
add one there to make it available as `distill.loss`. Teacher logits may be a store's
reconstructed log-probabilities: only their softmax matters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cream.errors import ConfigError

DistillLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Distillation loss at temperature 1: mean over the batch of -sum_c p_c log softmax(z)_c."""
    return -(target_probs * logits.float().log_softmax(-1)).sum(-1).mean()


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """τ² · cross-entropy of softmax(s/τ) against softmax(t/τ) (Hinton et al.; the τ² keeps the
    gradient's scale independent of τ). Differs from `kl_loss` by the teacher's entropy only."""
    t = temperature
    return t * t * soft_cross_entropy(student.float() / t, (teacher.float() / t).softmax(-1))


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """τ² · KL(softmax(t/τ) ‖ softmax(s/τ)), averaged over the batch: 0 when the student matches."""
    t = temperature
    return t * t * F.kl_div((student.float() / t).log_softmax(-1), (teacher.float() / t).log_softmax(-1),
                            reduction="batchmean", log_target=True)


def hard_label_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy against the teacher's top class (DeiT's hard distillation; τ is not used)."""
    return F.cross_entropy(student.float(), teacher.argmax(-1))


DISTILL_LOSSES: dict[str, DistillLoss] = {"kl": kl_loss, "soft": soft_target_loss, "hard": hard_label_loss}


def distill_loss(name: str) -> DistillLoss:
    """The loss registered as `name`, or a one-line error naming the ones there are."""
    if name not in DISTILL_LOSSES:
        raise ConfigError(f"config key 'distill.loss' = {name!r} is not available; "
                          f"choose one of {sorted(DISTILL_LOSSES)}")
    return DISTILL_LOSSES[name]
