"""The DARTS cell space (Liu, Simonyan & Yang, ICLR 2019), as CDARTS searches it.

A cell has two inputs (the outputs of the two previous cells, nodes 0 and 1) and four intermediate
nodes 2 … 5; its output concatenates the four. Every intermediate node i sums two ops, each applied
to a different earlier node j < i. An arch (a genotype) holds a normal and a reduction cell, each a
list of 8 (op, input) pairs, two per node in node order:

    {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ...], "reduce": [["max_pool_3x3", 0], ...]}

`derive` turns architecture weights (one row of op logits per edge, 14 edges in `EDGES` order) into
that form by DARTS's rule: per edge, the strongest op other than `none`; per node, the two incoming
edges whose strongest such op has the largest weight. `genotype_from_str` / `genotype_to_str` convert
to and from DARTS's printed `Genotype(normal=[...], ...)` (the form the DARTS and CDARTS code publish
their cells in); `DartsSpace.validate` accepts either form, so every arch file goes through one path.

`DartsSpace` (preset `darts-cifar`, family `darts`) is the space as data: its sizes are those of the
evaluation network a genotype is retrained as (`channels`, `layers`; DARTS's CIFAR 36 and 20), and
`search_channels`, `search_layers` those of the mixed search network (16 and 8).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cream.errors import ArchError, ConfigError
from cream.registry import register_family, register_space
from cream.spaces.base import Arch, narrowed, plain

#: candidate ops, in the column order of architecture weights
OPS: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                        "dil_conv_3x3", "dil_conv_5x5")
NODES = 4
#: (input j, node i) of every edge, grouped by node: node 2 ← 0, 1; node 3 ← 0, 1, 2; …
EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for i in range(2, 2 + NODES) for j in range(i))
CELLS = ("normal", "reduce")

#: DARTS (second order) CIFAR-10 cells, as published with the DARTS code (genotypes.py, `DARTS_V2`)
DARTS_V2: Arch = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
}


def validate_genotype(arch: Any) -> Arch:
    """The genotype as plain lists, or a one-line `ConfigError` naming what is wrong."""
    if not isinstance(arch, dict) or set(arch) != set(CELLS):
        raise ConfigError(f"DARTS arch {arch!r} must be a mapping with keys {list(CELLS)}")
    out: Arch = {}
    for cell in CELLS:
        pairs = arch[cell]
        if not isinstance(pairs, Sequence) or len(pairs) != 2 * NODES:
            raise ConfigError(f"DARTS arch '{cell}' = {pairs!r} must list {2 * NODES} [op, input] pairs")
        out[cell] = []
        for k, pair in enumerate(pairs):
            node = 2 + k // 2
            if not (isinstance(pair, Sequence) and len(pair) == 2 and pair[0] in OPS[1:] and isinstance(pair[1], int)
                    and 0 <= pair[1] < node):
                raise ConfigError(f"DARTS arch '{cell}'[{k}] = {pair!r} is not allowed; use [op, input] with op one "
                                  f"of {list(OPS[1:])} and input in 0..{node - 1} (node {node})")
            out[cell].append([pair[0], pair[1]])
        for k in range(0, 2 * NODES, 2):
            if out[cell][k][1] == out[cell][k + 1][1]:
                raise ConfigError(f"DARTS arch '{cell}' node {2 + k // 2} takes input {out[cell][k][1]} twice; "
                                  "its two ops must read two different nodes")
    return out


def derive_cell(weights: torch.Tensor) -> list[list[Any]]:
    """One cell's genotype from its edge weights (edges x `OPS`, e.g. softmax(α)): per node the two incoming
    edges with the largest non-`none` weight, each with that op, the stronger first (ties: the earlier edge,
    the earlier op)."""
    if tuple(weights.shape) != (len(EDGES), len(OPS)):
        raise ValueError(f"edge weights must be {len(EDGES)} x {len(OPS)}, got {tuple(weights.shape)}")
    w = weights.detach().double()[:, 1:]  # `none` excluded
    strength, best = w.max(-1)
    pairs: list[list[Any]] = []
    for node in range(2, 2 + NODES):
        edges = [e for e, (_, i) in enumerate(EDGES) if i == node]
        top = sorted(edges, key=lambda e: (-float(strength[e]), e))[:2]
        pairs += [[OPS[1 + int(best[e])], EDGES[e][0]] for e in top]  # strongest first, as DARTS lists them
    return pairs


def derive(normal: torch.Tensor, reduce: torch.Tensor) -> Arch:
    """The genotype of a normal and a reduction cell's edge weights (DARTS's top-2 rule, `none` excluded)."""
    return {"normal": derive_cell(normal), "reduce": derive_cell(reduce)}


_PAIR = re.compile(r"\(\s*'(\w+)'\s*,\s*(\d+)\s*\)")


def genotype_from_str(text: str) -> Arch:
    """The genotype of DARTS's printed form, `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=...,
    reduce=[...], reduce_concat=...)`, flat (DARTS) or grouped per node (CDARTS); checked by `validate_genotype`."""
    found = re.fullmatch(r"\s*Genotype\(\s*normal\s*=(.*)normal_concat\s*=\s*(.*?),\s*reduce\s*=(.*)"
                         r"reduce_concat\s*=\s*(.*)\)\s*", text, re.S)
    concat = ("range(2, 6)", "[2, 3, 4, 5]", "range(2,6)", "[2,3,4,5]")
    if found is None or found.group(2).strip() not in concat or found.group(4).strip() not in concat:
        raise ArchError(f"DARTS genotype string {text[:60]!r}... is malformed; expected Genotype(normal=[(op, input), "
                        "...], normal_concat=range(2, 6), reduce=[...], reduce_concat=range(2, 6))")
    return validate_genotype({cell: [[op, int(j)] for op, j in _PAIR.findall(found.group(g))]
                              for cell, g in (("normal", 1), ("reduce", 3))})


def genotype_to_str(arch: Arch) -> str:
    """DARTS's printed form of a genotype (flat pair lists, concat range(2, 6)); `genotype_from_str` reads it."""
    arch = validate_genotype(arch)
    cells = {cell: "[" + ", ".join(f"('{op}', {j})" for op, j in arch[cell]) + "]" for cell in CELLS}
    return (f"Genotype(normal={cells['normal']}, normal_concat=range(2, 6), reduce={cells['reduce']}, "
            "reduce_concat=range(2, 6))")


def _gene(cell: str, m: int) -> tuple[str, str]:
    """The decision names of pair m of `cell`: its op and its input."""
    return f"{cell}[{m}].op", f"{cell}[{m}].input"


def _genes(arch: Arch) -> dict[str, tuple[Any, ...]]:
    """Every decision of a (checked) genotype and its value."""
    return {name: (value,) for cell in CELLS for m, pair in enumerate(arch[cell])
            for name, value in zip(_gene(cell, m), pair, strict=True)}


class DartsSpace:
    """The DARTS cell space as data: genotypes, their choices, and the analytic cost of their evaluation network.

    Decisions: `normal[m].op`, `normal[m].input`, `reduce[m].op`, `reduce[m].input` for the 8 pairs of each
    cell (pair m feeds node 2 + m // 2); `restrict` narrows any of them (a node must keep two different
    inputs). `cost` counts the evaluation network (`DartsNetCIFAR` at `channels`, `layers`, `input_size`)
    without its auxiliary head, as DARTS reports model size; MACs are those of convolutions and the linear
    classifier (pools, BN and sums are free).
    """

    family = "darts"

    def __init__(self, num_classes: int = 10, channels: int = 36, layers: int = 20, input_size: int = 32,
                 search_channels: int = 16, search_layers: int = 8, choices: Mapping[str, Sequence[Any]] | None = None,
                 name: str = "darts-cifar") -> None:
        sizes = {"num_classes": num_classes, "channels": channels, "layers": layers, "input_size": input_size,
                 "search_channels": search_channels, "search_layers": search_layers}
        for key, value in sizes.items():
            step = 4 if key == "input_size" else 2 if key.endswith("channels") else 1  # two reductions; FR halves
            if isinstance(value, bool) or not isinstance(value, int) or value < step or value % step:
                raise ConfigError(f"space.{key} = {value!r} is not allowed; use a positive multiple of {step}")
        self.name = name
        self.num_classes, self.channels, self.layers, self.input_size = num_classes, channels, layers, input_size
        self.search_channels, self.search_layers = search_channels, search_layers
        full = {}
        for cell in CELLS:
            for m in range(2 * NODES):
                op, inp = _gene(cell, m)
                full[op], full[inp] = OPS[1:], tuple(range(2 + m // 2))
        self._full = full
        self.allowed: dict[str, tuple[Any, ...]] = narrowed(full, choices or {}, where="space.choices")
        for cell in CELLS:
            for k in range(NODES):
                if not self._input_pairs(cell, k):
                    raise ConfigError(f"space.choices leaves node {2 + k} of the {cell} cell no two different "
                                      f"inputs: {self.allowed[_gene(cell, 2 * k)[1]]} and "
                                      f"{self.allowed[_gene(cell, 2 * k + 1)[1]]}")
        self._costs: dict[str, dict[str, int]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DartsSpace) and self.to_config() == other.to_config()

    def _input_pairs(self, cell: str, k: int) -> list[tuple[int, int]]:
        a, b = self.allowed[_gene(cell, 2 * k)[1]], self.allowed[_gene(cell, 2 * k + 1)[1]]
        return [(i, j) for i in a for j in b if i != j]

    # --- the Space protocol ------------------------------------------------------------------
    def choices(self) -> dict[str, tuple[Any, ...]]:
        return dict(self.allowed)

    def arch_choices(self, arch: Arch) -> dict[str, tuple[Any, ...]]:
        return _genes(self.validate(arch))

    def restrict(self, choices: Mapping[str, Sequence[Any]]) -> DartsSpace:
        return DartsSpace(**{**self._sizes(), "choices": narrowed(self.allowed, choices)})

    def num_archs(self) -> int:
        return math.prod(len(self.allowed[_gene(cell, 2 * k)[0]]) * len(self.allowed[_gene(cell, 2 * k + 1)[0]])
                         * len(self._input_pairs(cell, k)) for cell in CELLS for k in range(NODES))

    def _sizes(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "channels": self.channels, "layers": self.layers,
                "input_size": self.input_size, "search_channels": self.search_channels,
                "search_layers": self.search_layers, "name": self.name}

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"family": self.family, **self._sizes()}
        narrow = {d: list(v) for d, v in self.allowed.items() if v != self._full[d]}
        if narrow:
            cfg["choices"] = plain(narrow)
        return cfg

    def validate(self, arch: Arch | str) -> Arch:
        """The genotype as plain lists (also from DARTS's printed string), within this space's choices."""
        try:
            arch = genotype_from_str(arch) if isinstance(arch, str) else validate_genotype(arch)
        except ConfigError as e:
            raise ArchError(str(e)) from None
        for decision, (value,) in _genes(arch).items():
            if value not in self.allowed[decision]:
                raise ArchError(f"arch field '{decision}' = {value!r} is not allowed; choose one of "
                                f"{list(self.allowed[decision])}")
        return arch

    def sample(self, rng: random.Random) -> Arch:
        arch: Arch = {}
        for cell in CELLS:
            arch[cell] = []
            for k in range(NODES):
                i, j = rng.choice(self._input_pairs(cell, k))
                arch[cell] += [[rng.choice(self.allowed[_gene(cell, 2 * k)[0]]), i],
                               [rng.choice(self.allowed[_gene(cell, 2 * k + 1)[0]]), j]]
        return arch

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """One gene changed: an op, or an input (never to its partner's), drawn uniformly among all such moves."""
        arch = self.validate(arch)
        moves = []
        for cell in CELLS:
            for m, (op, j) in enumerate(arch[cell]):
                partner = arch[cell][m ^ 1][1]
                op_name, input_name = _gene(cell, m)
                moves += [(cell, m, 0, o) for o in self.allowed[op_name] if o != op]
                moves += [(cell, m, 1, i) for i in self.allowed[input_name] if i not in (j, partner)]
        if moves:
            cell, m, field, value = rng.choice(moves)
            arch[cell][m][field] = value
        return arch

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Node by node, both pairs of a node from one parent (so each node keeps two different inputs)."""
        a, b = self.validate(a), self.validate(b)
        return {cell: [pair for k in range(NODES) for pair in rng.choice((a, b))[cell][2 * k:2 * k + 2]]
                for cell in CELLS}

    def cost(self, arch: Arch) -> dict[str, int]:
        arch = self.validate(arch)
        key = genotype_to_str(arch)
        if key not in self._costs:
            self._costs[key] = self._count(arch)
        return dict(self._costs[key])

    def _count(self, arch: Arch) -> dict[str, int]:
        """Params and MACs of `DartsNetCIFAR(arch, num_classes, channels, layers)` at `input_size`, no aux head."""
        c, hw = 3 * self.channels, self.input_size ** 2
        params, macs = 27 * c + 2 * c, 27 * c * hw  # stem conv + BN
        c_pp, c_p, c = c, c, self.channels
        for i in range(self.layers):
            reduction = i in (self.layers // 3, 2 * self.layers // 3)
            c = 2 * c if reduction else c
            # the two input adapters, 1x1 conv + BN (after a reduction, the older one a factorized reduce: the same
            # params, its MACs at the output size, which is this cell's input size)
            params += c_pp * c + 2 * c + c_p * c + 2 * c
            macs += (c_pp + c_p) * c * hw
            out_hw = hw // 4 if reduction else hw
            for op, j in arch["reduce" if reduction else "normal"]:
                stride2 = reduction and j < 2
                k = int(op[-1]) if op.startswith(("sep", "dil")) else 0
                unit_params, unit_macs = k * k * c + c * c + 2 * c, (k * k * c + c * c) * out_hw  # one (dil)conv unit
                if op.startswith("sep"):
                    params, macs = params + 2 * unit_params, macs + 2 * unit_macs
                elif op.startswith("dil"):
                    params, macs = params + unit_params, macs + unit_macs
                elif op == "skip_connect" and stride2:  # factorized reduce
                    params, macs = params + c * c + 2 * c, macs + c * c * out_hw
            hw = out_hw
            c_pp, c_p = c_p, NODES * c
        params += c_p * self.num_classes + self.num_classes
        return {"params": params, "macs": macs + c_p * self.num_classes}


def from_config(**cfg: Any) -> DartsSpace:
    allowed = ("num_classes", "channels", "layers", "input_size", "search_channels", "search_layers", "choices",
               "name")
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f"space keys {unknown} are unknown for family 'darts'; allowed {list(allowed)}")
    return DartsSpace(**cfg)


register_space("darts-cifar", DartsSpace)
register_family("darts", from_config)
