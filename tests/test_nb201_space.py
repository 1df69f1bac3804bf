import random

import pytest

from cream.errors import ArchError, ConfigError
from cream.spaces import get_space
from cream.spaces.base import Space
from cream.spaces.nb201 import (
    NUM_ARCHS,
    OPS,
    NB201Space,
    arch_to_index,
    arch_to_str,
    index_to_arch,
    str_to_arch,
)

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def test_index_and_string_round_trip_for_every_cell():
    seen = set()
    for i in range(NUM_ARCHS):
        arch = index_to_arch(i)
        text = arch_to_str(arch)
        assert arch_to_index(arch) == i and str_to_arch(text) == arch
        seen.add(text)
    assert len(seen) == NUM_ARCHS


def test_every_table_row_maps_to_its_index(nb201_table):
    import csv

    with open(nb201_table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == NUM_ARCHS
    for i, row in enumerate(rows):
        assert int(row["index"]) == i
        assert arch_to_index(str_to_arch(row["arch_str"])) == i
        assert arch_to_str(index_to_arch(i)) == row["arch_str"]


def test_known_cells():
    assert arch_to_str(index_to_arch(6111)) == BEST
    assert index_to_arch(1651) == {"ops": ["none"] * 6}


def test_validate_messages():
    space = NB201Space()
    assert isinstance(space, Space)
    assert space.validate(BEST) == str_to_arch(BEST)
    with pytest.raises(ArchError, match=r"ops\[2\]' = 'conv_5x5' is not allowed"):
        space.validate({"ops": ["none", "none", "conv_5x5", "none", "none", "none"]})
    with pytest.raises(ArchError, match="must be a list of 6"):
        space.validate({"ops": ["none"] * 5})
    with pytest.raises(ArchError, match="unknown keys"):
        space.validate({"ops": ["none"] * 6, "depth": 3})
    with pytest.raises(ArchError, match="malformed"):
        space.validate("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|")
    with pytest.raises(ArchError, match="out of range"):
        index_to_arch(NUM_ARCHS)


def test_sample_mutate_crossover_are_valid():
    space, rng = NB201Space(), random.Random(0)
    for _ in range(300):
        a, b = space.sample(rng), space.sample(rng)
        assert space.validate(a) == a
        m = space.mutate(a, rng)
        assert space.validate(m) == m
        assert sum(x != y for x, y in zip(a["ops"], m["ops"], strict=True)) == 1
        c = space.crossover(a, b, rng)
        assert space.validate(c) == c
        assert all(op in (x, y) for op, x, y in zip(c["ops"], a["ops"], b["ops"], strict=True))
    assert {op for _ in range(200) for op in space.sample(rng)["ops"]} == set(OPS)


def test_cost_of_known_cells():
    space = NB201Space()
    # Extremes of the CIFAR-10 networks, published as 0.073M-1.53M params and 7.8M-220M FLOPs (MACs).
    assert space.cost({"ops": ["nor_conv_3x3"] * 6}) == {"params": 1_531_546, "macs": 220_119_680}
    assert space.cost({"ops": ["none"] * 6}) == {"params": 73_306, "macs": 7_783_040}
    assert space.cost({"ops": ["avg_pool_3x3", "skip_connect"] * 3}) == space.cost({"ops": ["none"] * 6})
    # Best CIFAR-10 cell, index 6111: published 1.073 M params, 153.27 M FLOPs.
    assert space.cost(index_to_arch(6111)) == {"params": 1_073_466, "macs": 153_272_960}
    c100 = NB201Space(num_classes=100).cost(index_to_arch(6111))
    assert c100["params"] - 1_073_466 == 90 * 65 and c100["macs"] - 153_272_960 == 90 * 64


def test_registry():
    assert isinstance(get_space("nb201"), NB201Space)
    space = get_space({"family": "nb201", "num_classes": 120, "input_size": 16})
    assert (space.num_classes, space.input_size) == (120, 16)
    with pytest.raises(ConfigError, match="unknown for family 'nb201'"):
        get_space({"family": "nb201", "width": 3})
    with pytest.raises(ConfigError, match="input_size = 30 is not allowed; use a positive multiple of 4"):
        NB201Space(input_size=30)
