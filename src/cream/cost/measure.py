"""Measured costs of a built model.

Multiply-adds are counted with `torch.utils.flop_counter.FlopCounterMode`, which counts a
multiply-add as 2 FLOPs for matmuls and convolutions; we report MACs = FLOPs / 2. Only
matmul-like ops (linear, conv, bmm, attention) count: normalisation, activations, pooling and
additions are left out, which is the convention of most published multiply-add figures.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared tensor counted once: `parameters()` yields it once)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def measure_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-adds of one forward pass on a single image of `input_size` (C, H, W)."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_size, device=_device_of(model))
        with FlopCounterMode(display=False) as counter:
            model(x)
        return int(counter.get_total_flops()) // 2
    finally:
        model.train(was_training)


def measure(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, int]:
    """`{"params": int, "macs": int}` of a built model."""
    return {"params": count_params(model), "macs": measure_macs(model, input_size)}


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
