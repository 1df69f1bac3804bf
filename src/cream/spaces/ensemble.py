"""Ensembles of K member archs that share their first layers (NEAS, spec §2): a space over a member space.

An ensemble arch lists the layers of the member space (a MobileNet-style space) in order, flat:
the ops of the shared trunk once, then each member's ops of the layers after it,

    {"shared": ["ds_k3_se", "ir_k3_e4_se", ...], "members": [["ir_k5_e6_se", ..., "cn_k1"], [...]]}

so the split point is `len(shared)`: the number of member-space layers the members share (the stem is
always shared; every member has its own head). Member k's whole network is `shared + members[k]`.
Members are ordered: swapping two of them gives another arch (`num_archs` counts both).

Costs count the trunk once and each member's layers and head once per member (spec §2.2), so a MACs
limit on an ensemble is a limit on what inference really computes.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cream import registry
from cream.errors import ArchError, ConfigError
from cream.registry import register_family
from cream.spaces.base import Arch, check_choice, check_keys, narrowed
from cream.spaces.mobilenet import MobileNetSpace
from cream.spaces.mobilenet.cost import stem_cost
from cream.spaces.mobilenet.space import from_config as member_from_config

SPLIT = "split"


def stage_boundaries(member: MobileNetSpace) -> tuple[int, ...]:
    """Split points between stages, strictly inside the network (NEAS's default: {0, 4, ..., 20} + 1)."""
    ends, n = [], 0
    for st in member.config.stages:
        n += len(st.ops)
        ends.append(n)
    return tuple(e for e in ends if 0 < e < len(member.geometry))


@dataclass
class EnsembleSpace:
    """K member archs of `member` sharing a trunk of `len(shared)` layers, the split chosen from `splits`."""

    member: MobileNetSpace
    members: int = 2
    splits: Any = None  # allowed split points (member-space layers in the trunk); None: the stage boundaries
    mutate_split_prob: float = 0.2  # chance that a mutation moves the split to a neighbouring allowed one

    family = "ensemble"

    def __post_init__(self) -> None:
        if not isinstance(self.member, MobileNetSpace):
            raise ConfigError(f"space.member must be a MobileNet-style space, got {type(self.member).__name__}")
        if isinstance(self.members, bool) or not isinstance(self.members, int) or self.members < 2:
            raise ConfigError(f"space.members = {self.members!r} must be an integer >= 2 (an ensemble has K >= 2)")
        n = len(self.member.geometry)
        splits = stage_boundaries(self.member) if self.splits is None else self.splits
        if isinstance(splits, (str, bytes)) or not isinstance(splits, Sequence) or not splits or any(
                isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= n for s in splits):
            raise ConfigError(f"space.splits = {splits!r} must be a non-empty list of split points in 0..{n}")
        self.splits = tuple(sorted(set(splits)))
        if not 0 <= self.mutate_split_prob <= 1:
            raise ConfigError(f"space.mutate_split_prob = {self.mutate_split_prob!r} must be in [0, 1]")
        self.name = f"{self.member.name}-ensemble{self.members}"
        self.conventions = self.member.conventions
        self.geometry = self.member.geometry

    # --- layers -----------------------------------------------------------------------------
    def layer_choices(self) -> list[tuple[str, ...]]:
        """The ops each member-space layer allows, in flat layer order."""
        return [self.member.allowed[g.stage][g.index] for g in self.geometry]

    def member_arch(self, arch: Arch, k: int) -> Arch:
        """Member k's whole network as an arch of the member space."""
        flat = [*arch["shared"], *arch["members"][k]]
        return {"ops": [[flat[i] for i, g in enumerate(self.geometry) if g.stage == s]
                        for s in range(len(self.member.config.stages))]}

    def _flat(self, member_arch: Arch) -> list[str]:
        return [member_arch["ops"][g.stage][g.index] for g in self.geometry]

    # --- protocol ---------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Arch:
        """A split from `splits`, then every layer's op uniformly, trunk once and each member independently."""
        split = rng.choice(self.splits)
        flats = [self._flat(self.member.sample(rng)) for _ in range(self.members)]
        return {"shared": flats[0][:split], "members": [f[split:] for f in flats]}

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """Move the split to a neighbouring allowed one (prob `mutate_split_prob`), then re-draw each
        searchable layer of the trunk and of every member with the member space's `mutate_prob`;
        where nothing changed, one gene does, so the child always differs from its parent."""
        arch = self.validate(arch)
        split = len(arch["shared"])
        flats = [[*arch["shared"], *m] for m in arch["members"]]
        changed = False
        i = self.splits.index(split)
        near = [self.splits[j] for j in (i - 1, i + 1) if 0 <= j < len(self.splits)]
        if near and rng.random() < self.mutate_split_prob:
            split, changed = rng.choice(near), True
            flats = [flats[0][:split] + f[split:] for f in flats]  # newly shared layers take member 0's ops
        choices = self.layer_choices()
        # genes: (member or None for the trunk, layer)
        genes = [(None, g) for g in range(split) if len(choices[g]) > 1]
        genes += [(k, g) for k in range(self.members) for g in range(split, len(choices)) if len(choices[g]) > 1]
        picked = [x for x in genes if rng.random() < self.member.config.mutate_prob]
        if not picked and not changed and genes:
            picked = [rng.choice(genes)]
        for k, g in picked:
            new = rng.choice([o for o in choices[g] if o != flats[k or 0][g]])
            for f in (flats if k is None else [flats[k]]):
                f[g] = new
        return {"shared": flats[0][:split], "members": [f[split:] for f in flats]}

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch | None:
        """Gene by gene for the trunk and member by member (member k of either parent); the split is a
        parent's. Parents with different splits are first cut at the child's split (trunk: member 0's ops)."""
        a, b = self.validate(a), self.validate(b)
        split = rng.choice([len(a["shared"]), len(b["shared"])])
        fa = [[*a["shared"], *m] for m in a["members"]]
        fb = [[*b["shared"], *m] for m in b["members"]]
        shared = [rng.choice(pair) for pair in zip(fa[0][:split], fb[0][:split], strict=True)]
        members = [rng.choice((x, y))[split:] for x, y in zip(fa, fb, strict=True)]
        return {"shared": shared, "members": members}

    def validate(self, arch: Arch) -> Arch:
        """Canonical form; an `ArchError` names the field, the value and what is allowed."""
        check_keys(arch, ["shared", "members"])
        shared, members = arch["shared"], arch["members"]
        if not isinstance(shared, list):
            raise ArchError(f"arch field 'shared' must be a list of op names, got {shared!r}")
        check_choice(SPLIT + " (= len(shared))", len(shared), self.splits)
        n, split = len(self.geometry), len(shared)
        if not isinstance(members, list) or len(members) != self.members:
            raise ArchError(f"arch field 'members' must be a list of {self.members} member lists, got {members!r}")
        choices = self.layer_choices()
        out_shared = [check_choice(f"shared[{g}]", op, choices[g]) for g, op in enumerate(shared)]
        out_members = []
        for k, m in enumerate(members):
            if not isinstance(m, list) or len(m) != n - split:
                raise ArchError(f"arch field 'members[{k}]' must list the ops of the {n - split} layers after "
                                f"the split {split}, got {m!r}")
            out_members.append([check_choice(f"members[{k}][{j}]", op, choices[split + j]) for j, op in enumerate(m)])
        return {"shared": out_shared, "members": out_members}

    def cost(self, arch: Arch, convention: str = "plain") -> dict[str, int]:
        """`{"params", "macs"}`: the stem and trunk layers once, each member's layers and head once per member."""
        arch = self.validate(arch)
        _, _, layers = self.member._cost_table(convention)
        trunk_p, trunk_m = stem_cost(self.member.config, convention)
        for g, op in enumerate(arch["shared"]):
            p, m = layers[g][op]
            trunk_p, trunk_m = trunk_p + p, trunk_m + m
        total = {"params": -(self.members - 1) * trunk_p, "macs": -(self.members - 1) * trunk_m}
        for k in range(self.members):
            c = self.member.cost(self.member_arch(arch, k), convention=convention)
            total = {key: total[key] + c[key] for key in total}
        return total

    def num_archs(self) -> int:
        sizes = [len(c) for c in self.layer_choices()]
        return sum(math.prod(sizes[:s]) * math.prod(sizes[s:]) ** self.members for s in self.splits)

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """`split` and the member space's decisions (`ops[s][i]`), which trunk and members share."""
        return {SPLIT: self.splits, **self.member.choices()}

    def arch_choices(self, arch: Arch) -> dict[str, tuple[Any, ...]]:
        arch = self.validate(arch)
        out: dict[str, tuple[Any, ...]] = {SPLIT: (len(arch["shared"]),)}
        for k in range(self.members):
            for d, (op,) in self.member.arch_choices(self.member_arch(arch, k)).items():
                out[d] = out.get(d, ()) + ((op,) if op not in out.get(d, ()) else ())
        return out

    def restrict(self, choices: Mapping[str, Sequence[Any]]) -> EnsembleSpace:
        cut = narrowed(self.choices(), choices)
        member = self.member.restrict({d: v for d, v in cut.items() if d != SPLIT})
        return dataclasses.replace(self, member=member, splits=cut[SPLIT])

    def to_config(self) -> dict[str, Any]:
        return {"family": self.family, "member": self.member.to_config(), "members": self.members,
                "splits": list(self.splits), "mutate_split_prob": self.mutate_split_prob}


def from_config(**cfg: Any) -> EnsembleSpace:
    """The `ensemble` family: `member` (a MobileNet-style space config or preset), `members` (K), `splits`."""
    unknown = sorted(set(cfg) - {"member", "members", "splits", "mutate_split_prob", "num_classes"})
    if unknown:
        raise ConfigError(f"space has unknown keys {unknown}; allowed: member, members, splits, mutate_split_prob")
    if "member" not in cfg:
        raise ConfigError("space.member is missing; give the member space (a mapping or a preset name)")
    member = cfg.pop("member")
    classes = cfg.pop("num_classes", None)
    extra = {"num_classes": classes} if classes else {}
    if isinstance(member, str) and member in registry.PRESETS:
        member = registry.PRESETS[member](**extra)
    elif isinstance(member, dict) and member.get("family", "mobilenet") == "mobilenet":
        member = member_from_config(**{**{k: v for k, v in member.items() if k != "family"}, **extra})
    else:
        raise ConfigError(f"space.member = {member!r} must be a MobileNet-style space mapping or preset name")
    return EnsembleSpace(member, **cfg)


register_family("ensemble", from_config)
