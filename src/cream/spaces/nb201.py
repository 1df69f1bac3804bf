"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a DAG of 4 nodes (node 0 = input, node 3 = output) with an operation on each of its
6 edges j -> k (j < k), chosen from 5 ops: 5^6 = 15,625 cells. An arch is `{"ops": [6 names]}`
with the edges in the order of the benchmark's string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`:
(0->1), (0->2), (1->2), (0->3), (1->3), (2->3).

Index order. The benchmark generates every cell with the first edge as the most significant
digit and the last edge fastest (ops in `OPS` order), then shuffles that list with Python's
`random.seed(88); random.shuffle(...)`. Replaying the shuffle gives the official index of every
cell, without the table; tests check all 15,625 rows of the shipped table.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from cream.errors import ArchError, ConfigError
from cream.registry import register_family, register_space
from cream.spaces.base import Arch, check_choice, check_keys, narrowed, plain

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_ARCHS = len(OPS) ** len(EDGES)
_SHUFFLE_SEED = 88
_OP_ID = {op: i for i, op in enumerate(OPS)}
_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"


@functools.cache
def _index_maps() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(code of each index, index of each code), code = the cell's generation-order number."""
    codes = list(range(NUM_ARCHS))
    random.Random(_SHUFFLE_SEED).shuffle(codes)
    index = [0] * NUM_ARCHS
    for i, code in enumerate(codes):
        index[code] = i
    return tuple(codes), tuple(index)


def _code(ops: list[str]) -> int:
    code = 0
    for op in ops:
        code = code * len(OPS) + _OP_ID[op]
    return code


def arch_to_index(arch: Arch) -> int:
    """Official NAS-Bench-201 index (0 … 15624) of a valid arch."""
    return _index_maps()[1][_code(arch["ops"])]


def index_to_arch(index: int) -> Arch:
    """The arch at an official NAS-Bench-201 index."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < NUM_ARCHS:
        raise ArchError(f"NB201 index {index!r} is out of range; allowed 0 … {NUM_ARCHS - 1}")
    code = _index_maps()[0][index]
    ops = []
    for _ in EDGES:
        code, digit = divmod(code, len(OPS))
        ops.append(OPS[digit])
    return {"ops": ops[::-1]}


def arch_to_str(arch: Arch) -> str:
    """The benchmark's cell string, e.g. `|nor_conv_3x3~0|+|…~0|…~1|+|…~0|…~1|…~2|`."""
    ops = arch["ops"]
    groups = [ops[0:1], ops[1:3], ops[3:6]]
    return "+".join("|" + "|".join(f"{op}~{j}" for j, op in enumerate(g)) + "|" for g in groups)


def str_to_arch(text: str) -> Arch:
    """Parse the benchmark's cell string; raise `ArchError` when it is malformed."""
    groups = text.strip().split("+")
    ops: list[str] = []
    if len(groups) == 3:
        for k, group in enumerate(groups, start=1):
            tokens = group.strip("|").split("|")
            if len(tokens) != k or not (group.startswith("|") and group.endswith("|")):
                break
            for j, token in enumerate(tokens):
                op, _, src = token.partition("~")
                if src != str(j) or op not in _OP_ID:
                    break
                ops.append(op)
    if len(ops) != len(EDGES):
        raise ArchError(f"NB201 arch string {text!r} is malformed; expected {_FORMAT} with op in {list(OPS)}")
    return {"ops": ops}


class NB201Space:
    """NAS-Bench-201 cells in the standard CIFAR macro network (for `cost`).

    The network: stem conv3x3 (C) + BN; three stages of `cells_per_stage` cells with C, 2C, 4C
    channels, separated by residual reduction blocks; BN-ReLU-GAP-linear head. Every cell op maps
    C -> C at stride 1, so `avg_pool_3x3` is a bare pool and `skip_connect` an identity.

    `edge_ops` narrows the ops each edge may choose (default: all of `OPS` everywhere); the
    supernet still holds every op, and the benchmark's index and strings are unchanged.
    """

    name = "nb201"
    family = "nb201"
    ops = OPS
    edges = EDGES

    def __init__(
        self, num_classes: int = 10, channels: int = 16, cells_per_stage: int = 5, input_size: int = 32,
        edge_ops: Sequence[Sequence[str]] | None = None,
    ) -> None:
        sizes = {"num_classes": num_classes, "channels": channels, "cells_per_stage": cells_per_stage,
                 "input_size": input_size}
        for field, value in sizes.items():
            step = 4 if field == "input_size" else 1  # two stride-2 reductions
            if isinstance(value, bool) or not isinstance(value, int) or value < step or value % step:
                raise ConfigError(
                    f"space.{field} = {value!r} is not allowed; use a positive multiple of {step}"
                )
        self.num_classes = num_classes
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        self.input_size = input_size
        self.edge_ops: tuple[tuple[str, ...], ...] = (OPS,) * len(EDGES)
        if edge_ops is not None:
            if isinstance(edge_ops, (str, bytes)) or not isinstance(edge_ops, Sequence) or len(edge_ops) != len(EDGES):
                raise ConfigError(f"space.edge_ops = {edge_ops!r} must be {len(EDGES)} lists of op names, one per edge")
            wanted = {f"ops[{e}]": ops for e, ops in enumerate(edge_ops)}
            self.edge_ops = tuple(narrowed(self.choices(), wanted, where="space.edge_ops").values())
        self._costs: dict[tuple[str, ...], dict[str, int]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NB201Space) and self.to_config() == other.to_config()

    def num_archs(self) -> int:
        return math.prod(len(ops) for ops in self.edge_ops)

    def choices(self) -> dict[str, tuple[str, ...]]:
        return {f"ops[{e}]": ops for e, ops in enumerate(self.edge_ops)}

    def arch_choices(self, arch: Arch) -> dict[str, tuple[str, ...]]:
        return {f"ops[{e}]": (op,) for e, op in enumerate(arch["ops"])}

    def restrict(self, choices: Mapping[str, Sequence[str]]) -> NB201Space:
        """This space with edge e allowing only `choices["ops[e]"]` (edges not named keep theirs)."""
        return NB201Space(self.num_classes, self.channels, self.cells_per_stage, self.input_size,
                          edge_ops=list(narrowed(self.choices(), choices).values()))

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"family": self.family, "num_classes": self.num_classes, "channels": self.channels,
                               "cells_per_stage": self.cells_per_stage, "input_size": self.input_size}
        if self.edge_ops != (OPS,) * len(EDGES):
            cfg["edge_ops"] = plain(self.edge_ops)
        return cfg

    def sample(self, rng: random.Random) -> Arch:
        return {"ops": [rng.choice(ops) for ops in self.edge_ops]}

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """The standard NB201 mutation: one random edge (of those with a choice) gets a different op."""
        ops = list(arch["ops"])
        free = [e for e, allowed in enumerate(self.edge_ops) if len(allowed) > 1]
        if free:
            edge = free[rng.randrange(len(free))]
            ops[edge] = rng.choice([op for op in self.edge_ops[edge] if op != ops[edge]])
        return {"ops": ops}

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Uniform crossover edge by edge (any two cells are compatible)."""
        return {"ops": [rng.choice(pair) for pair in zip(a["ops"], b["ops"], strict=True)]}

    def validate(self, arch: Arch | str) -> Arch:
        """Canonical `{"ops": [...]}`; also accepts the benchmark's cell string."""
        if isinstance(arch, str):
            arch = str_to_arch(arch)
        check_keys(arch, ["ops"], where="NB201 arch")
        ops = arch["ops"]
        if not isinstance(ops, list) or len(ops) != len(EDGES):
            raise ArchError(f"NB201 arch field 'ops' = {ops!r} must be a list of {len(EDGES)} op names")
        return {"ops": [check_choice(f"ops[{i}]", op, allowed)
                        for i, (op, allowed) in enumerate(zip(ops, self.edge_ops, strict=True))]}

    def cost(self, arch: Arch) -> dict[str, int]:
        key = tuple(arch["ops"])
        if key not in self._costs:
            self._costs[key] = self._count(self.validate(arch)["ops"])
        return dict(self._costs[key])

    def _count(self, ops: list[str]) -> dict[str, int]:
        """Params (weights + BN affine) and MACs (convs + linear) of the macro network."""
        c, hw = self.channels, self.input_size**2
        params, macs = 3 * 9 * c + 2 * c, 3 * 9 * c * hw  # stem
        for stage in range(3):
            if stage:  # residual reduction block c -> 2c at stride 2
                c_in, c, hw = c, 2 * c, hw // 4
                params += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c + c_in * c
                macs += (9 * c_in * c + 9 * c * c + c_in * c) * hw
            for op in ops:
                k2 = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}.get(op, 0)
                if k2:
                    params += self.cells_per_stage * (k2 * c * c + 2 * c)
                    macs += self.cells_per_stage * k2 * c * c * hw
        params += 2 * c + c * self.num_classes + self.num_classes  # last BN + classifier
        macs += c * self.num_classes
        return {"params": params, "macs": macs}


def from_config(**cfg: Any) -> NB201Space:
    allowed = ("num_classes", "channels", "cells_per_stage", "input_size", "edge_ops")
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f"space keys {unknown} are unknown for family 'nb201'; allowed {list(allowed)}")
    return NB201Space(**cfg)


register_space("nb201", NB201Space)
register_family("nb201", from_config)
