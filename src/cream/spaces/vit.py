"""The AutoFormer vision-transformer search space (pure data, no torch).

An arch is `{"embed_dim": d, "depth": L, "num_heads": [h_1..h_L], "mlp_ratio": [r_1..r_L]}`.
One embed dim is shared by all layers; heads and MLP ratio are chosen per layer. The head
dim is fixed (64), so layer i has Q/K/V width q_i = 64·h_i and MLP width f_i = int(d·r_i).
A subnet always uses the first L layers of the supernet.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cream.errors import ArchError, ConfigError
from cream.nn.irpe import IRPEConfig
from cream.nn.relpos import autoformer_irpe
from cream.registry import register_family, register_space
from cream.spaces.base import Arch, check_choice, check_keys, narrowed, plain, space_from_config

ARCH_KEYS = ("embed_dim", "depth", "num_heads", "mlp_ratio")


@dataclass(frozen=True)
class ViTSpace:
    """AutoFormer space: choices, super dims and the evolution rule's probabilities.

    `super_embed_dim` may exceed the largest choice (the tiny space stores E = 256 but samples
    d ≤ 240); it sets the supernet's width and the dropout scaling p·d/E. Likewise `super_depth`,
    `super_num_heads` and `super_mlp_ratio` (0: the largest choice) fix the supernet's shape, so a
    space narrowed by `restrict` keeps the weights of the wide one. `legacy_qkv_bias`
    selects the original's qkv slicing (interleaved weight rows, contiguous bias) that the
    released checkpoints need; by default Q, K and V are three blocks sliced alike.
    """

    family: ClassVar[str] = "vit"
    name: str
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    super_embed_dim: int = 0  # 0: the largest embed dim
    super_depth: int = 0  # 0: the largest depth
    super_num_heads: int = 0  # 0: the most heads
    super_mlp_ratio: float = 0.0  # 0: the largest MLP ratio
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    rel_pos: bool = True
    max_relative_position: int = 14
    # iRPE settings (`IRPEConfig` keys; skip defaults to 1) instead of AutoFormer's relative positions
    irpe: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)
    head_dim: int = 64
    legacy_qkv_bias: bool = False
    norm_eps: float = 1e-5  # LayerNorm epsilon (the original's 1e-5; timm's ViTs use 1e-6)
    s_prob: float = 0.4  # mutation: redraw depth, and embed dim, each with this probability
    m_prob: float = 0.2  # mutation: redraw each layer's ratio, and heads, with this probability

    def __post_init__(self) -> None:
        for name in ("embed_dims", "depths", "num_heads", "mlp_ratios"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"space.{name} = {values!r} must be a non-empty list")
            cast = float if name == "mlp_ratios" else int
            try:
                values = tuple(sorted({cast(v) for v in values}))
            except (TypeError, ValueError):
                raise ConfigError(f"space.{name} = {values!r} must be a list of numbers") from None
            if values[0] <= 0:
                raise ConfigError(f"space.{name} = {list(values)} must be positive")
            object.__setattr__(self, name, values)
        for name, choices, what in (("super_embed_dim", "embed_dims", "embed dim"), ("super_depth", "depths", "depth"),
                                    ("super_num_heads", "num_heads", "heads count"),
                                    ("super_mlp_ratio", "mlp_ratios", "MLP ratio")):
            largest = getattr(self, choices)[-1]
            if getattr(self, name) == 0:
                object.__setattr__(self, name, largest)
            if getattr(self, name) < largest:
                raise ConfigError(f"space.{name} = {getattr(self, name)} must be at least the largest {what} {largest}")
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"space.img_size = {self.img_size} must be a multiple of patch_size {self.patch_size}"
            )
        if not self.norm_eps > 0:
            raise ConfigError(f"space.norm_eps = {self.norm_eps} must be positive")
        if self.irpe is not None:
            if not isinstance(self.irpe, Mapping):
                raise ConfigError(f"space.irpe = {self.irpe!r} must be a mapping of iRPE settings (docs/irpe.md)")
            allowed = [f.name for f in dataclasses.fields(IRPEConfig)]
            if unknown := sorted(set(self.irpe) - set(allowed)):
                raise ConfigError(f"space.irpe has unknown keys {unknown}; allowed: {', '.join(allowed)}")
            object.__setattr__(self, "irpe", dict(self.irpe))
            _ = self.irpe_config  # validates the values
        for name in ("s_prob", "m_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"space.{name} = {getattr(self, name)} must lie in [0, 1]")

    # ---- super dims (the supernet's shape) ----
    @property
    def super_qkv_dim(self) -> int:
        return self.super_num_heads * self.head_dim

    @property
    def super_mlp_dim(self) -> int:
        return int(self.super_embed_dim * self.super_mlp_ratio)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.img_size // self.patch_size
        return side, side

    @property
    def irpe_config(self) -> IRPEConfig | None:
        """The attentions' relative positions: `irpe` when set, else AutoFormer's when `rel_pos`."""
        if self.irpe is not None:
            return IRPEConfig(**{"skip": 1, **self.irpe})
        return autoformer_irpe(self.max_relative_position) if self.rel_pos else None

    def largest(self) -> Arch:
        """The widest, deepest arch of the space (the supernet's default path)."""
        L = self.depths[-1]
        return {"embed_dim": self.embed_dims[-1], "depth": L, "num_heads": [self.num_heads[-1]] * L,
                "mlp_ratio": [self.mlp_ratios[-1]] * L}

    def smallest(self) -> Arch:
        L = self.depths[0]
        return {"embed_dim": self.embed_dims[0], "depth": L, "num_heads": [self.num_heads[0]] * L,
                "mlp_ratio": [self.mlp_ratios[0]] * L}

    def num_archs(self) -> int:
        """|D| · Σ_L (|H|·|R|)^L."""
        per_layer = len(self.num_heads) * len(self.mlp_ratios)
        return len(self.embed_dims) * sum(per_layer**L for L in self.depths)

    # ---- the Space protocol ----
    def choices(self) -> dict[str, tuple[Any, ...]]:
        return {"embed_dim": self.embed_dims, "depth": self.depths, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratios}

    def arch_choices(self, arch: Arch) -> dict[str, tuple[Any, ...]]:
        """Embed dim and depth, and every heads count and MLP ratio some layer of `arch` uses."""
        return {"embed_dim": (arch["embed_dim"],), "depth": (arch["depth"],),
                "num_heads": tuple(sorted(set(arch["num_heads"]))), "mlp_ratio": tuple(sorted(set(arch["mlp_ratio"])))}

    def restrict(self, choices: Mapping[str, Sequence[Any]]) -> ViTSpace:
        """Subsets of embed dims, depths, heads and MLP ratios (keys as in the arch); super dims stay."""
        c = narrowed(self.choices(), choices)
        return dataclasses.replace(self, embed_dims=c["embed_dim"], depths=c["depth"], num_heads=c["num_heads"],
                                   mlp_ratios=c["mlp_ratio"])

    def dimensions(self) -> dict[str, list[Any]]:
        """Each searchable dimension's ordered choices (what a space search moves and resizes)."""
        return {k: list(v) for k, v in self.choices().items()}

    def with_dimensions(self, mapping: Mapping[str, Sequence[Any]]) -> ViTSpace:
        """A new space with the named dimensions' choices replaced (values outside the current range allowed).

        Its supernet shape is that of the new choices (the super dims are reset to their largest), since a
        moved range needs a new supernet; the other settings are kept.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"with_dimensions needs a mapping of dimension -> choices, got {type(mapping).__name__}")
        fields = {"embed_dim": "embed_dims", "depth": "depths", "num_heads": "num_heads", "mlp_ratio": "mlp_ratios"}
        unknown = sorted(set(mapping) - set(fields))
        if unknown:
            raise ConfigError(f"with_dimensions: dimensions {unknown} are unknown; the space has {list(fields)}")
        for dim, values in mapping.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"with_dimensions: {dim} = {values!r} must be a non-empty list of numbers")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values) or (
                    dim != "mlp_ratio" and any(float(v) != int(v) for v in values)):
                kind = "numbers" if dim == "mlp_ratio" else "integers"
                raise ConfigError(f"with_dimensions: {dim} = {list(values)!r} must be a list of positive {kind}")
        return dataclasses.replace(self, **{fields[d]: tuple(v) for d, v in mapping.items()}, super_embed_dim=0,
                                   super_depth=0, super_num_heads=0, super_mlp_ratio=0.0)

    def to_config(self) -> dict[str, Any]:
        return {"family": self.family, **{f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    def validate(self, arch: Arch) -> Arch:
        check_keys(arch, ARCH_KEYS)
        d = check_choice("embed_dim", arch["embed_dim"], self.embed_dims)
        L = check_choice("depth", arch["depth"], self.depths)
        lists = {}
        for key, choices in (("num_heads", self.num_heads), ("mlp_ratio", self.mlp_ratios)):
            values = arch[key]
            if not isinstance(values, (list, tuple)) or len(values) != L:
                raise ArchError(f"arch field '{key}' = {values!r} must be a list of {L} per-layer values")
            lists[key] = [check_choice(f"{key}[{i}]", v, choices) for i, v in enumerate(values)]
        return {"embed_dim": d, "depth": L, "num_heads": lists["num_heads"], "mlp_ratio": lists["mlp_ratio"]}

    def sample(self, rng: random.Random) -> Arch:
        """Uniform draw in the original's order: depth, per-layer ratios, per-layer heads, embed dim."""
        L = rng.choice(self.depths)
        ratios = [rng.choice(self.mlp_ratios) for _ in range(L)]
        heads = [rng.choice(self.num_heads) for _ in range(L)]
        d = rng.choice(self.embed_dims)
        return {"embed_dim": d, "depth": L, "num_heads": heads, "mlp_ratio": ratios}

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """AutoFormer's rule: depth (s_prob), then each ratio and each heads (m_prob), then embed (s_prob)."""
        L, d = arch["depth"], arch["embed_dim"]
        ratios, heads = list(arch["mlp_ratio"]), list(arch["num_heads"])
        if rng.random() < self.s_prob:
            new_L = rng.choice(self.depths)
            if new_L > L:
                ratios += [rng.choice(self.mlp_ratios) for _ in range(new_L - L)]
                heads += [rng.choice(self.num_heads) for _ in range(new_L - L)]
            L, ratios, heads = new_L, ratios[:new_L], heads[:new_L]
        for i in range(L):
            if rng.random() < self.m_prob:
                ratios[i] = rng.choice(self.mlp_ratios)
        for i in range(L):
            if rng.random() < self.m_prob:
                heads[i] = rng.choice(self.num_heads)
        if rng.random() < self.s_prob:
            d = rng.choice(self.embed_dims)
        return {"embed_dim": d, "depth": L, "num_heads": heads, "mlp_ratio": ratios}

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch | None:
        """Each gene from either parent; parents of different depth are not compatible (None)."""
        if a["depth"] != b["depth"]:
            return None
        pick = rng.choice
        return {
            "embed_dim": pick((a["embed_dim"], b["embed_dim"])),
            "depth": a["depth"],
            "num_heads": [pick(p) for p in zip(a["num_heads"], b["num_heads"], strict=True)],
            "mlp_ratio": [pick(p) for p in zip(a["mlp_ratio"], b["mlp_ratio"], strict=True)],
        }

    def cost(self, arch: Arch) -> dict[str, int]:
        """Analytic params (the original's sliced-tensor count, rel-pos tables included) and MACs.

        MACs are every multiply-add of a matmul-like op for one image, as the supernet and the
        extracted model execute them: patch conv, qkv, q·kᵀ, a·v, proj, fc1, fc2, head, and with
        relative positions (AutoFormer's or iRPE, contextual) one table product per term and layer
        (x·Tᵀ for queries and keys, binned a·T for values). Norms, softmax, activations, gathers,
        scatters and additions are not counted.
        """
        d, L = arch["embed_dim"], arch["depth"]
        sum_q = sum(arch["num_heads"]) * self.head_dim
        sum_f = sum(int(d * r) for r in arch["mlp_ratio"])
        C, p, nc = self.in_chans, self.patch_size, self.num_classes
        P = (self.img_size // p) ** 2
        N = P + 1
        rel_params, rel_params_per_head, rel_macs = 0, 0, 0
        if (rpe := self.irpe_config) is not None:
            ctx = rpe.mode == "ctx"
            tables = len(rpe.on) * rpe.table_buckets * (self.head_dim if ctx else 1)
            rel_params, rel_params_per_head = (tables, 0) if rpe.shared_head else (0, tables)
            rel_macs = len(rpe.on) * rpe.table_buckets * N if ctx else 0  # per unit of q
        params = (
            d * (C * p * p + 1)  # patch conv
            + d * (P + 2)  # class token + position embedding
            + L * (6 * d + rel_params)  # LN1, LN2, proj bias, fc2 bias; shared rel-pos tables
            + sum(arch["num_heads"]) * rel_params_per_head  # per-head rel-pos tables
            + sum_q * (4 * d + 3)  # qkv weight and bias, proj weight
            + sum_f * (2 * d + 1)  # fc1 weight and bias, fc2 weight
            + 2 * d  # final LN
            + nc * (d + 1)  # head
        )
        macs = P * d * C * p * p + sum_q * (4 * N * d + 2 * N * N + rel_macs) + sum_f * 2 * N * d + d * nc
        return {"params": params, "macs": macs}


@dataclass(frozen=True)
class TimmViTSpace(ViTSpace):
    """The space of a timm `VisionTransformer` (`cream.supernets.from_timm`): a `ViTSpace` whose supernet and
    models are timm's class, so a run's space.json or an exported file rebuilds a `VisionTransformer`;
    `global_pool` is the model's ("token" or "avg")."""

    family: ClassVar[str] = "timm-vit"
    global_pool: str = "token"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.global_pool not in ("token", "avg"):
            raise ConfigError(f"space.global_pool = {self.global_pool!r} is unknown; allowed: 'token', 'avg'")
        if self.irpe is not None:
            raise ConfigError("space.irpe is not supported by timm-vit spaces (timm's own attention); "
                              "use a 'vit' space")


# ---- presets (spec §1) ----

_PRESETS: dict[str, dict[str, Any]] = {
    "autoformer-tiny": dict(embed_dims=(192, 216, 240), super_embed_dim=256, depths=(12, 13, 14),
                            num_heads=(3, 4), mlp_ratios=(3.5, 4.0)),
    # The published T subnet uses ratio 3.0 in three layers, outside the T space (spec §8 item 4):
    # this space has the same supernet shape as "autoformer-tiny" and also allows 3.0.
    "autoformer-tiny-ext": dict(embed_dims=(192, 216, 240), super_embed_dim=256, depths=(12, 13, 14),
                                num_heads=(3, 4), mlp_ratios=(3.0, 3.5, 4.0)),
    "autoformer-small": dict(embed_dims=(320, 384, 448), depths=(12, 13, 14), num_heads=(5, 6, 7),
                             mlp_ratios=(3.0, 3.5, 4.0)),
    # supernet-B.yaml (the README's training command) allows heads {9, 10} ...
    "autoformer-base": dict(embed_dims=(528, 576, 624), super_embed_dim=640, depths=(14, 15, 16),
                            num_heads=(9, 10), mlp_ratios=(3.0, 3.5, 4.0)),
    # ... the B subnet yaml (and the paper) heads {8, 9, 10}.
    "autoformer-base-8": dict(embed_dims=(528, 576, 624), super_embed_dim=640, depths=(14, 15, 16),
                              num_heads=(8, 9, 10), mlp_ratios=(3.0, 3.5, 4.0)),
}

_REQUIRED = ("embed_dims", "depths", "num_heads", "mlp_ratios")


def vit_space(**cfg: Any) -> ViTSpace:
    """A `ViTSpace` from a config mapping (family "vit"); unknown keys raise `ConfigError`."""
    return space_from_config(ViTSpace, cfg, _REQUIRED)


def timm_vit_space(**cfg: Any) -> TimmViTSpace:
    """A `TimmViTSpace` from a config mapping (family "timm-vit"); unknown keys raise `ConfigError`."""
    return space_from_config(TimmViTSpace, cfg, _REQUIRED)


def _preset(name: str):
    def factory(**overrides: Any) -> ViTSpace:
        return vit_space(**{"name": name, **_PRESETS[name], **overrides})

    return factory


for _name in _PRESETS:
    register_space(_name, _preset(_name))
register_family("vit", vit_space)
register_family("timm-vit", timm_vit_space)


# ---- published subnets (spec §7) ----

PUBLISHED_SPACES = {"tiny": "autoformer-tiny-ext", "small": "autoformer-small", "base": "autoformer-base"}


def published_archs() -> dict[str, Arch]:
    """The three published AutoFormer subnets (T, S, B), keyed "tiny", "small", "base".

    Each validates in the space named by `PUBLISHED_SPACES` (T needs "autoformer-tiny-ext").
    """

    def arch(d: int, heads: str, ratios: str) -> Arch:
        h = [int(x) for x in heads.split(",")]
        r = [float(x) for x in ratios.split(",")]
        return {"embed_dim": d, "depth": len(h), "num_heads": h, "mlp_ratio": r}

    return {
        "tiny": arch(192, "3,3,3,3,3,3,3,3,3,3,4,3,3", "3.5,3.5,3.0,3.5,3.0,3.0,4.0,4.0,3.5,4.0,3.5,4.0,3.5"),
        "small": arch(384, "6,6,5,7,5,5,5,6,6,7,7,6,7",
                      "3.0,3.5,3.0,3.5,4.0,4.0,4.0,4.0,4.0,4.0,4.0,3.5,4.0"),
        "base": arch(576, "9,9,9,9,9,10,9,9,10,9,10,9,9,10",
                     "3.5,3.5,4.0,3.5,4.0,3.5,3.5,3.0,4.0,4.0,3.0,4.0,3.0,3.5"),
    }
