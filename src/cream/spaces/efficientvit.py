"""The EfficientViT-MSRA search space (pure data, no torch): archs of timm's `EfficientVitMsra`.

An arch gives one value per stage for depth, embed width and heads, and one depth-wise kernel per
head for the queries of cascaded group attention (timm takes the kernels model-wide, by head):

    {"depth": [1, 2, 3], "embed_dim": [64, 128, 192], "num_heads": [4, 4, 4], "kernels": [5, 5, 5, 5]}

(this is M0). Fixed as in the original (spec §2): key dim 16, FFN ratio 2, attention window 7, a
stride-16 patch embedding and a stride-2 patch merging before every stage but the first. A
stage's heads split its width, so C_s must be a multiple of h_s (value width C_s/h_s per head):
(width, heads) is one gene per stage, and sampling draws among the valid pairs only. A kernel of
a head index no stage of the arch reaches is carried but unused (M1's fourth kernel is).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cream.errors import ArchError, ConfigError
from cream.registry import register_family, register_space
from cream.spaces.base import Arch, check_choice, check_keys, narrowed, plain, space_from_config

STAGE_DIMS = ("depth", "embed_dim", "num_heads")
DIMS = (*STAGE_DIMS, "kernels")
FIELDS = {"depth": "depths", "embed_dim": "embed_dims", "num_heads": "num_heads"}
PATCH = 16  # the patch embedding's stride (four stride-2 3x3 convs)


def se_width(channels: int) -> int:
    """The squeeze-excite reduction width of patch merging: timm's make_divisible(channels/4·4 = C, 8)."""
    return max(8, int(channels + 4) // 8 * 8)


@dataclass(frozen=True)
class EfficientVitSpace:
    """Per-stage choices of depth, width and heads, per-head kernel choices, and the supernet's shape.

    `super_*` (empty: the largest choices) fix the supernet's shape, so a space narrowed by
    `restrict` keeps the weights of the wide one: per stage the depth, width, heads and the width
    of one head's values (`super_head_dims`, default the largest C/h of a valid pair), and the
    largest query kernel (`super_kernel`).
    """

    family: ClassVar[str] = "efficientvit"
    name: str
    depths: tuple[tuple[int, ...], ...]
    embed_dims: tuple[tuple[int, ...], ...]
    num_heads: tuple[tuple[int, ...], ...]
    kernels: tuple[tuple[int, ...], ...]
    super_depths: tuple[int, ...] = ()
    super_embed_dims: tuple[int, ...] = ()
    super_num_heads: tuple[int, ...] = ()
    super_head_dims: tuple[int, ...] = ()
    super_kernel: int = 0
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    key_dim: int = 16
    window_size: int = 7
    m_prob: float = 0.2  # mutation: redraw each gene with this probability

    def __post_init__(self) -> None:
        if not isinstance(self.img_size, int) or self.img_size < PATCH or self.img_size % PATCH:
            raise ConfigError(f"space.img_size = {self.img_size!r} must be a positive multiple of {PATCH}")
        stages = None
        for dim in STAGE_DIMS:
            field = FIELDS[dim]
            per_stage = _lists(f"space.{field}", getattr(self, field), "one list of choices per stage")
            stages = len(per_stage) if stages is None else stages
            if len(per_stage) != stages:
                raise ConfigError(f"space.{field} has {len(per_stage)} stages but space.depths has {stages}")
            object.__setattr__(self, field, tuple(_ints(f"space.{field}[{s}]", v) for s, v in enumerate(per_stage)))
        kernels = tuple(_ints(f"space.kernels[{i}]", v)
                        for i, v in enumerate(_lists("space.kernels", self.kernels, "one list of choices per head")))
        bad = [k for ks in kernels for k in ks if k % 2 == 0]
        if bad:
            raise ConfigError(f"space.kernels has even kernels {bad}; query convs need odd kernels (same padding)")
        object.__setattr__(self, "kernels", kernels)
        for s in range(stages):
            if not self.pairs(s):
                raise ConfigError(f"space.embed_dims[{s}] = {list(self.embed_dims[s])} has no width divisible by "
                                  f"a head count of space.num_heads[{s}] = {list(self.num_heads[s])}")
        if min(self.embed_dims[0]) < 8:
            raise ConfigError(f"space.embed_dims[0] = {list(self.embed_dims[0])} must be at least 8 (the patch "
                              f"embedding starts at C/8)")
        largest = {"depth": [c[-1] for c in self.depths], "embed_dim": [c[-1] for c in self.embed_dims],
                   "num_heads": [c[-1] for c in self.num_heads],
                   "head_dim": [max(c // h for c, h in self.pairs(s)) for s in range(stages)]}
        for dim, field in (*((d, f"super_{FIELDS[d]}") for d in STAGE_DIMS), ("head_dim", "super_head_dims")):
            value = getattr(self, field)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ConfigError(f"space.{field} = {value!r} must be a list with one value per stage")
            value = tuple(value) or tuple(largest[dim])
            if (len(value) != stages or any(not isinstance(v, int) or isinstance(v, bool) for v in value)
                    or any(v < c for v, c in zip(value, largest[dim], strict=False))):
                raise ConfigError(f"space.{field} = {list(value)} must give each of the {stages} stages an integer "
                                  f"at least its largest choice {largest[dim]}")
            object.__setattr__(self, field, value)
        if len(kernels) != max(self.super_num_heads):
            raise ConfigError(f"space.kernels has {len(kernels)} heads' choices; it needs one list per head of the "
                              f"widest stage ({max(self.super_num_heads)})")
        top_kernel = max(k for ks in kernels for k in ks)
        kernel = self.super_kernel or top_kernel
        if not isinstance(kernel, int) or kernel < top_kernel or kernel % 2 == 0:
            raise ConfigError(f"space.super_kernel = {self.super_kernel!r} must be an odd integer at least the "
                              f"largest kernel {top_kernel} (0: that kernel)")
        object.__setattr__(self, "super_kernel", kernel)
        for key in ("key_dim", "window_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"space.{key} = {value!r} must be a positive integer")
        if not 0.0 <= self.m_prob <= 1.0:
            raise ConfigError(f"space.m_prob = {self.m_prob} must lie in [0, 1]")

    # ---- geometry ----
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def stage_map(self, s: int) -> int:
        """Side of stage s's feature map (img/16, then halved (rounding up) by each patch merging)."""
        side = self.img_size // PATCH
        for _ in range(s):
            side = (side - 1) // 2 + 1
        return side

    def stage_window(self, s: int) -> int:
        """The attention window of stage s: the fixed window, or the whole map where that is smaller."""
        return min(self.window_size, self.stage_map(s))

    def pairs(self, s: int) -> list[tuple[int, int]]:
        """The valid (width, heads) genes of stage s: widths the head count divides."""
        return [(c, h) for c in self.embed_dims[s] for h in self.num_heads[s] if c % h == 0]

    def largest(self) -> Arch:
        """The widest valid arch: deepest, widest (with its most heads) and largest kernels."""
        pairs = [max(self.pairs(s)) for s in range(self.num_stages)]
        return {"depth": [c[-1] for c in self.depths], "embed_dim": [p[0] for p in pairs],
                "num_heads": [p[1] for p in pairs], "kernels": [k[-1] for k in self.kernels]}

    def smallest(self) -> Arch:
        pairs = [min(self.pairs(s)) for s in range(self.num_stages)]
        return {"depth": [c[0] for c in self.depths], "embed_dim": [p[0] for p in pairs],
                "num_heads": [p[1] for p in pairs], "kernels": [k[0] for k in self.kernels]}

    def num_archs(self) -> int:
        return (math.prod(len(d) * len(self.pairs(s)) for s, d in enumerate(self.depths))
                * math.prod(len(k) for k in self.kernels))

    # ---- the Space protocol ----
    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Decisions "stage<s>.<dim>" (s from 1) and "head<i>.kernel" (i from 1), as `validate` names them."""
        out = {f"stage{s + 1}.{dim}": getattr(self, FIELDS[dim])[s] for s in range(self.num_stages)
               for dim in STAGE_DIMS}
        return {**out, **{f"head{i + 1}.kernel": k for i, k in enumerate(self.kernels)}}

    def arch_choices(self, arch: Arch) -> dict[str, tuple[Any, ...]]:
        out = {f"stage{s + 1}.{dim}": (arch[dim][s],) for s in range(self.num_stages) for dim in STAGE_DIMS}
        return {**out, **{f"head{i + 1}.kernel": (k,) for i, k in enumerate(arch["kernels"])}}

    def restrict(self, choices: Mapping[str, Sequence[Any]]) -> EfficientVitSpace:
        """Subsets of the choices (keys as `choices()`); the supernet shape stays."""
        return dataclasses.replace(self, **self._fields_of(narrowed(self.choices(), choices)))

    def dimensions(self) -> dict[str, list[Any]]:
        """Each searchable dimension's ordered choices (what a space search moves and resizes)."""
        return {k: list(v) for k, v in self.choices().items()}

    def with_dimensions(self, mapping: Mapping[str, Sequence[Any]]) -> EfficientVitSpace:
        """A new space with the named dimensions' choices replaced (values outside the current range allowed).

        A moved range needs a new supernet, so the super shape becomes that of the new choices. Where the
        most heads of any stage change, the kernel choices follow: a new head takes the last head's choices.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"with_dimensions needs a mapping of dimension -> choices, got {type(mapping).__name__}")
        current = self.choices()
        unknown = sorted(set(mapping) - set(current))
        if unknown:
            raise ConfigError(f"with_dimensions: dimensions {unknown} are unknown; the space has {list(current)}")
        new = dict(current)
        for key, values in mapping.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"with_dimensions: {key} = {values!r} must be a non-empty list of integers")
            new[key] = _ints(f"with_dimensions: {key}", values)
        fields = self._fields_of(new)
        heads = max(h[-1] for h in fields["num_heads"])
        kernels = fields["kernels"]
        fields["kernels"] = tuple(kernels[min(i, len(kernels) - 1)] for i in range(heads))
        supers = dict(super_depths=(), super_embed_dims=(), super_num_heads=(), super_head_dims=(), super_kernel=0)
        return dataclasses.replace(self, **fields, **supers)

    def _fields_of(self, choices: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        out = {FIELDS[dim]: tuple(tuple(choices[f"stage{s + 1}.{dim}"]) for s in range(self.num_stages))
               for dim in STAGE_DIMS}
        out["kernels"] = tuple(tuple(choices[f"head{i + 1}.kernel"]) for i in range(len(self.kernels)))
        return out

    def to_config(self) -> dict[str, Any]:
        return {"family": self.family, **{f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    def validate(self, arch: Arch) -> Arch:
        check_keys(arch, DIMS)
        out: Arch = {}
        for dim in STAGE_DIMS:
            values = arch[dim]
            if not isinstance(values, (list, tuple)) or len(values) != self.num_stages:
                raise ArchError(f"arch field '{dim}' = {values!r} must be a list of {self.num_stages} per-stage values")
            out[dim] = [check_choice(f"stage{s + 1}.{dim}", v, getattr(self, FIELDS[dim])[s])
                        for s, v in enumerate(values)]
        for s, (c, h) in enumerate(zip(out["embed_dim"], out["num_heads"], strict=True)):
            if c % h:
                raise ArchError(f"arch stage{s + 1}: embed_dim {c} is not divisible by num_heads {h}; choose "
                                f"(embed_dim, num_heads) among {self.pairs(s)}")
        kernels = arch["kernels"]
        if not isinstance(kernels, (list, tuple)) or len(kernels) != len(self.kernels):
            raise ArchError(f"arch field 'kernels' = {kernels!r} must be a list of {len(self.kernels)} per-head "
                            f"kernels")
        out["kernels"] = [check_choice(f"head{i + 1}.kernel", k, self.kernels[i]) for i, k in enumerate(kernels)]
        return out

    def sample(self, rng: random.Random) -> Arch:
        """Uniform over valid archs: per stage a depth and a valid (width, heads) pair, per head a kernel."""
        pairs = [rng.choice(self.pairs(s)) for s in range(self.num_stages)]
        return {"depth": [rng.choice(c) for c in self.depths], "embed_dim": [p[0] for p in pairs],
                "num_heads": [p[1] for p in pairs], "kernels": [rng.choice(k) for k in self.kernels]}

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """Each gene is redrawn with probability `m_prob`; a stage's width among those its heads divide,
        then its heads among those that divide its width, so the pair stays valid."""
        out = {"depth": [], "embed_dim": [], "num_heads": []}
        for s in range(self.num_stages):
            d, c, h = arch["depth"][s], arch["embed_dim"][s], arch["num_heads"][s]
            if rng.random() < self.m_prob:
                d = rng.choice(self.depths[s])
            if rng.random() < self.m_prob:
                c = rng.choice([w for w, n in self.pairs(s) if n == h])
            if rng.random() < self.m_prob:
                h = rng.choice([n for w, n in self.pairs(s) if w == c])
            out["depth"].append(d)
            out["embed_dim"].append(c)
            out["num_heads"].append(h)
        out["kernels"] = [rng.choice(c) if rng.random() < self.m_prob else k
                          for k, c in zip(arch["kernels"], self.kernels, strict=True)]
        return out

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch | None:
        """Each gene from either parent; a stage's (width, heads) pair comes whole from one parent."""
        out = {"depth": [rng.choice(p) for p in zip(a["depth"], b["depth"], strict=True)],
               "embed_dim": [], "num_heads": []}
        for s in range(self.num_stages):
            parent = rng.choice((a, b))
            out["embed_dim"].append(parent["embed_dim"][s])
            out["num_heads"].append(parent["num_heads"][s])
        out["kernels"] = [rng.choice(p) for p in zip(a["kernels"], b["kernels"], strict=True)]
        return out

    def cost(self, arch: Arch) -> dict[str, int]:
        """Analytic params and MACs of the arch's timm `EfficientVitMsra`, as `cream.cost.measure` counts it.

        MACs are those of convolutions, the attention products (q·kᵀ and v·aᵀ on each padded window)
        and the head, for one image; BN, activations, the squeeze-excite pooling and gating, and the
        additions are not counted. Params count the BN affine pairs and the attention-bias tables
        (heads × window² per block), not the running statistics.
        """
        arch = self.validate(arch)
        kd, dims = self.key_dim, arch["embed_dim"]
        params = macs = 0

        def conv(cin: int, cout: int, k: int, side: int, groups: int = 1, bn: bool = True, bias: bool = False):
            nonlocal params, macs
            params += cout * cin // groups * k * k + (2 * cout if bn else 0) + (cout if bias else 0)
            macs += side * side * cout * cin // groups * k * k

        def residuals(c: int, side: int):  # Res(DW3x3 + BN) then Res(FFN, ratio 2)
            conv(c, c, 3, side, groups=c)
            conv(c, 2 * c, 1, side)
            conv(2 * c, c, 1, side)

        side = self.img_size
        chans = (self.in_chans, dims[0] // 8, dims[0] // 4, dims[0] // 2, dims[0])
        for cin, cout in zip(chans, chans[1:], strict=False):
            side = (side - 1) // 2 + 1
            conv(cin, cout, 3, side)
        for s in range(self.num_stages):
            c, h = dims[s], arch["num_heads"][s]
            side = self.stage_map(s)
            if s:
                prev, before = dims[s - 1], self.stage_map(s - 1)
                residuals(prev, before)
                conv(prev, 4 * prev, 1, before)
                conv(4 * prev, 4 * prev, 3, side, groups=4 * prev)
                rd = se_width(prev)
                conv(4 * prev, rd, 1, 1, bn=False, bias=True)
                conv(rd, 4 * prev, 1, 1, bn=False, bias=True)
                conv(4 * prev, c, 1, side)
                residuals(c, side)
            w = self.stage_window(s)
            padded = -(-side // w) * w  # the map padded to whole windows
            windows, d = (padded // w) ** 2, c // h
            for _ in range(arch["depth"][s]):
                residuals(c, side)
                for i in range(h):
                    conv(d, 2 * kd + d, 1, padded)
                    k = arch["kernels"][i]
                    conv(kd, kd, k, padded, groups=kd)
                    macs += windows * w**4 * (kd + d)
                params += h * w * w
                conv(c, c, 1, padded)
                residuals(c, side)
        c = dims[-1]
        params += 2 * c + (c + 1) * self.num_classes
        macs += c * self.num_classes
        return {"params": params, "macs": macs}


def _lists(where: str, value: Any, what: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{where} = {value!r} must be a non-empty list with {what}")
    return value


def _ints(where: str, values: Any) -> tuple[int, ...]:
    """Sorted distinct positive integers of `values`, or a `ConfigError` naming `where`."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v <= 0 for v in values):
        raise ConfigError(f"{where} = {values!r} must be a non-empty list of positive integers")
    return tuple(sorted({int(v) for v in values}))


# ---- presets ----
# The original publishes six models, not a search space (spec §2.2): "efficientvit-msra" is ours, the
# smallest space that holds M0-M5 (each stage's widths and heads, kernels 3/5/7 for every head), with
# one more depth on either side of theirs. "efficientvit-cpu" is CPU-sized for tests (96 px, so stage
# 1's 6x6 map is cut into padded 4x4 windows; 10 classes).

_PRESETS: dict[str, dict[str, Any]] = {
    "efficientvit-msra": dict(depths=((1, 2), (1, 2, 3, 4), (2, 3, 4, 5)),
                              embed_dims=((64, 128, 192), (128, 144, 192, 240, 256, 288), (192, 224, 320, 384)),
                              num_heads=((2, 3, 4), (3, 4), (2, 3, 4)), kernels=((3, 5, 7),) * 4),
    "efficientvit-cpu": dict(depths=((1, 2), (1, 2), (1, 2)), embed_dims=((16, 24), (24, 32), (32, 48)),
                             num_heads=((1, 2), (2, 3), (2, 3)), kernels=((3, 5),) * 3, img_size=96,
                             window_size=4, key_dim=8, num_classes=10),
}


def efficientvit_space(**cfg: Any) -> EfficientVitSpace:
    """An `EfficientVitSpace` from a config mapping (family "efficientvit"); unknown keys raise `ConfigError`."""
    return space_from_config(EfficientVitSpace, cfg, (*FIELDS.values(), "kernels"),
                             " (one list of choices per stage; kernels: one per head)")


def _preset(name: str):
    def factory(**overrides: Any) -> EfficientVitSpace:
        return efficientvit_space(**{"name": name, **_PRESETS[name], **overrides})

    return factory


for _name in _PRESETS:
    register_space(_name, _preset(_name))
register_family("efficientvit", efficientvit_space)


# ---- the published models (spec §2.2) ----

PUBLISHED: dict[str, Arch] = {
    "m0": {"depth": [1, 2, 3], "embed_dim": [64, 128, 192], "num_heads": [4, 4, 4], "kernels": [5, 5, 5, 5]},
    "m1": {"depth": [1, 2, 3], "embed_dim": [128, 144, 192], "num_heads": [2, 3, 3], "kernels": [7, 5, 3, 3]},
    "m2": {"depth": [1, 2, 3], "embed_dim": [128, 192, 224], "num_heads": [4, 3, 2], "kernels": [7, 5, 3, 3]},
    "m3": {"depth": [1, 2, 3], "embed_dim": [128, 240, 320], "num_heads": [4, 3, 4], "kernels": [5, 5, 5, 5]},
    "m4": {"depth": [1, 2, 3], "embed_dim": [128, 256, 384], "num_heads": [4, 4, 4], "kernels": [7, 5, 3, 3]},
    "m5": {"depth": [1, 3, 4], "embed_dim": [192, 288, 384], "num_heads": [3, 3, 4], "kernels": [7, 5, 3, 3]},
}
# published params (M) and MACs (M) of the README (spec §2.2)
PUBLISHED_COSTS = {"m0": (2.3, 79), "m1": (3.0, 167), "m2": (4.2, 201), "m3": (6.9, 263), "m4": (8.8, 299),
                   "m5": (12.4, 522)}
