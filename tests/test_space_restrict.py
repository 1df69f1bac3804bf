"""Narrowed spaces (`Space.restrict`) and spaces written as config (`Space.to_config`), for every family."""

from __future__ import annotations

import json
import math
import random

import pytest
import yaml
from conftest import TINY_CREAM, validates

from cream.errors import ArchError, ConfigError
from cream.spaces import get_space
from cream.spaces.mobilenet import CREAM_OPS
from cream.supernets import build_supernet

VIT = {"family": "vit", "name": "vit-test", "embed_dims": [16, 24, 32], "depths": [1, 2, 3], "num_heads": [1, 2],
       "mlp_ratios": [2.0, 3.0, 4.0], "head_dim": 8, "img_size": 16, "patch_size": 4, "max_relative_position": 4,
       "num_classes": 10}
SPACES = {
    "nb201": {"preset": "nb201", "channels": 4, "cells_per_stage": 1, "input_size": 16},
    "vit": VIT,
    "mobilenet": TINY_CREAM,
}


def _narrow(space):
    """Each decision with a choice loses its last value (so the widest values go, including the super dims')."""
    return {d: values[:-1] for d, values in space.choices().items() if len(values) > 1}


def _round_trip(space):
    """The space rebuilt from its config, through JSON and through safe YAML (config.yaml)."""
    via_json = get_space(json.loads(json.dumps(space.to_config())))
    via_yaml = get_space(yaml.safe_load(yaml.safe_dump(space.to_config())))
    return via_json, via_yaml


@pytest.mark.parametrize("family", sorted(SPACES))
def test_restricted_space_stays_inside_and_keeps_the_supernet_shape(family):
    wide = get_space(SPACES[family])
    narrow = wide.restrict(_narrow(wide))
    assert narrow.family == wide.family and narrow != wide
    allowed = narrow.choices()
    assert narrow.num_archs() < wide.num_archs()
    if family != "vit":  # independent decisions: the count is the product of the choices
        assert narrow.num_archs() == math.prod(len(v) for v in allowed.values())

    rng = random.Random(0)
    archs = [narrow.sample(rng) for _ in range(100)]
    archs += [narrow.mutate(a, rng) for a in archs]
    archs += [c for a, b in zip(archs, archs[1:], strict=False) if (c := narrow.crossover(a, b, rng)) is not None]
    for arch in archs:
        assert narrow.validate(arch) == arch
        for d, taken in narrow.arch_choices(arch).items():
            assert set(taken) <= set(allowed[d]), (d, taken)

    # Some archs of the wide space are refused with the usual one-line error.
    outside = [a for a in (wide.sample(rng) for _ in range(50)) if not validates(narrow, a)]
    assert outside
    with pytest.raises(ArchError, match=r"^arch field '[^']+' = .+ is not allowed; choose one of \[.+\]$"):
        narrow.validate(outside[0])

    # The same supernet weights fit: parameter names and shapes are those of the wide space's supernet.
    shapes = {k: v.shape for k, v in build_supernet(wide).state_dict().items()}
    assert {k: v.shape for k, v in build_supernet(narrow).state_dict().items()} == shapes


@pytest.mark.parametrize("family", sorted(SPACES))
def test_to_config_round_trips_with_restrictions(family):
    wide = get_space(SPACES[family])
    narrow = wide.restrict(_narrow(wide))
    twice = narrow.restrict({d: v[:1] for d, v in narrow.choices().items() if len(v) > 1})
    for space in (wide, narrow, twice):
        for rebuilt in _round_trip(space):
            assert rebuilt == space and rebuilt.choices() == space.choices()
            assert rebuilt.num_archs() == space.num_archs()
    assert twice.num_archs() == 1
    # Equal spaces draw equal archs.
    assert [narrow.sample(random.Random(3)) for _ in range(3)] == \
        [_round_trip(narrow)[0].sample(random.Random(3)) for _ in range(3)]


def test_family_specifics():
    vit = get_space(VIT)
    small = vit.restrict({"embed_dim": [16], "depth": [1, 2], "mlp_ratio": [2.0, 3]})
    assert (small.super_embed_dim, small.super_depth, small.super_num_heads, small.super_mlp_ratio) == (32, 3, 2, 4.0)
    assert small.largest() == {"embed_dim": 16, "depth": 2, "num_heads": [2, 2], "mlp_ratio": [3.0, 3.0]}
    assert small.choices()["mlp_ratio"] == (2.0, 3.0)

    nb = get_space("nb201", edge_ops=[["nor_conv_3x3", "skip_connect"]] + [["none", "avg_pool_3x3"]] * 5)
    assert nb.choices()["ops[0]"] == ("skip_connect", "nor_conv_3x3")  # kept in the space's own order
    assert nb.validate("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|avg_pool_3x3~2|")["ops"][0] == "skip_connect"
    with pytest.raises(ArchError, match=r"arch field 'ops\[1\]' = 'nor_conv_1x1' is not allowed"):
        nb.validate("|skip_connect~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|none~2|")
    assert build_supernet(nb).arch["ops"] == ["nor_conv_3x3"] + ["none"] * 5  # a default path inside the space
    assert "edge_ops" not in get_space("nb201").to_config()

    cream = get_space("cream", layers=[2, 1, 1, 1, 1], input_size=64, num_classes=10)
    narrow = cream.restrict({"ops[1][1]": ["ir_k3_e4_se"]})
    assert narrow.to_config()["meta"] == {"flops_range": [0, 600], "layers": [2, 1, 1, 1, 1]}
    assert narrow.to_config()["allowed"][1][1] == ["ir_k3_e4_se"]
    assert get_space(narrow.to_config()) == narrow and narrow.name == "cream"
    # Op weights may still name ops the narrowed space dropped (a recipe's `probs` stays valid).
    two = cream.restrict({d: ["ir_k3_e4_se", "ir_k5_e4_se"] for d, v in cream.choices().items() if len(v) > 1})
    rng = random.Random(0)
    drawn = {op for _ in range(20) for st in two.sample(rng, probs={o: 1.0 for o in CREAM_OPS})["ops"][1:-1]
             for op in st}
    assert drawn == {"ir_k3_e4_se", "ir_k5_e4_se"}


@pytest.mark.parametrize("spec, choices, message", [
    (SPACES["nb201"], {"ops[6]": ["none"]}, r"restrict: decision 'ops\[6\]' is unknown; the space has \['ops\[0\]'"),
    (SPACES["nb201"], {"ops[0]": ["conv"]}, r"restrict: ops\[0\] = \['conv'\] allows \['conv'\], which the space "
                                            r"does not; choose a subset of \['none', "),
    (VIT, {"depth": []}, r"restrict: depth = \[\] must keep at least one of \[1, 2, 3\]"),
    (VIT, {"depth": 2}, r"restrict: depth = 2 must be a list of allowed values"),
    (TINY_CREAM, ["ops[1][0]"], r"restrict needs a mapping of decision -> allowed values, got list"),
    ({**TINY_CREAM, "allowed": [[["ds_k3_se"]]]}, None, r"space.allowed = .* must list the allowed ops of every "
                                                         r"layer, stage by stage \(\[1, 2, 2, 1\] layers\)"),
    ({**SPACES["nb201"], "edge_ops": [["none"]] * 5}, None, r"space.edge_ops = .* must be 6 lists of op names"),
    ({**SPACES["nb201"], "edge_ops": [["none", "conv"]] * 6}, None, r"space.edge_ops: ops\[0\] = \['none', 'conv'\] "
                                                                    r"allows \['conv'\]"),
    ({**VIT, "super_depth": 2}, None, r"space.super_depth = 2 must be at least the largest depth 3"),
])
def test_bad_restrictions_are_one_line_config_errors(spec, choices, message):
    with pytest.raises(ConfigError, match=message) as err:
        get_space(spec).restrict(choices)
    assert "\n" not in str(err.value)
