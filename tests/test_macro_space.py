"""The CIFAR-10 macro space (issue 12 item 4): projecting skips, the MobileNetV2-style head, exact
expansion widths; analytic costs equal the built models' for all 3^8 archs."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from timm.models.efficientnet import EfficientNet
from torch import nn

import cream
from cream.config import RunConfig, load_config
from cream.cost.measure import count_params, measure, measure_macs
from cream.models import build_model
from cream.models.mobilenet import make_block
from cream.spaces import get_space
from cream.spaces.mobilenet.cost import fixed_macs, fixed_params

MACRO = "configs/spos/macro-cifar10.yaml"
OPS = ("skip", "ir_k3_e3", "ir_k5_e6")


def arch_of(code: str) -> dict:
    ops = [OPS[int(c)] for c in code]
    return {"ops": [ops[:2], ops[2:5], ops[5:]]}


def test_macro_config_is_the_issue_space():
    space = get_space(MACRO)
    cfg = space.config
    assert (cfg.stem_channels, cfg.stem_stride, cfg.act, cfg.input_size, cfg.num_classes) == (32, 1, "relu", 32, 10)
    assert [(st.channels, st.stride, len(st.ops)) for st in cfg.stages] == [(64, 2, 2), (128, 2, 3), (256, 2, 3)]
    assert all(layer == OPS for st in space.allowed for layer in st) and space.num_archs() == 3**8
    assert (cfg.head_channels, cfg.head_style, cfg.expand_round) == (1280, "mobilenetv2", "exact")
    model = build_model(space, arch_of("22212220"))
    assert isinstance(model, EfficientNet)
    biased = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None]
    assert biased == ["classifier"]
    first = model.blocks[0][0]  # layer 1's ir_k5_e6: 32 -> 192 -> 64, stride 2, no residual
    assert first.conv_pw.out_channels == 192 and first.conv_dw.stride == (2, 2) and not first.has_skip


def test_abs_recipe_holds_the_macro_space():
    cfg = load_config(RunConfig, "configs/abs/supernet-macro-cifar10.yaml")
    assert get_space(dict(cfg.space)) == get_space(MACRO) and cfg.strategy.name == "abs"


def test_issue_example_costs():
    space, arch = get_space(MACRO), arch_of("22212220")
    assert space.cost(arch) == {"params": 1_985_514, "macs": 85_164_544}
    with torch.device("meta"):
        model = build_model(space, arch)
    assert measure(model, (3, 32, 32)) == {"params": 1_985_514, "macs": 85_164_544}


def test_projecting_skip_is_conv1x1_bn_without_activation():
    space = get_space(MACRO)
    g = space.geometry[0]  # 32 -> 64, stride 2
    block = make_block(space.config, "skip", g)
    assert block.conv.kernel_size == (1, 1) and block.conv.stride == (2, 2) and block.conv.bias is None
    assert isinstance(block.bn1.act, nn.Identity) and not block.has_skip
    x = torch.randn(2, 32, 8, 8)
    block.eval()
    expected = block.bn1(nn.functional.conv2d(x, block.conv.weight, stride=2))
    assert torch.allclose(block(x), expected) and (block(x) < 0).any()  # no ReLU after the BN
    assert isinstance(make_block(space.config, "skip", space.geometry[1]), nn.Identity)


def test_all_6561_analytic_costs_equal_measured():
    """Every arch: analytic == the sum of each chosen block measured in isolation plus the measured fixed
    part; a seeded sample of whole built models checks that the parts add up."""
    space = get_space(MACRO)
    cfg = space.config
    with torch.device("meta"):
        measured = []
        for g in space.geometry:
            row = {}
            for op in OPS:
                block = make_block(cfg, op, g)
                row[op] = (count_params(block), measure_macs(block, (g.cin, g.h_in, g.h_in)))
            measured.append(row)
    fixed = (fixed_params(cfg), fixed_macs(cfg, space.geometry, "plain"))
    with torch.device("meta"):  # the fixed part: the all-skip arch minus its three projections
        bare = measure(build_model(space, arch_of("00000000")), (3, 32, 32))
    proj = [measured[i]["skip"] for i in (0, 2, 5)]
    assert fixed == (bare["params"] - sum(p for p, _ in proj), bare["macs"] - sum(m for _, m in proj))
    for code in itertools.product(range(3), repeat=8):
        arch = arch_of("".join(map(str, code)))
        parts = [measured[i][OPS[c]] for i, c in enumerate(code)]
        expected = {"params": fixed[0] + sum(p for p, _ in parts), "macs": fixed[1] + sum(m for _, m in parts)}
        assert space.cost(arch) == expected, code
    rng = random.Random(12)
    for _ in range(6):
        arch = space.sample(rng)
        with torch.device("meta"):
            assert space.cost(arch) == measure(build_model(space, arch), (3, 32, 32)), arch


def test_macro_supernet_trains_and_extracts_equal_outputs():
    torch.manual_seed(0)
    net = cream.supernet(MACRO)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    rng = random.Random(0)
    for _ in range(2):
        net.set_arch(net.space.sample(rng))
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert net.bn2.weight.grad is not None and torch.isfinite(loss)
    net.eval()
    for code in ("22212220", "00000000", "01201201"):
        arch = arch_of(code)
        child = net.extract(arch).eval()
        assert type(child) is type(build_model(net.space, arch))
        assert torch.equal(net(x, arch), child(x))


def test_exact_expansion_and_projection_in_other_spaces():
    """Widths that are not multiples of 8 expand exactly; a projecting skip with the pool-first head."""
    spec = {"family": "mobilenet", "input_size": 16, "num_classes": 5, "expand_round": "exact",
            "stem": {"channels": 12, "stride": 1}, "head": {"channels": 40},
            "stages": [{"channels": 20, "stride": 2, "layers": 2, "ops": ["skip", "ir_k3_e3_se", "ir_k5_e3"]}]}
    space = get_space(spec)
    torch.manual_seed(0)
    net = cream.supernet(spec).eval()
    x = torch.randn(2, 3, 16, 16)
    for ops in (["ir_k3_e3_se", "ir_k5_e3"], ["skip", "ir_k3_e3_se"], ["ir_k5_e3", "skip"]):
        arch = {"ops": [ops]}
        child = net.extract(arch).eval()
        assert torch.equal(net(x, arch), child(x))
        assert space.cost(arch) == measure(child, (3, 16, 16))
    widths = [b.conv_pw.out_channels for b in net.extract({"ops": [["ir_k3_e3_se", "ir_k5_e3"]]}).blocks[0]]
    assert widths == [36, 60]  # 12 * 3, 20 * 3; "divisible" would give 40 and 64


@pytest.mark.parametrize("rounding, mid", [("divisible", 40), ("exact", 36)])
def test_expand_round_changes_only_the_width(rounding, mid):
    spec = {"family": "mobilenet", "input_size": 16, "expand_round": rounding, "stem": {"channels": 12},
            "stages": [{"channels": 12, "ops": ["ir_k3_e3"]}]}
    assert build_model(get_space(spec), {"ops": [["ir_k3_e3"]]}).blocks[0][0].conv_pw.out_channels == mid
