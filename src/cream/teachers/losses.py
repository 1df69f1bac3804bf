"""Distillation losses: what a student minimises given a teacher's output."""

from __future__ import annotations

import torch


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Distillation loss at temperature 1: mean over the batch of -sum_c p_c log softmax(z)_c."""
    return -(target_probs * logits.float().log_softmax(-1)).sum(-1).mean()
