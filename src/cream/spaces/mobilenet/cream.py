"""The Cream space (spec §1, §3): stage depths and input size from a FLOPs range, the paper's op ids."""

from __future__ import annotations

from collections.abc import Sequence

from cream.errors import ArchError, ConfigError
from cream.registry import register_space
from cream.spaces.base import Arch, check_choice
from cream.spaces.mobilenet.config import MobileNetConfig, StageConfig
from cream.spaces.mobilenet.cost import op_cost
from cream.spaces.mobilenet.geometry import layer_geometry
from cream.spaces.mobilenet.ops import SKIP, parse_op
from cream.spaces.mobilenet.space import MobileNetSpace

CREAM_OPS = tuple(f"ir_k{k}_e{e}_se" for k in (3, 5, 7) for e in (4, 6))  # op ids 0..5 of the paper
CREAM_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2))  # searchable stages 1..5: width, stride


def _cream_config(layers: Sequence[int], input_size: int, num_classes: int, allow_skip: bool,
                  dropout: float) -> MobileNetConfig:
    later = (*CREAM_OPS, SKIP) if allow_skip else CREAM_OPS
    stages = [StageConfig(16, 1, (("ds_k3_se",),))]
    for (c, s), n in zip(CREAM_STAGES, layers, strict=True):
        stages.append(StageConfig(c, s, (CREAM_OPS,) + (later,) * (n - 1)))
    stages.append(StageConfig(320, 1, (("cn_k1",),)))
    return MobileNetConfig(
        stages=tuple(stages), stem_channels=16, stem_stride=2, head_channels=1280, num_classes=num_classes,
        input_size=input_size, act="swish", se_ratio=0.25, se_gate="hard_sigmoid", dropout=dropout,
        name="cream",
    )


def cream_flops_table() -> tuple[list[list[float]], list[list[float]]]:
    """Spec §4.4: ptflops MFLOPs at 224 of each op as the (first, each later) layer of stages 1..5."""
    cfg = _cream_config([2] * 5, 224, 1000, False, 0.0)
    geo = layer_geometry(cfg)
    first, later = [], []
    for s in range(1, 6):
        g0, g1 = (g for g in geo if g.stage == s)
        first.append([op_cost(parse_op(o), g0, 0.25, "ptflops")[1] / 1e6 for o in CREAM_OPS])
        later.append([op_cost(parse_op(o), g1, 0.25, "ptflops")[1] / 1e6 for o in CREAM_OPS])
    return first, later


def search_for_layer(first: Sequence[Sequence[float]], later: Sequence[Sequence[float]],
                     fmin: float, fmax: float) -> tuple[list[int], int] | None:
    """The original's rule (spec §3) from a FLOPs range [fmin, fmax] (MFLOPs) to (layers per stage
    1..5, input resolution); None where no supernet fits. Reproduced exactly, defects included (§8.12)."""
    sta = [1, 1, 1, 1, 1]
    order = [2, 3, 4, 1, 0, 2, 3, 4, 1, 0]
    limits = [3, 3, 3, 2, 2, 4, 4, 4, 4, 4]
    sf = 7
    lo = sum(first[s][0] for s in range(5))
    hi = sum(first[s][5] for s in range(5))
    if lo > fmax:
        while lo > fmax and sf >= 2:
            sf -= 1
            fmin *= 7 / sf
            fmax *= 7 / sf
        if sf < 2:
            return None
    elif hi < fmin:
        t = 0
        while hi < fmin and t <= 9:
            if sta[order[t]] >= limits[t]:
                t += 1
                continue
            hi += later[order[t]][5]
            sta[order[t]] += 1
        if t > 7 and hi < fmin:
            return None
    t = 0
    while t <= 9:
        if sta[order[t]] >= limits[t]:
            t += 1
            continue
        hi += later[order[t]][5]
        if hi <= fmax:
            sta[order[t]] += 1
        else:
            break
    return sta, 32 * sf


def cream_space(flops_min: float = 0, flops_max: float = 600, num_classes: int = 1000,
                layers: Sequence[int] | None = None, input_size: int | None = None,
                allow_skip: bool = False, dropout: float = 0.0) -> MobileNetSpace:
    """Cream's space (spec §1): depth per stage and input size from the FLOPs range (MFLOPs, ptflops
    convention) by `search_for_layer`, unless `layers` (5 stage depths, 1..6) / `input_size` are given.
    `allow_skip` adds 'skip' to every non-first layer (the original's -1; the paper never samples it)."""
    size = 224
    if layers is None:
        found = search_for_layer(*cream_flops_table(), float(flops_min), float(flops_max))
        if found is None:
            raise ConfigError(
                f"space.flops range [{flops_min}, {flops_max}] MFLOPs fits no Cream supernet; "
                "widen it (the smallest range that fits is about [0, 3])"
            )
        layers, size = found
    if len(layers) != 5 or any(not isinstance(n, int) or not 1 <= n <= 6 for n in layers):
        raise ConfigError(f"space.layers = {list(layers)!r} must be 5 stage depths, each in 1..6")
    cfg = _cream_config(list(layers), input_size or size, num_classes, allow_skip, dropout)
    return MobileNetSpace(cfg, meta={"flops_range": [flops_min, flops_max], "layers": list(layers)})


def arch_from_cream_encoding(encoding: Sequence[Sequence[int]]) -> Arch:
    """Arch from the original's 7 lists of op ids (§2; -1 = skip), e.g. [[0],[3],[3,3],...,[0]]."""
    if len(encoding) != 7 or list(encoding[0]) != [0] or list(encoding[6]) != [0]:
        raise ArchError(f"Cream encoding {encoding!r} must be 7 lists, the first and last being [0]")
    names = {i: o for i, o in enumerate(CREAM_OPS)} | {-1: SKIP}
    mid = [[check_choice(f"encoding[{s + 1}][{i}]", o, list(names)) for i, o in enumerate(st)]
           for s, st in enumerate(encoding[1:6])]
    return {"ops": [["ds_k3_se"], *[[names[o] for o in st] for st in mid], ["cn_k1"]]}



register_space("cream", cream_space)
