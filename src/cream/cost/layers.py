"""The layers of an arch as timeable units, per space family, for latency lookup tables.

A unit is one candidate of one layer *in context*: its input shape, stride and widths are part
of its key, so one table serves every space with the same layer geometry, and a narrowed space
(`Space.restrict`) is served by the table of the wide one. An arch's latency is predicted as
the sum of its units plus a measured constant (stem, head and framework overhead).

* MobileNet: each layer's op at that layer (`ir_k5_e6_se|c24-40|s2|h56`); `skip` costs nothing.
* ViT (AutoFormer): one unit per transformer block (embed dim, heads, MLP ratio, tokens), the
  same wherever the block sits, plus the embedding and head at each embed dim (a depth-0 net).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cream.errors import ConfigError
from cream.models.autoformer import AutoFormer
from cream.models.mobilenet import make_block
from cream.nn.vit_blocks import Block
from cream.spaces.base import Arch, Space
from cream.spaces.mobilenet import SKIP


@dataclass(frozen=True)
class Unit:
    """One timeable candidate: how to build it and the shape of one input (no batch dim)."""

    build: Callable[[], nn.Module]
    input_size: tuple[int, ...]


@dataclass(frozen=True)
class LayerUnits:
    """A family's decomposition: every unit a space can use, and the units of one arch."""

    space_units: Callable[[Space], dict[str, Unit]]
    arch_units: Callable[[Space, Arch], list[str]]


def _mobilenet_key(op: str, g: object) -> str:
    return f"{op}|c{g.cin}-{g.cout}|s{g.stride}|h{g.h_in}"


def _mobilenet_space_units(space: Space) -> dict[str, Unit]:
    out = {}
    for g in space.geometry:
        for op in space.allowed[g.stage][g.index]:
            if op != SKIP:
                out[_mobilenet_key(op, g)] = Unit(lambda op=op, g=g: make_block(space.config, op, g),
                                                  (g.cin, g.h_in, g.h_in))
    return out


def _mobilenet_arch_units(space: Space, arch: Arch) -> list[str]:
    ops = arch["ops"]
    return [_mobilenet_key(ops[g.stage][g.index], g) for g in space.geometry if ops[g.stage][g.index] != SKIP]


class _GridBlock(nn.Module):
    """A transformer block fed the token grid it needs, so it times (and exports) like any module."""

    def __init__(self, block: Block, grid: tuple[int, int]) -> None:
        super().__init__()
        self.block, self.grid = block, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.grid)


def _vit_tokens(space: Space) -> int:
    return space.grid[0] * space.grid[1] + 1


def _vit_block_key(space: Space, d: int, h: int, r: float) -> str:
    return f"block|d{d}|h{h}|r{r:g}|n{_vit_tokens(space)}"


def _vit_base_key(space: Space, d: int) -> str:
    return f"embed+head|d{d}|img{space.img_size}|p{space.patch_size}"  # the classifier: the table space's


def _vit_space_units(space: Space) -> dict[str, Unit]:
    out = {}
    for d in space.embed_dims:
        out[_vit_base_key(space, d)] = Unit(
            lambda d=d: AutoFormer(img_size=space.img_size, patch_size=space.patch_size, in_chans=space.in_chans,
                                   num_classes=space.num_classes, embed_dim=d, depth=0, num_heads=[], mlp_ratio=[],
                                   head_dim=space.head_dim, rel_pos=space.rel_pos),
            (space.in_chans, space.img_size, space.img_size))
        for h in space.num_heads:
            for r in space.mlp_ratios:
                out[_vit_block_key(space, d, h, r)] = Unit(
                    lambda d=d, h=h, r=r: _GridBlock(
                        Block(d, h, int(d * r), space.head_dim, space.rel_pos, space.max_relative_position,
                              irpe=space.irpe_config),
                        space.grid),
                    (_vit_tokens(space), d))
    return out


def _vit_arch_units(space: Space, arch: Arch) -> list[str]:
    d = arch["embed_dim"]
    return [_vit_base_key(space, d)] + [_vit_block_key(space, d, h, r)
                                        for h, r in zip(arch["num_heads"], arch["mlp_ratio"], strict=True)]


LAYER_UNITS: dict[str, LayerUnits] = {
    "mobilenet": LayerUnits(_mobilenet_space_units, _mobilenet_arch_units),
    "vit": LayerUnits(_vit_space_units, _vit_arch_units),
}


def layer_units(space: Space) -> LayerUnits:
    """The decomposition of `space`'s family, or a one-line error naming the families that have one."""
    units = LAYER_UNITS.get(space.family)
    if units is None:
        raise ConfigError(f"space {space.name!r} (family {space.family!r}) has no per-layer latency table; "
                          f"tables exist for families {sorted(LAYER_UNITS)} (a latency predictor serves any space)")
    return units
