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


def deit_soft_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """DeiT's soft distillation (Mini-DeiT's KD): τ² · KL summed over batch and classes, divided by
    their number (batch · classes), so `kl` divided by the number of classes."""
    t = temperature
    return t * t * F.kl_div((student.float() / t).log_softmax(-1), (teacher.float() / t).log_softmax(-1),
                            reduction="sum", log_target=True) / student.numel()


def hard_label_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy against the teacher's top class (DeiT's hard distillation; τ is not used)."""
    return F.cross_entropy(student.float(), teacher.argmax(-1))


DISTILL_LOSSES: dict[str, DistillLoss] = {"kl": kl_loss, "soft": soft_target_loss, "deit_soft": deit_soft_loss,
                                          "hard": hard_label_loss}


def distill_loss(name: str) -> DistillLoss:
    """The loss registered as `name`, or a one-line error naming the ones there are."""
    if name not in DISTILL_LOSSES:
        raise ConfigError(f"config key 'distill.loss' = {name!r} is not available; "
                          f"choose one of {sorted(DISTILL_LOSSES)}")
    return DISTILL_LOSSES[name]


QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _relations(x: torch.Tensor, y: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, heads, N, N) scaled dot products X Yᵀ / sqrt(C / heads) of the channels split into `heads` groups."""
    b, n, c = x.shape
    xs = x.float().reshape(b, n, heads, c // heads).transpose(1, 2)
    ys = y.float().reshape(b, n, heads, c // heads).transpose(1, 2)
    return xs @ ys.transpose(-2, -1) / (c / heads) ** 0.5


def attention_relation_loss(student: list[QKV], teacher: list[QKV], heads: int = 1) -> torch.Tensor:
    """Mini-Swin's self-attention relation loss (MiniLMv2 style): for each layer pair and each (i, j) in
    {Q, K, V}², the soft cross-entropy of the student's relation rows against the teacher's, averaged over
    the 9 pairs and the layers. Relations are N x N, so the two widths may differ."""
    total = student[0][0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher, strict=True):
        for i in range(3):
            for j in range(3):
                target = _relations(t[i], t[j], heads).softmax(-1)
                total = total + soft_cross_entropy(_relations(s[i], s[j], heads), target)
    return total / (9 * len(student))


def hidden_relation_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], scale: float = 49.0) -> torch.Tensor:
    """Mini-Swin's hidden relation loss: `scale` · mean squared difference of the token-token cosine
    similarities of the block outputs (B, L, C), averaged over the layer pairs (the original's scale is
    its window area, 49)."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher, strict=True):
        s, t = F.normalize(s.float(), dim=-1), F.normalize(t.float(), dim=-1)
        total = total + scale * ((s @ s.transpose(-1, -2) - t @ t.transpose(-1, -2)) ** 2).mean()
    return total / len(student)
