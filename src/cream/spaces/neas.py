"""The NEAS space (spec §2.2): K-member ensembles of a MobileNetV3-like backbone, and the released flat encoding.

Member backbone: stem conv 3x3 s2 -> 16 (BN, Swish); a fixed DS block (k3, SE, 16); five stages of four
layers (widths 24, 40, 80, 112, 160; first strides 2, 2, 2, 1, 2), each layer one of the paper's op ids
`0:(k3,e4) 1:(k3,e6) 2:(k5,e4) 3:(k5,e6) 4:(k7,e4) 5:(k7,e6)` (IR + SE) or `-1` (layer removed, never
on a stage's first layer); a 1x1 conv -> 960; pool; conv_head 960 -> 1280 with bias; FC.

Flat encoding `[s, K, shared..., member_1..., ..., member_K...]`: `shared` is a DS placeholder then the
ops of searchable layers 0..s-1; each member lists layers s..19 then a placeholder for the 960 conv.
In our ensemble arch the DS block and the 960 conv are layers too, so the split is `s + 1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cream.errors import ArchError
from cream.registry import register_space
from cream.spaces.base import Arch, check_choice
from cream.spaces.ensemble import EnsembleSpace
from cream.spaces.mobilenet import CREAM_OPS, SKIP, MobileNetConfig, MobileNetSpace, StageConfig

NEAS_STAGES = ((24, 2), (40, 2), (80, 2), (112, 1), (160, 2))  # searchable stages: width, first stride
NEAS_LAYERS = 20  # searchable layers (5 stages x 4)
NEAS_OPS = {i: op for i, op in enumerate(CREAM_OPS)} | {-1: SKIP}
FIRST, LAST = "ds_k3_se", "cn_k1"

#: name -> (published flat encoding, the MACs in its name, README top-1)
PUBLISHED: dict[str, tuple[list[int], int, float]] = {
    "neas_s": ([20, 2, 0, 0, -1, 0, 2, 0, 0, 2, -1, 0, -1, 0, 3, 2, 4, 0, 2, 5, 0, 4, 3, 0, 0], 314, 77.9),
    "neas_m": ([16, 2, 0, 3, 2, 0, 2, 5, 0, -1, 3, 0, 2, 0, 0, 3, 5, 4, 0, 5, 0, 5, 4, 0, 3, 5, 2, 5, 0],
               472, 79.5),
    "neas_l": ([16, 2, 0, 5, 5, 1, 3, 5, 1, 3, 4, 1, 2, 5, 4, 1, 3, 3, 1, 3, 1, 5, 1, 0, 5, 4, 4, 3, 0],
               574, 80.0),
}


def neas_member_space(num_classes: int = 1000, input_size: int = 224, dropout: float = 0.0) -> MobileNetSpace:
    """One member's whole network as a MobileNet-style space (spec §2.2)."""
    later = (*CREAM_OPS, SKIP)
    stages = [StageConfig(16, 1, ((FIRST,),))]
    stages += [StageConfig(c, s, (CREAM_OPS,) + (later,) * 3) for c, s in NEAS_STAGES]
    stages.append(StageConfig(960, 1, ((LAST,),)))
    cfg = MobileNetConfig(stages=tuple(stages), stem_channels=16, stem_stride=2, head_channels=1280,
                          num_classes=num_classes, input_size=input_size, act="swish", se_ratio=0.25,
                          se_gate="hard_sigmoid", dropout=dropout, name="neas")
    return MobileNetSpace(cfg)


def neas_space(members: int = 2, num_classes: int = 1000, input_size: int = 224, dropout: float = 0.0,
               splits: Sequence[int] | None = None, mutate_split_prob: float = 0.2) -> EnsembleSpace:
    """The NEAS ensemble space; `splits` in our convention (NEAS's s + 1; default: s in {0, 4, ..., 20})."""
    return EnsembleSpace(neas_member_space(num_classes, input_size, dropout), members, splits, mutate_split_prob)


def arch_from_neas_encoding(flat: Sequence[int]) -> Arch:
    """Our ensemble arch of a released flat encoding (spec §2.2), placeholders checked to be there."""
    if len(flat) < 2 or any(isinstance(x, bool) or not isinstance(x, int) for x in flat):
        raise ArchError(f"NEAS encoding {list(flat)!r} must be a list of integers [s, K, ...]")
    s, k = flat[0], flat[1]
    check_choice("encoding[0] (split s)", s, range(NEAS_LAYERS + 1))
    if k < 2 or len(flat) != 2 + (s + 1) + k * (NEAS_LAYERS + 1 - s):
        raise ArchError(f"NEAS encoding of length {len(flat)} does not fit s={s}, K={k}: "
                        f"it needs 2 + (s+1) + K*(21-s) = {2 + (s + 1) + k * (NEAS_LAYERS + 1 - s)} entries")
    ops = [check_choice(f"encoding[{i}]", x, list(NEAS_OPS)) for i, x in enumerate(flat[2:], start=2)]
    trunk, rest = ops[1:s + 1], ops[s + 1:]
    size = NEAS_LAYERS - s + 1
    members = [rest[i * size:(i + 1) * size - 1] for i in range(k)]
    return {"shared": [FIRST, *(NEAS_OPS[o] for o in trunk)],
            "members": [[*(NEAS_OPS[o] for o in m), LAST] for m in members]}


def neas_encoding(arch: Arch) -> list[int]:
    """The released flat encoding of our ensemble arch of the NEAS space (placeholders 0)."""
    ids = {op: i for i, op in NEAS_OPS.items()}
    shared, members = arch["shared"], arch["members"]
    return [len(shared) - 1, len(members), 0, *(ids[o] for o in shared[1:]),
            *(x for m in members for x in (*(ids[o] for o in m[:-1]), 0))]


def published(name: str, num_classes: int = 1000) -> tuple[EnsembleSpace, Arch]:
    """The NEAS space (K of the released model) and the released model's arch."""
    flat = PUBLISHED[name][0]
    space = neas_space(members=flat[1], num_classes=num_classes, splits=[flat[0] + 1])
    return space, space.validate(arch_from_neas_encoding(flat))


def _preset(**kwargs: Any) -> EnsembleSpace:
    return neas_space(**kwargs)


register_space("neas", _preset)
