"""The DARTS cell space: top-2 derivation with `none` excluded on known weights, genotype checks, and the
CIFAR network of a genotype (params at the paper's settings, auxiliary head, drop path, timm)."""

from __future__ import annotations

import pytest
import timm
import torch

from cream.errors import ConfigError
from cream.models.darts import DartsNetCIFAR, count_params
from cream.spaces.darts import DARTS_V2, EDGES, OPS, derive, derive_cell, validate_genotype
from cream.supernets.darts import MixedDartsSupernet


def _weights(entries: dict[tuple[int, int], dict[str, float]]) -> torch.Tensor:
    w = torch.full((len(EDGES), len(OPS)), 0.01)
    for edge, ops in entries.items():
        for op, v in ops.items():
            w[EDGES.index(edge), OPS.index(op)] = v
    return w


def test_derive_keeps_the_two_strongest_incoming_edges_without_none():
    w = _weights({
        (0, 2): {"sep_conv_3x3": 0.3}, (1, 2): {"none": 0.9, "max_pool_3x3": 0.2},  # node 2 has two edges only
        (0, 3): {"none": 0.95, "skip_connect": 0.05}, (1, 3): {"dil_conv_5x5": 0.4}, (2, 3): {"avg_pool_3x3": 0.5},
        (0, 4): {"sep_conv_5x5": 0.6}, (1, 4): {"none": 0.99}, (2, 4): {"skip_connect": 0.2},
        (3, 4): {"dil_conv_3x3": 0.7},
        (0, 5): {"max_pool_3x3": 0.3}, (1, 5): {"max_pool_3x3": 0.3}, (2, 5): {"none": 1.0},
        (3, 5): {"sep_conv_3x3": 0.1}, (4, 5): {"skip_connect": 0.8},
    })
    assert derive_cell(w) == [
        ["sep_conv_3x3", 0], ["max_pool_3x3", 1],  # `none` (0.9) neither wins the edge nor ranks it
        ["avg_pool_3x3", 2], ["dil_conv_5x5", 1],  # (0, 3) is strong only in `none`: dropped; stronger first
        ["dil_conv_3x3", 3], ["sep_conv_5x5", 0],
        ["skip_connect", 4], ["max_pool_3x3", 0],  # a tie (0.3, 0.3): the earlier edge
    ]
    genotype = derive(w, w.flip(-1))
    assert validate_genotype(genotype) == genotype and genotype["normal"] == derive_cell(w)
    with pytest.raises(ValueError, match="edge weights must be 14 x 8"):
        derive_cell(torch.zeros(6, 5))


def test_genotypes_are_checked():
    assert validate_genotype(DARTS_V2) == DARTS_V2
    bad = {"normal": [list(p) for p in DARTS_V2["normal"]], "reduce": DARTS_V2["reduce"]}
    bad["normal"][2] = ["none", 0]
    with pytest.raises(ConfigError, match=r"DARTS arch 'normal'\[2\] = \['none', 0\] is not allowed"):
        validate_genotype(bad)
    bad["normal"][2] = ["sep_conv_3x3", 1]
    with pytest.raises(ConfigError, match="node 3 takes input 1 twice"):
        validate_genotype(bad)


def test_darts_v2_cifar_network_has_the_published_size_and_an_auxiliary_head():
    net = timm.create_model("darts_cifar", arch=DARTS_V2, channels=36, layers=20)
    assert isinstance(net, DartsNetCIFAR) and net.auxiliary_head is None
    assert count_params(net) == 3_349_342  # DARTS reports 3.3M for C=36, 20 cells, without the auxiliary head
    with_aux = DartsNetCIFAR(DARTS_V2, auxiliary=True)
    assert count_params(with_aux) == 3_349_342 < count_params(with_aux, auxiliary=True)
    tiny = DartsNetCIFAR(DARTS_V2, channels=4, layers=5, auxiliary=True, drop_path_rate=0.5)
    assert [len(c.ops) for c in tiny.cells] == [8] * 5
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(0)
    tiny.train()
    a = tiny(x)
    assert a.shape == (3, 10) and tiny.aux_logits.shape == (3, 10)
    torch.manual_seed(1)
    assert not torch.allclose(tiny(x), a)  # other drop-path masks
    tiny.eval()
    with torch.no_grad():
        assert torch.equal(tiny(x), tiny(x)) and tiny.aux_logits is None


def _one_hot(cell: list[list]) -> torch.Tensor:
    """α that puts all weight on the genotype's (op, input) pairs and on `none` elsewhere."""
    a = torch.full((len(EDGES), len(OPS)), float("-inf"))
    a[:, OPS.index("none")] = 0.0
    for m, (op, j) in enumerate(cell):
        e = EDGES.index((j, 2 + m // 2))
        a[e] = float("-inf")
        a[e, OPS.index(op)] = 0.0
    return a


def test_mixed_darts_supernet_one_hot_equals_the_extracted_genotype_network():
    torch.manual_seed(0)
    net = MixedDartsSupernet(channels=4, layers=3)
    x = torch.randn(2, 3, 16, 16)
    net(x).logsumexp(1).mean().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.arch_parameters())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        net.alphas_normal.copy_(_one_hot(DARTS_V2["normal"]))
        net.alphas_reduce.copy_(_one_hot(DARTS_V2["reduce"]))
    assert {k: sorted(map(tuple, v)) for k, v in net.derive().items()} == \
        {k: sorted(map(tuple, v)) for k, v in DARTS_V2.items()}
    net.eval()
    child = net.extract(DARTS_V2).eval()
    assert isinstance(child, DartsNetCIFAR) and count_params(child) < count_params(net)
    with torch.no_grad():
        assert torch.allclose(net(x), child(x), atol=1e-6)


def test_a_retrain_adds_the_weighted_auxiliary_loss():
    from cream.config import RunConfig, load_config
    from cream.data import build_splits
    from cream.train.engine import Engine

    cfg = load_config(RunConfig, None, ["data.name=digits", "data.image_size=32", "data.train_per_class=4",
                                        "data.batch_size=8", "model.aux_weight=0.4", "train.threads=1"])
    torch.manual_seed(0)
    model = DartsNetCIFAR(DARTS_V2, channels=4, layers=3, auxiliary=True)
    engine = Engine(cfg, model, build_splits(cfg.data), None)
    images, targets = next(iter(engine.train_loader))
    loss = engine.strategy.loss(engine.forward_model, images, targets, 0)
    ce = torch.nn.functional.cross_entropy
    expected = ce(model(images), targets) + 0.4 * ce(model.aux_logits, targets)
    assert torch.allclose(loss, expected) and not torch.allclose(loss, ce(model(images), targets))
