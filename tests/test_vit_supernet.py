"""AutoFormer supernet, elastic layers and the standalone model, on tiny spaces."""

from __future__ import annotations

import random

import pytest
import timm
import torch

import cream
from cream.cost import count_params, measure_macs
from cream.models.autoformer import AutoFormer
from cream.nn.elastic import ElasticQKV
from cream.nn.irpe import IRPE, bucket_ids
from cream.nn.relpos import attend, autoformer_irpe
from cream.spaces import get_space
from cream.spaces.vit import ViTSpace, published_archs
from cream.supernets.vit import ViTSupernet

TINY = {"family": "vit", "embed_dims": [32, 48], "depths": [2, 3], "num_heads": [1, 2],
        "mlp_ratios": [3.0, 4.0], "img_size": 32, "patch_size": 8, "num_classes": 10, "head_dim": 8}




def tiny_space(**overrides) -> ViTSpace:
    return get_space({**TINY, **overrides})


def supernet(**overrides) -> ViTSupernet:
    torch.manual_seed(0)
    return cream.supernet(tiny_space(**overrides))


@pytest.mark.parametrize("overrides", [{}, {"legacy_qkv_bias": True}, {"rel_pos": False},
                                       {"super_embed_dim": 56, "max_relative_position": 2}])
def test_extract_equals_supernet_and_analytic_cost(overrides):
    net = supernet(**overrides)
    assert isinstance(net, ViTSupernet) and net.space.num_archs() == 2 * (4**2 + 4**3)
    rng = random.Random(0)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(6):
        arch = net.space.sample(rng)
        model = net.extract(arch).eval()
        net.eval().set_arch(arch)
        with torch.no_grad():
            assert torch.allclose(model(x), net(x), atol=1e-5, rtol=0)
        cost = net.space.cost(arch)
        assert cost["params"] == count_params(model)
        assert cost["macs"] == measure_macs(model, (3, 32, 32))


def test_extract_keeps_the_supernet_arch_and_is_independent():
    net = supernet()
    rng = random.Random(1)
    a, b = net.space.sample(rng), net.space.sample(rng)
    net.set_arch(a)
    model = net.extract(b)
    assert net.arch == a
    with torch.no_grad():
        model.head.weight.add_(1.0)
    assert not torch.equal(model.head.weight, net.head.weight[:, : b["embed_dim"]])


def test_first_layers_only_and_gradients_reach_only_the_slices():
    net = supernet().train()
    arch = {"embed_dim": 32, "depth": 2, "num_heads": [1, 2], "mlp_ratio": [3.0, 4.0]}
    net.set_arch(arch)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in net.blocks[2].parameters())
    qkv = net.blocks[0].attn.qkv  # default layout: blocks [Q; K; V] of 16 rows (2 heads × 8)
    rows = qkv.weight.grad.abs().sum(1).view(3, 16)
    assert (rows[:, :8] > 0).all() and (rows[:, 8:] == 0).all()
    assert (qkv.weight.grad[:, 32:] == 0).all() and (qkv.weight.grad[:, :32].abs().sum(0) > 0).all()
    fc1 = net.blocks[0].mlp.fc1.weight.grad  # f = int(32 · 3.0) = 96 of 192 rows
    assert (fc1[:96, :32].abs().sum(1) > 0).all() and (fc1[96:] == 0).all()


@pytest.mark.parametrize("legacy", [False, True])
def test_supernet_gradients_are_the_extracted_models_gradients(legacy):
    """Training a path trains exactly the extracted model's weights: the sliced gradients match,
    for the whole supernet (no slicing at all) as for a smaller path."""
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 4, 7])
    small = {"embed_dim": 32, "depth": 2, "num_heads": [2, 1], "mlp_ratio": [3.0, 4.0]}
    for arch in (tiny_space().largest(), small):
        net = supernet(legacy_qkv_bias=legacy).train()
        model = net.extract(arch)
        net.set_arch(arch)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads = supernet(legacy_qkv_bias=legacy)  # a supernet holding the gradients as weights
        grads.load_state_dict({k: torch.zeros_like(p) if p.grad is None else p.grad for k, p in net.named_parameters()})
        sliced = grads.extract(arch).state_dict()  # sliced exactly as the weights are
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, sliced[name], atol=1e-6, rtol=1e-4, msg=name)


def test_qkv_slicing_layouts_follow_the_spec():
    E, width, d, q = 6, 4, 5, 2
    w = torch.arange(3 * width * E, dtype=torch.float32).view(3 * width, E)
    b = torch.arange(3 * width, dtype=torch.float32)
    for legacy in (False, True):
        layer = ElasticQKV(E, width, legacy=legacy)
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        layer.set_active(d, q)
        p = layer.active_params()
        if legacy:  # spec §3: interleaved weight rows, contiguous bias
            rows = [0, 3, 1, 4, 2, 5]  # Q = rows 0, 3; K = 1, 4; V = 2, 5
            assert torch.equal(p["weight"], torch.cat([w[i : 3 * q : 3, :d] for i in range(3)]))
            assert torch.equal(p["bias"], b[: 3 * q])
        else:  # three blocks, first q rows of each, weight and bias alike
            rows = [0, 1, 4, 5, 8, 9]
            assert torch.equal(p["bias"], b[rows])
        assert torch.equal(p["weight"], w[rows, :d])


def naive_rel_attention(qkv, heads, hd, rel_k, rel_v, grid, R):
    """Spec §2 written out: materialise R_K, R_V (N, N, hd) from the clipped 2-D offsets."""
    H, W = grid
    N = H * W + 1
    pos = [(None, None)] + [(r, c) for r in range(H) for c in range(W)]
    iv = torch.zeros(N, N, dtype=torch.long)
    ih = torch.zeros(N, N, dtype=torch.long)
    for i in range(1, N):
        for j in range(1, N):
            iv[i, j] = max(-R, min(R, pos[j][0] - pos[i][0])) + R + 1
            ih[i, j] = max(-R, min(R, pos[j][1] - pos[i][1])) + R + 1
    RK, RV = rel_k[0][iv] + rel_k[1][ih], rel_v[0][iv] + rel_v[1][ih]
    B = qkv.shape[0]
    q, k, v = qkv.view(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-2, -1) + torch.einsum("bhid,ijd->bhij", q, RK)) * hd**-0.5
    a = logits.softmax(-1)
    out = a @ v + torch.einsum("bhij,ijd->bhid", a, RV)
    return out.transpose(1, 2).reshape(B, N, heads * hd)


def test_relative_position_attention_matches_the_spec_formula():
    torch.manual_seed(0)
    grid, R, heads, hd = (3, 5), 2, 2, 4  # non-square grid, clipping active (|Δcol| up to 4 > R)
    N = grid[0] * grid[1] + 1
    qkv = torch.randn(2, N, 3 * heads * hd, dtype=torch.float64)
    rel_k = torch.randn(2, 2 * R + 2, hd, dtype=torch.float64)
    rel_v = torch.randn(2, 2 * R + 2, hd, dtype=torch.float64)
    irpe = IRPE(autoformer_irpe(R), hd, heads).double()
    assert irpe.table_k.shape == irpe.table_v.shape == rel_k.shape  # AutoFormer's [v, h] tables
    with torch.no_grad():
        irpe.table_k.copy_(rel_k), irpe.table_v.copy_(rel_v)
    out = attend(qkv, heads, hd, irpe, grid)
    assert torch.allclose(out, naive_rel_attention(qkv, heads, hd, rel_k, rel_v, grid, R), atol=1e-12)
    index = bucket_ids("clip", float(R), grid, 1, 2 * R + 2, qkv.device)
    assert index is bucket_ids("clip", float(R), grid, 1, 2 * R + 2, qkv.device)  # cached per grid
    assert index[0, 0].eq(0).all() and index[1, :, 0].eq(2 * R + 2).all()
    assert index[0, 1:, 1:].min() == 1 and index[0, 1:, 1:].max() == 2 * R + 1


def test_dropout_and_drop_path_rates():
    net = cream.supernet(tiny_space())
    net = ViTSupernet(net.space, drop_rate=0.3, attn_drop_rate=0.6, drop_path_rate=0.2)
    arch = {"embed_dim": 32, "depth": 2, "num_heads": [1, 2], "mlp_ratio": [3.0, 4.0]}
    net.set_arch(arch)
    assert net.blocks[1].mlp.drop == pytest.approx(0.3 * 32 / 48)  # calc_dropout: p·d/E
    assert net.blocks[1].attn_drop == pytest.approx(0.6 * 32 / 48)
    assert [b.drop_path.drop_prob for b in net.blocks[1:]] == pytest.approx([0.1, 0.2])
    model = net.extract(arch)
    assert model.blocks[1].drop_path.drop_prob == pytest.approx(0.1)  # linspace over the super depth
    assert model.blocks[1].mlp.drop.p == pytest.approx(0.2)


def test_token_pool_and_timm_face():
    net = ViTSupernet(tiny_space(), global_pool="token").eval()
    arch = net.space.smallest()
    model = net.extract(arch).eval()
    net.set_arch(arch)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-5, rtol=0)
        feats = model.forward_features(x)
        assert feats.shape == (1, 17, 32)
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
    model.reset_classifier(3)
    assert model(x).shape == (1, 3) and model.get_classifier().out_features == 3
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)


def test_autoformer_tiny_from_timm():
    model = timm.create_model("autoformer_tiny")
    assert isinstance(model, AutoFormer)
    arch = published_archs()["tiny"]
    cost = get_space("autoformer-tiny-ext").cost(arch)
    assert count_params(model) == cost["params"] == 5_867_944  # README: 5.8M; 5,768,104 without rel-pos
    assert measure_macs(model, (3, 224, 224)) == cost["macs"]
    assert [len(b.mlp.fc1.weight) for b in model.blocks] == [int(192 * r) for r in arch["mlp_ratio"]]
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert timm.create_model("autoformer_tiny", num_classes=10).head.out_features == 10


def test_inference_weights_follow_arch_and_parameter_changes():
    """No-grad forwards keep contiguous active weights; a new arch, an optimizer step,
    `load_state_dict` or a dtype round trip must not leave them stale."""
    net = supernet().eval()
    rng = random.Random(2)
    a = net.space.sample(rng)
    b = {**net.space.sample(rng), "embed_dim": 32}  # narrower than the super width: weight copies
    x = torch.randn(2, 3, 32, 32)

    def check():
        with torch.inference_mode():
            y = net(x)
        with torch.no_grad():
            expected = net.extract(net.arch).eval()(x)
            assert torch.equal(net(x), y)  # extract's set_arch dropped the weights: kept anew for the next change
        assert torch.allclose(y, expected, atol=1e-5, rtol=0)

    net.set_arch(a)
    check()
    net.set_arch(b)
    check()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(x).sum().backward()
    opt.step()
    check()
    torch.manual_seed(1)
    net.load_state_dict(cream.supernet(net.space).state_dict())
    check()
    net.half().float()  # new storage (maybe at a freed address) with rounded values
    check()


def test_checkpoints_from_before_irpe_load():
    """AutoFormer's tables moved from `attn.rel_pos_{k,v}` to `attn.irpe.table_{k,v}` (same shapes, same order)."""
    net = supernet().eval()
    arch = net.space.smallest()
    legacy = {k.replace("irpe.table_", "rel_pos_"): v for k, v in net.state_dict().items()}
    assert any(k.endswith("attn.rel_pos_k") for k in legacy)
    torch.manual_seed(1)
    fresh = cream.supernet(net.space).eval()
    fresh.load_state_dict(legacy)  # strict
    model = net.extract(arch).eval()
    legacy_model = {k.replace("irpe.table_", "rel_pos_"): v for k, v in model.state_dict().items()}
    model.load_state_dict(legacy_model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x, arch), net(x, arch))
        assert torch.allclose(model(x), net(x, arch), atol=1e-5, rtol=0)
