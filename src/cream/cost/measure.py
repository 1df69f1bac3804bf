"""Measured costs of a built model.

Multiply-adds are counted with `torch.utils.flop_counter.FlopCounterMode`, which counts a
multiply-add as 2 FLOPs for matmuls and convolutions; we report MACs = FLOPs / 2. Only
matmul-like ops (linear, conv, bmm, attention) count: normalisation, activations, pooling and
additions are left out, which is the convention of most published multiply-add figures.

`FlopCounterMode` knows only some of the kernels behind `F.scaled_dot_product_attention`; the
ones it lacks (above all the CPU flash kernel the dispatcher picks on most CPUs) would count
the attention products as zero, so the count would depend on the machine. `flop_counter()`
adds them, so every kernel gives the same count.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _sdpa_forward_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# Scaled-dot-product kernels (inputs laid out (batch, heads, tokens, dim)) that torch's table
# lacks; a name this torch does not have is skipped.
_SDPA_KERNELS = {
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa_forward_flop,
    "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward_flop,
    "_scaled_dot_product_fused_attention_overrideable": _sdpa_forward_flop,
    "_scaled_dot_product_fused_attention_overrideable_backward": _sdpa_backward_flop,
    "_scaled_dot_product_attention_math_for_mps": _sdpa_forward_flop,
}
_SDPA_FLOPS = {getattr(torch.ops.aten, n): f for n, f in _SDPA_KERNELS.items() if hasattr(torch.ops.aten, n)}


def flop_counter() -> FlopCounterMode:
    """A quiet `FlopCounterMode` that counts every scaled-dot-product attention kernel."""
    return FlopCounterMode(display=False, custom_mapping=_SDPA_FLOPS)


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
        with flop_counter() as counter:
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
