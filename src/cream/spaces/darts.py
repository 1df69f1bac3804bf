"""The DARTS cell space (Liu, Simonyan & Yang, ICLR 2019), as CDARTS searches it.

A cell has two inputs (the outputs of the two previous cells, nodes 0 and 1) and four intermediate
nodes 2 … 5; its output concatenates the four. Every intermediate node i sums two ops, each applied
to a different earlier node j < i. An arch (a genotype) holds a normal and a reduction cell, each a
list of 8 (op, input) pairs, two per node in node order:

    {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ...], "reduce": [["max_pool_3x3", 0], ...]}

`derive` turns architecture weights (one row of op logits per edge, 14 edges in `EDGES` order) into
that form by DARTS's rule: per edge, the strongest op other than `none`; per node, the two incoming
edges whose strongest such op has the largest weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cream.errors import ConfigError
from cream.spaces.base import Arch

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
