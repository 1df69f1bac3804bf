"""The hierarchical (Swin-style) search space of AutoFormerV2 / S3 (pure data, no torch).

An arch gives one value per stage for each dimension:

    {"depth": [2, 2, 6, 2], "embed_dim": [96, 192, 384, 768], "num_heads": [3, 6, 12, 24],
     "mlp_ratio": [4.0, 4.0, 4.0, 4.0], "window_size": [7, 7, 14, 7]}

The head dim is fixed (32 in S3), so stage s has Q/K/V width 32·h_s, independent of its embed
dim. Stages after the first start with a patch merging (2×2 concat, LayerNorm, Linear without
bias). Block i of a stage shifts its windows by w/2 when i is odd. Clipping rule (spec §2): a
window at least the stage's token map becomes the whole map with no shift, so the space stores
window choices already clipped (min(w, map)), and two written windows that clip alike are one
choice. Every stage keeps its values across its blocks, as timm's `SwinTransformer` (the class
archs extract into) takes them per stage.
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

DIMS = ("depth", "embed_dim", "num_heads", "mlp_ratio", "window_size")
# the config field holding each dimension's per-stage choices, and its super (supernet-shape) field
FIELDS = {"depth": "depths", "embed_dim": "embed_dims", "num_heads": "num_heads", "mlp_ratio": "mlp_ratios",
          "window_size": "window_sizes"}


def _cast(dim: str):
    return float if dim == "mlp_ratio" else int


@dataclass(frozen=True)
class SwinSpace:
    """Per-stage choices of every dimension, plus the supernet's shape.

    `depths`, `embed_dims`, `num_heads`, `mlp_ratios`, `window_sizes`: one list of choices per
    stage. `super_*` (one value per stage; empty: the largest choice) fix the supernet's shape,
    so a space narrowed by `restrict` keeps the weights of the wide one.
    """

    family: ClassVar[str] = "swin"
    name: str
    depths: tuple[tuple[int, ...], ...]
    embed_dims: tuple[tuple[int, ...], ...]
    num_heads: tuple[tuple[int, ...], ...]
    mlp_ratios: tuple[tuple[float, ...], ...]
    window_sizes: tuple[tuple[int, ...], ...]
    super_depths: tuple[int, ...] = ()
    super_embed_dims: tuple[int, ...] = ()
    super_num_heads: tuple[int, ...] = ()
    super_mlp_ratios: tuple[float, ...] = ()
    super_window_sizes: tuple[int, ...] = ()
    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    head_dim: int = 32
    m_prob: float = 0.2  # mutation: redraw each stage's value of each dimension with this probability

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ConfigError(f"space.img_size = {self.img_size} must be a multiple of patch_size {self.patch_size}")
        stages = None
        for dim in DIMS:
            name, cast = FIELDS[dim], _cast(dim)
            per_stage = getattr(self, name)
            if isinstance(per_stage, (str, bytes)) or not isinstance(per_stage, Sequence) or not per_stage:
                raise ConfigError(f"space.{name} = {per_stage!r} must be a non-empty list with one list of "
                                  f"choices per stage")
            stages = len(per_stage) if stages is None else stages
            if len(per_stage) != stages:
                raise ConfigError(f"space.{name} has {len(per_stage)} stages but space.depths has {stages}")
            out = []
            for s, values in enumerate(per_stage):
                where = f"space.{name}[{s}]"
                if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                    raise ConfigError(f"{where} = {values!r} must be a non-empty list of choices")
                out.append(_numbers(where, values, cast))
            if dim == "window_size":
                out = [tuple(sorted({min(w, self.stage_map(s)) for w in ws})) for s, ws in enumerate(out)]
            object.__setattr__(self, name, tuple(out))
        for s in range(stages):
            side = self.stage_map(s)
            if s < stages - 1 and side % 2:
                raise ConfigError(f"space.img_size = {self.img_size} gives an odd {side}x{side} token map at stage "
                                  f"{s + 1}; img_size must be a multiple of patch_size·2^{stages - 1}")
            bad = [w for w in self.window_sizes[s] if side % w]
            if bad:
                raise ConfigError(f"space.window_sizes[{s}] = {bad} must divide stage {s + 1}'s {side}x{side} "
                                  f"token map (or be at least {side})")
        for dim in DIMS:
            field = f"super_{FIELDS[dim]}"
            largest = tuple(c[-1] for c in getattr(self, FIELDS[dim]))
            value = getattr(self, field)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ConfigError(f"space.{field} = {value!r} must be a list with one value per stage")
            try:
                value = tuple(_cast(dim)(v) for v in value) if value else largest
            except (TypeError, ValueError):
                raise ConfigError(f"space.{field} = {list(value)!r} must be a list of numbers") from None
            if dim == "window_size":
                value = tuple(min(w, self.stage_map(s)) for s, w in enumerate(value))
            if len(value) != stages or any(v < c for v, c in zip(value, largest, strict=False)):
                raise ConfigError(f"space.{field} = {list(value)} must give each of the {stages} stages a value at "
                                  f"least its largest choice {list(largest)}")
            object.__setattr__(self, field, value)
        if not 0.0 <= self.m_prob <= 1.0:
            raise ConfigError(f"space.m_prob = {self.m_prob} must lie in [0, 1]")

    # ---- geometry ----
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def stage_map(self, s: int) -> int:
        """Side of stage s's token map (the patch grid halved once per earlier stage)."""
        return self.img_size // self.patch_size // 2**s

    def shift(self, s: int, block: int, window: int) -> int:
        """The cyclic shift of a block: w/2 on odd blocks, 0 where the window covers the whole map."""
        return window // 2 if block % 2 and window < self.stage_map(s) else 0

    def largest(self) -> Arch:
        return {dim: list(c[-1] for c in getattr(self, FIELDS[dim])) for dim in DIMS}

    def smallest(self) -> Arch:
        return {dim: list(c[0] for c in getattr(self, FIELDS[dim])) for dim in DIMS}

    def super_arch(self) -> dict[str, list[Any]]:
        """The supernet's shape, per stage (it may exceed every arch of a restricted space)."""
        return {dim: list(getattr(self, f"super_{FIELDS[dim]}")) for dim in DIMS}

    def num_archs(self) -> int:
        return math.prod(len(c) for dim in DIMS for c in getattr(self, FIELDS[dim]))

    # ---- the Space protocol ----
    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Decisions named "stage<s>.<dim>" (s from 1), as `validate` names them."""
        return {f"stage{s + 1}.{dim}": getattr(self, FIELDS[dim])[s] for s in range(self.num_stages) for dim in DIMS}

    def arch_choices(self, arch: Arch) -> dict[str, tuple[Any, ...]]:
        return {f"stage{s + 1}.{dim}": (arch[dim][s],) for s in range(self.num_stages) for dim in DIMS}

    def restrict(self, choices: Mapping[str, Sequence[Any]]) -> SwinSpace:
        """Subsets of the per-stage choices (keys "stage<s>.<dim>"); the supernet shape stays."""
        return dataclasses.replace(self, **self._fields_of(narrowed(self.choices(), choices)))

    def dimensions(self) -> dict[str, list[Any]]:
        """Each searchable dimension's ordered choices (what a space search moves and resizes)."""
        return {k: list(v) for k, v in self.choices().items()}

    def with_dimensions(self, mapping: Mapping[str, Sequence[Any]]) -> SwinSpace:
        """A new space with the named dimensions' choices replaced (values outside the current range allowed).

        A moved range needs a new supernet, so the super shape becomes that of the new choices. Window sizes
        are clipped to the stage's map, and those that then do not tile it (the supernet does not pad
        windows) are left out; a ConfigError if none is left.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"with_dimensions needs a mapping of dimension -> choices, got {type(mapping).__name__}")
        current = self.choices()
        unknown = sorted(set(mapping) - set(current))
        if unknown:
            raise ConfigError(f"with_dimensions: dimensions {unknown} are unknown; the space has {list(current)}")
        new = dict(current)
        for key, values in mapping.items():
            dim = key.split(".", 1)[1]
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"with_dimensions: {key} = {values!r} must be a non-empty list of numbers")
            new[key] = _numbers(f"with_dimensions: {key}", values, _cast(dim))
            if dim == "window_size":
                side = self.stage_map(int(key[5:].split(".")[0]) - 1)
                new[key] = tuple(w for w in new[key] if w >= side or side % w == 0)
                if not new[key]:
                    raise ConfigError(f"with_dimensions: {key} = {list(values)!r} has no window that tiles the "
                                      f"{side}x{side} map of that stage (a divisor of {side}, or at least {side})")
        supers = {f"super_{FIELDS[dim]}": () for dim in DIMS}
        return dataclasses.replace(self, **self._fields_of(new), **supers)

    def _fields_of(self, choices: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        return {FIELDS[dim]: tuple(tuple(choices[f"stage{s + 1}.{dim}"]) for s in range(self.num_stages))
                for dim in DIMS}

    def to_config(self) -> dict[str, Any]:
        return {"family": self.family, **{f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    def validate(self, arch: Arch) -> Arch:
        check_keys(arch, DIMS)
        out: Arch = {}
        for dim in DIMS:
            values = arch[dim]
            if not isinstance(values, (list, tuple)) or len(values) != self.num_stages:
                raise ArchError(f"arch field '{dim}' = {values!r} must be a list of {self.num_stages} per-stage values")
            out[dim] = [check_choice(f"stage{s + 1}.{dim}", v, getattr(self, FIELDS[dim])[s])
                        for s, v in enumerate(values)]
        return out

    def sample(self, rng: random.Random) -> Arch:
        return {dim: [rng.choice(c) for c in getattr(self, FIELDS[dim])] for dim in DIMS}

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """Each stage's value of each dimension is redrawn with probability `m_prob`."""
        return {dim: [rng.choice(c) if rng.random() < self.m_prob else v
                      for v, c in zip(arch[dim], getattr(self, FIELDS[dim]), strict=True)] for dim in DIMS}

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch | None:
        """Each gene from either parent (every pair of archs is compatible)."""
        return {dim: [rng.choice(p) for p in zip(a[dim], b[dim], strict=True)] for dim in DIMS}

    def cost(self, arch: Arch) -> dict[str, int]:
        """Analytic params and MACs of the arch's timm `SwinTransformer`.

        MACs are the multiply-adds of matmul-like ops for one image, as `cream.cost.measure_macs`
        counts them on the built model: patch conv, qkv, q·kᵀ and a·v inside each window, proj,
        fc1, fc2, the patch-merging reduction and the head. Norms, softmax, GELU, the bias and mask
        additions and the pooling are not counted. Params include the relative-position bias
        tables ((2w−1)² rows per head, w the clipped window).
        """
        arch = self.validate(arch)
        p, C, nc = self.patch_size, self.in_chans, self.num_classes
        c0 = arch["embed_dim"][0]
        params = c0 * (C * p * p + 1) + 2 * c0
        macs = self.stage_map(0) ** 2 * c0 * C * p * p
        prev = c0
        for s in range(self.num_stages):
            c, h, w = arch["embed_dim"][s], arch["num_heads"][s], arch["window_size"][s]
            n = self.stage_map(s) ** 2
            q, f = h * self.head_dim, int(c * arch["mlp_ratio"][s])
            if s:
                params += 8 * prev + 4 * prev * c
                macs += n * 4 * prev * c
            block_params = 4 * c + (2 * w - 1) ** 2 * h + (c + 1) * 3 * q + (q + 1) * c + (c + 1) * f + (f + 1) * c
            block_macs = n * (3 * c * q + 2 * w * w * q + q * c + 2 * c * f)
            params += arch["depth"][s] * block_params
            macs += arch["depth"][s] * block_macs
            prev = c
        params += 2 * prev + (prev + 1) * nc
        macs += prev * nc
        return {"params": params, "macs": macs}


def _numbers(where: str, values: Sequence[Any], cast) -> tuple[Any, ...]:
    """Sorted distinct positive numbers of `values` (ints where `cast` is int), or a `ConfigError`."""
    try:
        if any(isinstance(v, bool) or (cast is int and float(v) != int(v)) for v in values):
            raise ValueError
        out = tuple(sorted({cast(v) for v in values}))
    except (TypeError, ValueError):
        kind = "numbers" if cast is float else "integers"
        raise ConfigError(f"{where} = {list(values)!r} must be a list of positive {kind}") from None
    if out[0] <= 0:
        raise ConfigError(f"{where} = {list(values)!r} must be a list of positive numbers")
    return out


# ---- presets ----
# S3 does not publish its initial or evolved spaces (spec §6): these are ours, chosen so that the
# three released archs lie in them (embed 96·2^s, heads C/32, MLP ratio 4, S3's windows) with room
# around them to search; "-cpu" is a CPU-sized space for tests and examples (32 px, 10 classes).

def _stages(stage3_depths: tuple[int, ...]) -> dict[str, Any]:
    return dict(depths=((1, 2), (1, 2), stage3_depths, (1, 2)),
                embed_dims=((64, 96), (128, 192), (320, 384), (640, 768)),
                num_heads=((2, 3), (4, 6), (10, 12), (20, 24)),
                mlp_ratios=((3.0, 3.5, 4.0),) * 4,
                window_sizes=((7, 14), (7, 14), (7, 14), (7,)))


_PRESETS: dict[str, dict[str, Any]] = {
    "autoformerv2-tiny": _stages((4, 5, 6)),
    "autoformerv2-small": _stages((14, 16, 18)),
    "autoformerv2-base": _stages((26, 28, 30)),
    "autoformerv2-cpu": dict(depths=((1, 2), (1, 2), (1, 2), (1,)), embed_dims=((16, 24), (32, 48), (48, 64), (64, 96)),
                             num_heads=((1, 2), (2, 3), (2, 3), (3, 4)), mlp_ratios=((2.0, 3.0, 4.0),) * 4,
                             window_sizes=((4, 8), (4, 8), (4,), (2,)), img_size=32, patch_size=2, head_dim=8,
                             num_classes=10),
}

def swin_space(**cfg: Any) -> SwinSpace:
    """A `SwinSpace` from a config mapping (family "swin"); unknown keys raise `ConfigError`."""
    return space_from_config(SwinSpace, cfg, tuple(FIELDS.values()), " (one list of choices per stage)")


def _preset(name: str):
    def factory(**overrides: Any) -> SwinSpace:
        return swin_space(**{"name": name, **_PRESETS[name], **overrides})

    return factory


for _name in _PRESETS:
    register_space(_name, _preset(_name))
register_family("swin", swin_space)


# ---- the released S3 models (spec §3) ----

RELEASED = {"tiny": ("autoformerv2-tiny", "swin_s3_tiny_224", (2, 2, 6, 2), (7, 7, 14, 7)),
            "small": ("autoformerv2-small", "swin_s3_small_224", (2, 2, 18, 2), (14, 14, 14, 7)),
            "base": ("autoformerv2-base", "swin_s3_base_224", (2, 2, 30, 2), (7, 7, 14, 7))}


def released_archs() -> dict[str, Arch]:
    """S3-T/S/B as archs (keys "tiny", "small", "base"), each of the preset space `RELEASED[k][0]`."""
    return {k: {"depth": list(d), "embed_dim": [96, 192, 384, 768], "num_heads": [3, 6, 12, 24],
                "mlp_ratio": [4.0] * 4, "window_size": list(w)} for k, (_, _, d, w) in RELEASED.items()}
