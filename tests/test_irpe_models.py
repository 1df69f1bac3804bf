"""DeiT + iRPE models registered with timm: published params and MACs (spec §4.4), timm's attention plus iRPE."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers.attention import Attention

import cream  # noqa: F401  (registers the models)
from cream.cost.measure import count_params, measure_macs
from cream.models.irpe_deit import VARIANTS
from cream.nn.irpe import IRPEAttention, IRPEConfig

# name suffix → (published params in M, published MACs in M)
PUBLISHED = {
    "deit_tiny_patch16_224_ctx_product_50_shared_k": (5.76, 1284),
    "deit_small_patch16_224_ctx_product_50_shared_k": (22.09, 4659),
    "deit_small_patch16_224_ctx_product_50_shared_qk": (22.13, 4706),
    "deit_small_patch16_224_ctx_product_50_shared_qkv": (22.17, 4885),
    "deit_base_patch16_224_ctx_product_50_shared_k": (86.61, 17684),
    "deit_base_patch16_224_ctx_product_50_shared_qkv": (86.68, 18137),
}


def _meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, weight_init="skip", **kwargs)


def _cost(name: str, depth: int) -> tuple[float, float]:
    """(params, MACs) in millions of the 12-block model, from 1- and 2-block ones (the blocks are identical)."""
    one, two = _meta(name, depth=1), _meta(name, depth=2)
    (p1, m1), (p2, m2) = [(count_params(m), measure_macs(m, (3, 224, 224))) for m in (one, two)]
    blk = one.blocks[0].attn
    macs = m1 + (depth - 1) * (m2 - m1)
    if "v" in blk.irpe.cfg.on:
        # The original's value term gathers an (L, L, head_dim) table and multiplies by it (L²·d per head);
        # ours bins the attention by bucket (L·buckets·d): add the difference to compare with its count.
        L, d, nb = 197, blk.head_dim, blk.irpe.cfg.table_buckets
        macs += depth * blk.num_heads * (L * L * d - L * nb * d)
    return (p1 + (depth - 1) * (p2 - p1)) / 1e6, macs / 1e6


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_params_and_macs(name):
    params, macs = _cost(name, 12)
    assert abs(params - PUBLISHED[name][0]) <= 1e-3 * PUBLISHED[name][0], params
    assert abs(macs - PUBLISHED[name][1]) <= 0.01 * PUBLISHED[name][1], macs


def test_full_depth_model():
    model = _meta("deit_tiny_patch16_224_ctx_product_50_shared_k")
    assert count_params(model) / 1e6 == pytest.approx(_cost("deit_tiny_patch16_224_ctx_product_50_shared_k", 12)[0])


def test_variant_bucket_counts_match_names():
    """The number in each name counts the buckets used at 14x14 (spec §4.2)."""
    for name in VARIANTS:
        rpe = _meta(name, depth=1).blocks[0].attn.irpe
        used = sum(len(part.unique()) for part in rpe.ids(14, 14, 197, torch.device("cpu")))
        assert f"_{used}_shared" in name, (name, used)


def test_attention_is_timms_plus_irpe():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2, qkv_bias=True).eval()
    attn.fused_attn = False
    x = torch.randn(2, 1 + 9, 16)
    want = attn(x)
    rpe = IRPEAttention(attn, IRPEConfig(method="product", skip=1, on="qkv"), prefix=1).eval()
    torch.testing.assert_close(rpe(x), want)  # zero tables: exactly timm's attention
    with torch.no_grad():
        rpe.irpe.table_k.normal_()
    assert not torch.allclose(rpe(x), want)


def test_tiny_model_trains():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224_ctx_product_50_shared_k", img_size=64, depth=2, num_classes=3)
    assert isinstance(model.blocks[1].attn, IRPEAttention)
    assert "blocks.0.attn.irpe.table_k" in model.no_weight_decay()
    model(torch.randn(2, 3, 64, 64)).logsumexp(-1).sum().backward()
    assert model.blocks[0].attn.irpe.table_k.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="square"):
        model.blocks[0].attn(torch.randn(1, 1 + 12, 192))
