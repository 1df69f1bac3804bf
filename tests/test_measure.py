"""Measured multiply-adds are the same whichever attention kernel the dispatcher picks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import cream
from cream.cost.measure import flop_counter, measure_macs

B, H, S, D = 2, 3, 10, 8
ATTENTION_MACS = 2 * B * H * S * S * D  # q @ k^T and attn @ v


class Attention(torch.nn.Module):
    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


def sdpa_kernel_names() -> list[str]:
    """Every scaled-dot-product kernel of this torch (composite ops decompose into counted ones)."""
    return sorted({n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
                   if n.startswith("aten::_scaled_dot_product")
                   and not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CompositeImplicitAutograd")})


@pytest.mark.parametrize("name", sdpa_kernel_names())
def test_every_sdpa_kernel_has_a_formula(name):
    assert getattr(torch.ops.aten, name) in flop_counter().flop_registry


@pytest.mark.parametrize("name", [n for n in sdpa_kernel_names() if not n.endswith("_backward")])
def test_every_sdpa_kernel_counts_the_same(name):
    q = torch.empty(B, H, S, D, device="meta")
    extra = (None, False) if name.endswith(("efficient_attention", "cudnn_attention")) else ()  # attn_bias, lse
    with flop_counter() as counter:
        getattr(torch.ops.aten, name)(q, q, q, *extra)
    assert counter.get_total_flops() // 2 == ATTENTION_MACS


# Backward: the math path's four products, or torch's convention for fused kernels (which
# also counts recomputing q @ k^T).
@pytest.mark.parametrize(("backend", "backward_macs"), [(SDPBackend.MATH, 2 * ATTENTION_MACS),
                                                        (SDPBackend.FLASH_ATTENTION, 5 * ATTENTION_MACS // 2)])
def test_cpu_backends_count_the_same(backend, backward_macs):
    with sdpa_kernel(backend):
        assert measure_macs(Attention(), (H, S, D)) == ATTENTION_MACS // B
        x = torch.randn(B, H, S, D, requires_grad=True)
        with flop_counter() as counter:
            Attention()(x).sum().backward()
    assert counter.get_total_flops() // 2 == ATTENTION_MACS + backward_macs


def test_vit_tiny_macs():
    assert cream.profile("vit_tiny_patch16_224")["macs"] == 1_253_683_200
