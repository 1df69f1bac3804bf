"""The AutoFormer ViT space: presets, validation, sampling rules and the analytic cost."""

from __future__ import annotations

import random

import pytest

from cream.errors import ArchError, ConfigError
from cream.spaces import get_space, space_names
from cream.spaces.base import Space
from cream.spaces.vit import PUBLISHED_SPACES, ViTSpace, published_archs


@pytest.fixture
def tiny() -> ViTSpace:
    return get_space({"family": "vit", "embed_dims": [32, 48], "depths": [2, 3], "num_heads": [1, 2],
                      "mlp_ratios": [3.0, 4.0], "img_size": 32, "patch_size": 8, "num_classes": 10})


def test_presets_have_the_spec_super_dims():
    assert {"autoformer-tiny", "autoformer-tiny-ext", "autoformer-small", "autoformer-base",
            "autoformer-base-8"} <= set(space_names())
    expected = {  # spec §1: E, super depth, super heads, super mlp width
        "autoformer-tiny": (256, 14, 4, 1024),
        "autoformer-small": (448, 14, 7, 1792),
        "autoformer-base": (640, 16, 10, 2560),
        "autoformer-base-8": (640, 16, 10, 2560),
    }
    for name, (E, L, H, F) in expected.items():
        s = get_space(name)
        assert isinstance(s, Space)
        assert (s.super_embed_dim, s.super_depth, s.num_heads[-1], s.super_mlp_dim) == (E, L, H, F)
        assert s.super_qkv_dim == E  # super E = super heads × 64 in all three spaces
    assert get_space("autoformer-base").num_heads == (9, 10)
    assert get_space("autoformer-base-8").num_heads == (8, 9, 10)
    assert get_space("autoformer-tiny").num_archs() == 3 * sum(4**L for L in (12, 13, 14))


def test_validate_names_field_value_and_choices(tiny):
    good = {"embed_dim": 48, "depth": 2, "num_heads": [1, 2], "mlp_ratio": [3, 4.0]}
    assert tiny.validate(good) == {"embed_dim": 48, "depth": 2, "num_heads": [1, 2], "mlp_ratio": [3.0, 4.0]}
    cases = {
        "mlp_ratio": ([3.0, 5.0], "arch field 'mlp_ratio[1]' = 5.0 is not allowed; choose one of [3.0, 4.0]"),
        "num_heads": ([1, 3], "arch field 'num_heads[1]' = 3 is not allowed; choose one of [1, 2]"),
        "embed_dim": (40, "arch field 'embed_dim' = 40 is not allowed; choose one of [32, 48]"),
        "depth": (4, "arch field 'depth' = 4 is not allowed; choose one of [2, 3]"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ArchError) as e:
            tiny.validate({**good, key: value})
        assert str(e.value) == message
    with pytest.raises(ArchError, match=r"'num_heads' = \[1\] must be a list of 2 per-layer values"):
        tiny.validate({**good, "num_heads": [1]})
    with pytest.raises(ArchError, match=r"missing keys \['depth'\]"):
        tiny.validate({k: v for k, v in good.items() if k != "depth"})


def test_published_tiny_needs_the_extended_space():
    t = published_archs()["tiny"]
    with pytest.raises(ArchError, match=r"'mlp_ratio\[2\]' = 3.0 is not allowed; choose one of \[3.5, 4.0\]"):
        get_space("autoformer-tiny").validate(t)
    assert get_space("autoformer-tiny-ext").validate(t) == t
    for size, name in PUBLISHED_SPACES.items():
        assert get_space(name).validate(published_archs()[size]) == published_archs()[size]
    assert get_space("autoformer-base-8").validate(published_archs()["base"]) == published_archs()["base"]


def spec_formula(d: int, heads: list[int], ratios: list[float], relpos: bool = True) -> int:
    """Spec §4, written out literally (224 px, patch 16, 1000 classes)."""
    total = 769 * d + 198 * d
    for h, r in zip(heads, ratios, strict=True):
        q, f = 64 * h, int(d * r)
        total += 4 * d + 3 * q * d + 3 * q + 7680 * relpos + q * d + d + 2 * d * f + f + d
    return total + 2 * d + 1000 * d + 1000


def test_published_param_counts_match_the_paper():
    published = {"tiny": 5.8, "small": 22.9, "base": 53.7}  # README figures (M)
    for size, arch in published_archs().items():
        params = get_space(PUBLISHED_SPACES[size]).cost(arch)["params"]
        assert params == spec_formula(arch["embed_dim"], arch["num_heads"], arch["mlp_ratio"])
        assert abs(params / 1e6 - published[size]) < 0.1
    assert round(get_space("autoformer-small").cost(published_archs()["small"])["params"] / 1e6, 1) == 22.9
    assert round(get_space("autoformer-base").cost(published_archs()["base"])["params"] / 1e6, 1) == 53.7
    # T: the README's 5.8M truncates the count with the rel-pos tables, the paper's 5.7M the one without
    t_params = get_space("autoformer-tiny-ext").cost(published_archs()["tiny"])["params"]
    assert int(t_params / 1e5) / 10 == 5.8
    t = published_archs()["tiny"]
    no_rel = get_space("autoformer-tiny-ext", rel_pos=False).cost(t)["params"]
    assert no_rel == spec_formula(192, t["num_heads"], t["mlp_ratio"], relpos=False)
    assert int(no_rel / 1e5) / 10 == 5.7


def test_published_macs_are_near_the_paper():
    paper = {"tiny": 1.3e9, "small": 5.1e9, "base": 11e9}  # approximate (spec §7: ±10 %)
    for size, arch in published_archs().items():
        macs = get_space(PUBLISHED_SPACES[size]).cost(arch)["macs"]
        assert abs(macs / paper[size] - 1) < 0.1


def test_sample_mutate_crossover_stay_valid(tiny):
    rng = random.Random(0)
    archs = [tiny.sample(rng) for _ in range(200)]
    assert {a["depth"] for a in archs} == {2, 3} and {a["embed_dim"] for a in archs} == {32, 48}
    for a in archs:
        assert tiny.validate(a) == a
        m = tiny.mutate(a, rng)
        assert tiny.validate(m) == m
        b = rng.choice(archs)
        child = tiny.crossover(a, b, rng)
        if a["depth"] != b["depth"]:
            assert child is None
            continue
        assert tiny.validate(child) == child
        assert child["embed_dim"] in (a["embed_dim"], b["embed_dim"])
        for key in ("num_heads", "mlp_ratio"):
            assert all(c in (x, y) for c, x, y in zip(child[key], a[key], b[key], strict=True))


def test_mutation_probabilities(tiny):
    rng = random.Random(1)
    a = {"embed_dim": 32, "depth": 2, "num_heads": [1, 1], "mlp_ratio": [3.0, 3.0]}
    frozen = get_space({"family": "vit", **_cfg(tiny), "s_prob": 0.0, "m_prob": 0.0})
    assert all(frozen.mutate(a, rng) == a for _ in range(20))
    wild = get_space({"family": "vit", **_cfg(tiny), "s_prob": 1.0, "m_prob": 0.0})
    grown = [m for m in (wild.mutate(a, rng) for _ in range(200)) if m["depth"] == 3]
    assert grown and all(m["num_heads"][:2] == [1, 1] and m["mlp_ratio"][:2] == [3.0, 3.0] for m in grown)
    layers = get_space({"family": "vit", **_cfg(tiny), "s_prob": 0.0, "m_prob": 1.0})
    changed = [layers.mutate(a, rng) for _ in range(200)]
    assert all(m["depth"] == 2 and m["embed_dim"] == 32 for m in changed)
    assert any(m["num_heads"] != [1, 1] for m in changed)
    assert any(m["mlp_ratio"] != [3.0, 3.0] for m in changed)


def _cfg(space: ViTSpace) -> dict:
    return {"embed_dims": space.embed_dims, "depths": space.depths, "num_heads": space.num_heads,
            "mlp_ratios": space.mlp_ratios, "img_size": space.img_size, "patch_size": space.patch_size}


def test_space_config_errors():
    with pytest.raises(ConfigError, match=r"space keys \['heads'\] are unknown for family 'vit'"):
        get_space({"family": "vit", "embed_dims": [32], "depths": [2], "num_heads": [1], "mlp_ratios": [4],
                   "heads": 3})
    with pytest.raises(ConfigError, match="space.depths is required"):
        get_space({"family": "vit", "embed_dims": [32], "num_heads": [1], "mlp_ratios": [4]})
    with pytest.raises(ConfigError, match="super_embed_dim = 16 must be at least the largest embed dim 32"):
        get_space({"family": "vit", "embed_dims": [32], "depths": [2], "num_heads": [1], "mlp_ratios": [4],
                   "super_embed_dim": 16})
    assert get_space("autoformer-small", num_classes=10).num_classes == 10
