"""MobileNet-style spaces: Cream's FLOPs rules (spec §3, §4), validation, operators, costs."""

from __future__ import annotations

import random

import pytest
import timm
import torch
from timm.layers import SelectAdaptivePool2d
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn

import cream.models  # noqa: F401  (registers the published models)
from cream.cost.measure import measure
from cream.errors import ArchError, ConfigError
from cream.models.cream_mbv3 import PUBLISHED, published
from cream.models.mobilenet import build_child
from cream.spaces import get_space
from cream.spaces.mobilenet import (
    CONVENTIONS,
    CREAM_OPS,
    LayerGeom,
    arch_from_cream_encoding,
    cream_flops_table,
    cream_space,
    make_divisible,
    op_cost,
    parse_op,
    search_for_layer,
)
from cream.spaces.mobilenet.cost import fixed_macs, fixed_params, uses_relu

CIFAR = "configs/spos/cifar-8layer.yaml"



# spec §4.4: MFLOPs at 224, (first layer / each later layer), rows = op 0..5, columns = stages 1..5
TABLE_44 = [
    [(21.828704, 18.820752), (11.808656, 11.86712), (8.198, 10.99632), (12.006112, 15.61632),
     (11.307456, 15.292416)],
    [(32.669328, 28.16048), (17.68624, 17.780848), (12.292848, 16.5172), (18.028752, 23.46096),
     (17.007072, 23.1504)],
    [(25.039968, 23.637648), (13.01288, 13.87416), (8.69976, 11.99984), (13.009632, 16.820544),
     (11.608512, 15.894528)],
    [(37.486224, 35.385824), (19.492576, 20.791408), (13.045488, 18.02248), (19.534032, 25.267296),
     (17.458656, 24.053568)],
    [(29.856864, 30.862992), (14.819216, 16.88472), (9.4524, 13.50512), (14.514912, 18.62688),
     (12.060096, 16.797696)],
    [(44.711568, 46.22384), (22.20208, 25.307248), (14.174448, 20.2804), (21.791952, 27.9768),
     (18.136032, 25.40832)],
]

# spec §3 test vectors: [FMIN, FMAX] -> (sta_num, resolution) or None
SEARCH_VECTORS = [
    ((0, 600), ([4, 4, 4, 4, 4], 224)), ((0, 400), ([2, 2, 4, 4, 3], 224)),
    ((0, 300), ([1, 2, 3, 3, 3], 224)), ((0, 200), ([1, 1, 3, 2, 1], 224)),
    ((0, 100), ([1, 1, 1, 1, 1], 224)), ((0, 65), ([1, 1, 1, 1, 1], 192)),
    ((0, 50), ([1, 1, 1, 1, 1], 160)), ((0, 40), ([1, 1, 1, 1, 1], 160)),
    ((0, 23), ([1, 1, 1, 1, 1], 128)), ((0, 22), ([1, 1, 2, 1, 1], 96)),
    ((0, 20), ([1, 1, 1, 1, 1], 96)), ((0, 10), ([1, 1, 1, 1, 1], 96)),
    ((0, 9), ([1, 1, 3, 2, 1], 64)), ((0, 7), ([1, 1, 3, 1, 1], 64)),
    ((0, 3), ([1, 1, 1, 1, 1], 64)), ((0, 1), None),
    ((200, 600), ([4, 4, 4, 4, 4], 224)), ((500, 600), ([4, 4, 4, 4, 4], 224)),
    ((300, 400), ([2, 2, 4, 4, 3], 224)), ((600, 700), None),
]

# spec §3: smallest integer FMAX (FMIN 0) at which each depth appears at 224
FIRST_FMAX = {
    66: [1, 1, 1, 1, 1], 142: [1, 1, 2, 1, 1], 162: [1, 1, 3, 1, 1], 190: [1, 1, 3, 2, 1],
    218: [1, 1, 3, 3, 1], 243: [1, 1, 3, 3, 2], 269: [1, 1, 3, 3, 3], 294: [1, 2, 3, 3, 3],
    340: [2, 2, 3, 3, 3], 361: [2, 2, 4, 3, 3], 389: [2, 2, 4, 4, 3], 414: [2, 2, 4, 4, 4],
    439: [2, 3, 4, 4, 4], 465: [2, 4, 4, 4, 4], 511: [3, 4, 4, 4, 4], 557: [4, 4, 4, 4, 4],
}


def test_make_divisible_spec_checks():
    assert [make_divisible(v) for v in (16 * 4, 24 * 6, 144 * 0.25, 4, 60, 120)] == [64, 144, 40, 8, 64, 120]


def test_op_by_layer_table_reproduces_all_60_values():
    first, later = cream_flops_table()
    for op in range(6):
        for stage in range(5):
            want_first, want_later = TABLE_44[op][stage]
            assert round(first[stage][op] * 1e6) == round(want_first * 1e6), (op, stage)
            assert round(later[stage][op] * 1e6) == round(want_later * 1e6), (op, stage)


def test_ptflops_component_values():
    ds = parse_op("ds_k3_se")
    assert op_cost(ds, LayerGeom(0, 0, 16, 16, 1, 112, 112), 0.25, "ptflops")[1] == 6_021_408
    cn = parse_op("cn_k1")
    assert op_cost(cn, LayerGeom(6, 0, 192, 320, 1, 7, 7), 0.25, "ptflops")[1] == 3_041_920
    space = cream_space(layers=[1] * 5, input_size=224)
    arch = {"ops": [[o[0] for o in st.ops] for st in space.config.stages]}
    ops = arch["ops"]
    blocks = sum(op_cost(parse_op(ops[g.stage][g.index]), g, 0.25, "ptflops")[1] for g in space.geometry)
    fixed_search = space.cost(arch, "ptflops-search")["macs"] - blocks
    assert fixed_search == 5_419_008 + 15_680 + 410_880  # conv_stem + global pool + conv_head
    full = space.cost(arch, "ptflops")["macs"] - blocks
    assert full - fixed_search == 2 * 16 * 112 * 112 + 1280 * 1000  # stem BN + classifier


@pytest.mark.parametrize("rng_range,expected", SEARCH_VECTORS)
def test_search_for_layer_vectors(rng_range, expected):
    assert search_for_layer(*cream_flops_table(), *rng_range) == expected


def test_search_for_layer_depth_thresholds():
    table = cream_flops_table()
    for fmax, depth in FIRST_FMAX.items():
        assert search_for_layer(*table, 0, fmax) == (depth, 224)
        assert search_for_layer(*table, 0, fmax - 1) != (depth, 224)
    for fmax, size in ((56, 192), (40, 160), (23, 128), (10, 96), (3, 64)):
        assert search_for_layer(*table, 0, fmax)[1] == size
        below = search_for_layer(*table, 0, fmax - 1)
        assert below is None or below[1] < size
    assert search_for_layer(*table, 0, 2) is None


def test_cream_preset_uses_the_flops_range():
    space = get_space("cream", flops_min=0, flops_max=200)
    assert [len(st.ops) for st in space.config.stages] == [1, 1, 1, 3, 2, 1, 1]
    assert space.config.input_size == 224
    assert get_space({"preset": "cream", "flops_max": 9}).config.input_size == 64
    assert space.num_archs() == 6**8
    with pytest.raises(ConfigError, match=r"\[600, 700\]"):
        get_space("cream", flops_min=600, flops_max=700)


def test_cream_encoding_and_original_example():
    arch = arch_from_cream_encoding([[0], [3], [3, 3], [3, 1, 3], [3, 3, 3, 3], [3, 3, 3], [0]])
    assert arch["ops"][3] == ["ir_k5_e6_se", "ir_k3_e6_se", "ir_k5_e6_se"]
    assert arch["ops"][0] == ["ds_k3_se"] and arch["ops"][6] == ["cn_k1"]
    skipping = arch_from_cream_encoding([[0], [0, -1], [0], [0], [0], [0], [0]])
    assert skipping["ops"][1] == ["ir_k3_e4_se", "skip"]
    with pytest.raises(ArchError, match=r"encoding\[2\]\[0\]"):
        arch_from_cream_encoding([[0], [0], [7], [0], [0], [0], [0]])


def test_arch_validation_errors_name_field_value_and_choices():
    space = cream_space(layers=[1, 2, 1, 1, 1])
    good = {"ops": [[o[0] for o in st.ops] for st in space.config.stages]}
    assert space.validate(good) == good
    bad = {"ops": [list(s) for s in good["ops"]]}
    bad["ops"][2][1] = "ir_k9_e4_se"
    with pytest.raises(ArchError, match=r"'ops\[2\]\[1\]' = 'ir_k9_e4_se' is not allowed.*ir_k3_e4_se"):
        space.validate(bad)
    with pytest.raises(ArchError, match=r"'ops\[2\]' must be a list of 2"):
        space.validate({"ops": good["ops"][:2] + [["ir_k3_e4_se"]] + good["ops"][3:]})
    with pytest.raises(ArchError, match="list of 7 stage lists"):
        space.validate({"ops": good["ops"][:3]})
    with pytest.raises(ArchError, match="unknown keys"):
        space.validate({**good, "depth": 3})
    with pytest.raises(ConfigError, match="convention 'thop' is unknown"):
        space.cost(good, convention="thop")


def test_config_errors():
    with pytest.raises(ConfigError, match=r"space.head_style = 'v2' is not allowed"):
        get_space({"family": "mobilenet", "head": {"style": "v2"}, "stages": [{"channels": 16, "ops": ["ir_k3_e3"]}]})
    with pytest.raises(ConfigError, match=r"space.expand_round = 'up' is not allowed"):
        get_space({"family": "mobilenet", "expand_round": "up", "stages": [{"channels": 16, "ops": ["ir_k3_e3"]}]})
    with pytest.raises(ConfigError, match=r"SE op 'ir_k3_e3_se'.*'mobilenetv2' head"):
        get_space({"family": "mobilenet", "head": {"style": "mobilenetv2"},
                   "stages": [{"channels": 16, "ops": ["ir_k3_e3_se"]}]})
    with pytest.raises(ConfigError, match="op name 'mb_k3' is not valid"):
        get_space({"family": "mobilenet", "stages": [{"channels": 16, "ops": ["mb_k3"]}]})
    with pytest.raises(ConfigError, match=r"space.act = 'gelu' is not allowed"):
        get_space({"family": "mobilenet", "act": "gelu", "stages": [{"channels": 16, "ops": ["ir_k3_e3"]}]})
    with pytest.raises(ConfigError, match=r"unknown keys \['widths'\]"):
        get_space({"family": "mobilenet", "widths": 3, "stages": [{"channels": 16, "ops": ["ir_k3_e3"]}]})
    with pytest.raises(ConfigError, match="cn_k1_se"):
        parse_op("cn_k1_se")


def test_cifar_config_space():
    space = get_space(CIFAR)
    searchable = [c for st in space.config.stages for c in st.ops if len(c) > 1]
    assert len(searchable) == 8
    assert all(set(c) == {"skip", "ir_k3_e3", "ir_k5_e6"} for c in searchable)
    assert space.config.input_size == 32 and space.config.stem_stride == 1
    assert space.num_archs() == 3**8


@pytest.mark.parametrize("spec", [CIFAR, "cream"])
def test_sample_mutate_crossover_are_valid(spec):
    space = get_space(spec)
    rng = random.Random(0)
    for _ in range(30):
        a, b = space.sample(rng), space.sample(rng)
        assert space.validate(a) == a
        m = space.mutate(a, rng)
        assert space.validate(m) == m and m != a
        for s, st in enumerate(space.config.stages):  # fixed layers never change
            for i, cands in enumerate(st.ops):
                if len(cands) == 1:
                    assert m["ops"][s][i] == cands[0]
        c = space.crossover(a, b, rng)
        assert space.validate(c) == c
        assert all(x in (y, z) for cs, ys, zs in zip(c["ops"], a["ops"], b["ops"], strict=True)
                   for x, y, z in zip(cs, ys, zs, strict=True))
    samples = {tuple(map(tuple, space.sample(rng)["ops"])) for _ in range(50)}
    assert len(samples) > 40


def _ptflops_count(model: nn.Module, size: int) -> int:
    """An independent ptflops-rule counter (spec §4.2): module hooks on a built model."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        x = inp[0]
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
            total += out.numel() if m.bias is not None else 0
        elif isinstance(m, nn.BatchNorm2d):
            total += 2 * x.numel()
        elif isinstance(m, (nn.ReLU, nn.ReLU6)):
            total += out.numel()
        elif isinstance(m, (SqueezeExcite, SelectAdaptivePool2d)):
            total += x.numel()
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("spec", [CIFAR, {"preset": "cream", "layers": [2, 1, 2, 1, 2], "input_size": 64,
                                          "num_classes": 10, "allow_skip": True}])
def test_analytic_costs_equal_measured(spec):
    space = get_space(spec)
    rng = random.Random(1)
    size = space.config.input_size
    for _ in range(3):
        arch = space.sample(rng)
        with torch.device("meta"):  # shapes only: counting needs no arithmetic
            model = build_child(space, arch)
        assert space.cost(arch) == measure(model, (3, size, size))
        assert space.cost(arch, convention="ptflops")["macs"] == _ptflops_count(model, size)


@pytest.mark.parametrize("spec", [CIFAR, {"preset": "cream", "allow_skip": True}])
def test_cached_cost_equals_costing_every_layer(spec):
    """`cost` reads a per-space table; it must equal re-costing each layer of the arch."""
    space = get_space(spec)
    cfg, rng = space.config, random.Random(2)
    for _ in range(300):
        arch = space.sample(rng)
        for convention in CONVENTIONS:
            params, macs = fixed_params(cfg), fixed_macs(cfg, space.geometry, convention)
            for g in space.geometry:
                p, m = op_cost(parse_op(arch["ops"][g.stage][g.index]), g, cfg.se_ratio, convention, uses_relu(cfg),
                               cfg.expand_round)
                params, macs = params + p, macs + m
            assert space.cost(arch, convention) == {"params": params, "macs": macs}
    assert space == get_space(spec)  # the table takes no part in equality


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_models(name):
    encoding, size, mflops, _ = PUBLISHED[name]
    with torch.device("meta"):
        model = timm.create_model(name)
    space, arch = published(name)
    assert model.pretrained_cfg["input_size"] == (3, size, size)
    assert space.cost(arch) == measure(model, (3, size, size))
    ptflops = space.cost(arch, convention="ptflops")["macs"]
    assert ptflops == _ptflops_count(model, size)
    assert abs(ptflops / 1e6 - mflops) < 1.0  # spec §4.5: the names are reproduced to about 1 M
    # the single-layer-stage quirk (spec §6.2): a lone stage-1 layer is k3e4, a lone stage-4 layer k3e6
    assert (model.blocks[1][0].conv_dw.kernel_size[0], model.blocks[1][0].conv_pw.out_channels) == (
        (3, 64) if len(encoding[1]) == 1 else (5, 96))


def test_cream_287_channel_table():
    """Spec §6.4: (Cin, mid, Cout, SE r, stride) of every layer of Cream_287."""
    with torch.device("meta"):
        model = timm.create_model("cream_287")
    rows = [(1, 16, 64, 24, 16, 2, 3), (2, 24, 144, 40, 40, 2, 5), (2, 40, 240, 40, 64, 1, 5),
            (3, 40, 240, 80, 64, 2, 5), (3, 80, 480, 80, 120, 1, 3), (3, 80, 480, 80, 120, 1, 5),
            (4, 80, 480, 96, 120, 1, 5)] + [(4, 96, 576, 96, 144, 1, 5)] * 3 + [
            (5, 96, 576, 192, 144, 2, 5)] + [(5, 192, 1152, 192, 288, 1, 5)] * 2
    blocks = [b for stage in list(model.blocks)[1:6] for b in stage]
    got = [(b.conv_pw.in_channels, b.conv_pw.out_channels, b.conv_pwl.out_channels,
            b.se.conv_reduce.out_channels, b.conv_dw.stride[0], b.conv_dw.kernel_size[0]) for b in blocks]
    assert got == [r[1:] for r in rows]
    assert [b.has_skip for b in blocks] == [r[5] == 1 and r[1] == r[3] for r in rows]
    assert measure(model, (3, 224, 224))["macs"] < 287e6  # plain conv/linear count is ~4 % lower (§4.5)
    assert CREAM_OPS.index("ir_k5_e6_se") == 3
