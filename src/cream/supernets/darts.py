"""The DARTS-space mixed supernet (the search network): every edge of every cell holds all eight ops.

Same skeleton as the genotype network (`cream.models.darts.DartsNetCIFAR`), no auxiliary head; each
edge computes the softmax(α)-weighted sum of its ops, with one α for all normal cells and one for
all reduction cells (edges x `OPS`, `EDGES` order). `derive` applies DARTS's top-2 rule; `extract`
builds the genotype's network with the chosen ops' weights copied in, so that with α one-hot on the
genotype (`none` on the edges it drops) both compute the same function. Unlike DARTS's search
network, BN keeps affine parameters (the genotype network has them; extraction copies them).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from cream.models.darts import DartsNetCIFAR, make_op, preprocess
from cream.spaces.base import Arch
from cream.spaces.darts import EDGES, NODES, OPS, derive, validate_genotype

_EDGE_OP = re.compile(r"cells\.(\d+)\.edges\.(\d+)\.(\w+?)\.(.+)")


class MixedDartsCell(nn.Module):
    """A cell whose 14 edges each hold every op (`edges[e][op]`), mixed by per-edge weights."""

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.pre0, self.pre1 = preprocess(c_prev_prev, c_prev, channels, reduction_prev)
        self.edges = nn.ModuleList([nn.ModuleDict({op: make_op(op, channels, 2 if reduction and j < 2 else 1)
                                                   for op in OPS}) for j, _ in EDGES])

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(2, 2 + NODES):
            total = None
            for e, (j, i) in enumerate(EDGES):
                if i != node:
                    continue
                mixed = sum(weights[e, k] * self.edges[e][op](states[j]) for k, op in enumerate(OPS))
                total = mixed if total is None else total + mixed
            states.append(total)
        return torch.cat(states[2:], dim=1)


class MixedDartsSupernet(nn.Module):
    """The DARTS search network (default C=16, 8 cells, as DARTS searches on CIFAR-10)."""

    def __init__(self, num_classes: int = 10, channels: int = 16, layers: int = 8, stem_multiplier: int = 3) -> None:
        super().__init__()
        self.num_classes, self.channels, self.layers, self.stem_multiplier = num_classes, channels, layers, \
            stem_multiplier
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_curr = 2 * c_curr if reduction else c_curr
            self.cells.append(MixedDartsCell(c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, NODES * c_curr
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def derive(self) -> Arch:
        """The genotype of softmax(α) by DARTS's rule (top-2 incoming edges per node, `none` excluded)."""
        return derive(self.alphas_normal.softmax(-1), self.alphas_reduce.softmax(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normal, reduce = self.alphas_normal.softmax(-1), self.alphas_reduce.softmax(-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(self.global_pool(s1).flatten(1))

    def extract(self, arch: Arch) -> DartsNetCIFAR:
        """The genotype's network at this supernet's sizes, with the chosen ops' weights and BN statistics."""
        arch = validate_genotype(arch)
        net = DartsNetCIFAR(arch, self.num_classes, self.channels, self.layers, auxiliary=False,
                            stem_multiplier=self.stem_multiplier)
        slots = {}  # (cell, edge, op) -> the genotype network's op index in that cell
        for c, cell in enumerate(self.cells):
            pairs = arch["reduce" if cell.reduction else "normal"]
            for m, (op, j) in enumerate(pairs):
                slots[(c, EDGES.index((j, 2 + m // 2)), op)] = m
        state = {}
        for key, value in self.state_dict().items():
            if key in ("alphas_normal", "alphas_reduce"):
                continue
            match = _EDGE_OP.fullmatch(key)
            if match is None:
                state[key] = value
            elif (slot := slots.get((int(match.group(1)), int(match.group(2)), match.group(3)))) is not None:
                state[f"cells.{match.group(1)}.ops.{slot}.{match.group(4)}"] = value
        net.load_state_dict(state)
        return net.to(self.alphas_normal.device).train(self.training)

