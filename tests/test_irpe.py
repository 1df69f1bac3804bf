"""iRPE against a naive reference written from the spec's formulas (§4.1-§4.3) with explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

import cream
from cream.cost.measure import measure
from cream.errors import ConfigError
from cream.nn.elastic import ElasticAttention, active_state_dict
from cream.nn.irpe import IRPE, IRPEConfig, piecewise_index
from cream.nn.vit_blocks import Attention
from cream.spaces import get_space


def g(x: float, r: float) -> int:
    """Spec §4.1, one scalar at a time."""
    alpha, beta, gamma = r, 2 * r, 8 * r
    if abs(x) <= alpha:
        return round(x)
    y = round(alpha + math.log(abs(x) / alpha) / math.log(gamma / alpha) * (beta - alpha))
    return int(math.copysign(min(int(beta), y), x))


def ref_buckets(method: str, r: float, i: tuple[int, int] | None, j: tuple[int, int] | None) -> list[tuple]:
    """(part, bucket) of each part (rows, columns for cross/clip) for tokens at grid cells i, j (None: skip)."""
    if method == "clip":  # AutoFormer: pos_j - pos_i clipped to ±R at rows 1..2R+1, row 0 for the class token
        R = int(r)
        if i is None or j is None:
            return [(0, 0), (1, 0)]
        return [(0, max(-R, min(R, j[0] - i[0])) + R + 1), (1, max(-R, min(R, j[1] - i[1])) + R + 1)]
    b = int(2 * r)
    n = (2 * b + 1) ** 2 if method == "product" else 2 * b + 1
    if i is None or j is None:
        return [(p, n) for p in range(2 if method == "cross" else 1)]
    dx, dy = i[0] - j[0], i[1] - j[1]
    if method == "euc":
        return [(0, g(round(math.sqrt(dx * dx + dy * dy)), r) + b)]
    if method == "quant":
        return [(0, g(dx * dx + dy * dy, r) + b)]
    if method == "product":
        return [(0, (g(dx, r) + b) * (2 * b + 1) + g(dy, r) + b)]
    return [(0, g(dx, r) + b), (1, g(dy, r) + b)]


def cells(H: int, W: int, skip: int) -> list[tuple[int, int] | None]:
    return [None] * skip + [(y, x) for y in range(H) for x in range(W)]


def reference(cfg: IRPEConfig, tables: dict[str, torch.Tensor], q, k, attn, H: int, W: int, skip: int, scale: float):
    B, nh, L, d = q.shape
    pos = cells(H, W, skip)
    logits = torch.zeros(B, nh, L, L, dtype=torch.float64)
    out = torch.zeros(B, nh, L, d, dtype=torch.float64)
    for b in range(B):
        for h in range(nh):
            th = 0 if cfg.shared_head else h
            for i in range(L):
                for j in range(L):
                    for bk in ref_buckets(cfg.method, cfg.ratio, pos[i], pos[j]):
                        if "k" in cfg.on:
                            t = tables["k"][bk[0], th, bk[1]]
                            logits[b, h, i, j] += (q[b, h, i] * t).sum() if cfg.mode == "ctx" else t
                        if "v" in cfg.on:
                            out[b, h, i] += attn[b, h, i, j] * tables["v"][bk[0], th, bk[1]]
                    for bq in ref_buckets(cfg.method, cfg.ratio, pos[j], pos[i]):
                        if "q" in cfg.on:
                            t = tables["q"][bq[0], th, bq[1]]
                            logits[b, h, i, j] += (k[b, h, j] * scale * t).sum() if cfg.mode == "ctx" else t
    return logits, out


def test_spec_example():
    assert piecewise_index(torch.arange(-13, 14), 1.9).tolist() == [-3] * 10 + [-2, -2, -1, 0, 1, 2, 2] + [3] * 10
    assert [g(x, 1.9) for x in range(-13, 14)] == [-3] * 10 + [-2, -2, -1, 0, 1, 2, 2] + [3] * 10


CASES = [(m, mode, on, shared, skip)
         for m in ("euc", "quant", "cross", "product", "clip")
         for mode, on in (("ctx", "qkv"), ("bias", "qk"))
         for shared, skip in ((True, 1), (False, 0))]


@pytest.mark.parametrize("method,mode,on,shared,skip", CASES)
def test_matches_reference(method, mode, on, shared, skip):
    torch.manual_seed(0)
    ratio = 2 if method == "clip" else 1.3  # offsets of a 2x3 grid reach both branches of g
    cfg = IRPEConfig(method=method, mode=mode, ratio=ratio, shared_head=shared, skip=skip, on=on)
    B, nh, d, H, W = 1, 2, 3, 2, 3
    L = skip + H * W
    rpe = IRPE(cfg, d, nh).double()
    with torch.no_grad():
        for p in rpe.parameters():
            p.normal_()
    q, k = torch.randn(B, nh, L, d, dtype=torch.float64), torch.randn(B, nh, L, d, dtype=torch.float64)
    attn = torch.randn(B, nh, L, L, dtype=torch.float64).softmax(-1)
    tables = {w: getattr(rpe, f"table_{w}").unflatten(0, (cfg.parts, -1)) for w in on}  # [part, head, bucket]
    want_logits, want_out = reference(cfg, tables, q, k, attn, H, W, skip, rpe.scale)
    torch.testing.assert_close(rpe.qk_term(q, k, H, W).expand(B, nh, L, L), want_logits)
    if "v" in on:
        torch.testing.assert_close(rpe.v_term(attn, H, W), want_out)
    else:
        assert rpe.v_term(attn, H, W) is None


def test_single_terms_and_gradients():
    cfg = IRPEConfig(method="product", skip=1, on="v")
    rpe = IRPE(cfg, 4, 2)
    assert rpe.qk_term(torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4), 2, 2) is None
    assert rpe.table_v.shape == (1, 50, 4) and not rpe.table_v.any()  # zero-initialised, 7x7 + 1 buckets
    rpe = IRPE(IRPEConfig(method="cross", skip=1, on="qkv", shared_head=False), 4, 2)
    q = torch.randn(1, 2, 5, 4, requires_grad=True)
    attn, w = torch.rand(1, 2, 5, 5), torch.randn(1, 2, 5, 5)
    ((rpe.qk_term(q, q, 2, 2) * w).sum() + rpe.v_term(attn, 2, 2).sum()).backward()
    assert all(p.grad.abs().sum() > 0 for p in (rpe.table_q, rpe.table_k, rpe.table_v))
    assert q.grad.abs().sum() == 0  # zero tables: at first only the tables learn


@pytest.mark.parametrize("kwargs,key", [({"method": "rope"}, "irpe.method"), ({"mode": "contextual"}, "irpe.mode"),
                                        ({"on": "x"}, "irpe.on"), ({"on": "v", "mode": "bias"}, "irpe.on"),
                                        ({"ratio": 0}, "irpe.ratio"), ({"method": "clip", "ratio": 1.5}, "irpe.ratio")])
def test_bad_config(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        IRPEConfig(**kwargs)


def test_skip_bucket_without_skip_tokens():
    """A table with a skip bucket on a sequence without skip tokens: the parts' ids stay aligned with the table."""
    torch.manual_seed(0)
    cfg = IRPEConfig(method="cross", skip=1, on="k")
    rpe = IRPE(cfg, 3, 1).double()
    with torch.no_grad():
        rpe.table_k.normal_()
    q = torch.randn(1, 1, 1 + 6, 3, dtype=torch.float64)
    with_skip = rpe.qk_term(q, q, 2, 3)
    torch.testing.assert_close(rpe.qk_term(q[:, :, 1:], q[:, :, 1:], 2, 3), with_skip[:, :, 1:, 1:])


def test_skip_tokens_need_skip():
    rpe = IRPE(IRPEConfig(skip=0), 4, 1)
    with pytest.raises(ValueError, match="skip"):
        rpe.qk_term(torch.zeros(1, 1, 5, 4), torch.zeros(1, 1, 5, 4), 2, 2)


def test_elastic_attention_with_per_head_irpe_extracts():
    """A supernet attention with per-head iRPE tables: the active heads' slice is the static attention."""
    torch.manual_seed(0)
    cfg = IRPEConfig(method="cross", skip=1, on="qkv", shared_head=False)
    elastic = ElasticAttention(16, num_heads=4, head_dim=4, irpe=cfg)
    with torch.no_grad():
        for p in elastic.irpe.parameters():
            p.normal_()
    elastic.set_active(12, 2)
    static = Attention(12, 2, head_dim=4, irpe=cfg)
    static.load_state_dict(active_state_dict(elastic))  # strict
    assert static.irpe.table_k.shape == (2 * 2, cfg.part_buckets, 4)
    x = torch.randn(2, 1 + 9, 12)
    torch.testing.assert_close(elastic(x, (3, 3)), static(x, (3, 3)))


TINY_VIT = {"family": "vit", "embed_dims": [32, 48], "depths": [2, 3], "num_heads": [1, 2], "mlp_ratios": [3.0, 4.0],
            "img_size": 32, "patch_size": 8, "num_classes": 10, "head_dim": 8}


@pytest.mark.parametrize("irpe", [{"method": "product", "on": "qkv", "shared_head": False},
                                  {"method": "quant", "mode": "bias", "on": "qk", "ratio": 2}])
def test_vit_space_with_irpe(irpe):
    """A ViT space with `irpe`: the supernet's path equals its extracted model, and the space's cost is measured."""
    space = get_space({**TINY_VIT, "irpe": irpe})
    assert get_space(space.to_config()) == space
    torch.manual_seed(0)
    net = cream.supernet(space).eval()
    tables = [p for n, p in net.named_parameters() if ".irpe.table_" in n]
    assert len(tables) == 3 * len(irpe["on"]) and not any(t.any() for t in tables)  # zero, as iRPE's
    with torch.no_grad():
        for t in tables:
            t.normal_()
    arch = {"embed_dim": 32, "depth": 2, "num_heads": [1, 2], "mlp_ratio": [3.0, 4.0]}
    model = net.extract(arch).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x, arch), atol=1e-5, rtol=0)
    assert space.cost(arch) == measure(model, (3, 32, 32))


def test_vit_space_irpe_bad_keys():
    with pytest.raises(ConfigError, match="space.irpe has unknown keys"):
        get_space({**TINY_VIT, "irpe": {"methd": "product"}})
    with pytest.raises(ConfigError, match="irpe.on"):
        get_space({**TINY_VIT, "irpe": {"on": "kx"}})
