"""The DARTS-space mixed supernet (the search network): every edge of every cell holds all eight ops.

Same skeleton as the genotype network (`cream.models.darts.DartsNetCIFAR`), no auxiliary head; each
edge computes the softmax(α)-weighted sum of its ops, with one α for all normal cells and one for
all reduction cells (edges x `OPS`, `EDGES` order). `derive` applies DARTS's top-2 rule; `extract`
builds the genotype's network with the chosen ops' weights copied in, so that with α one-hot on the
genotype (`none` on the edges it drops) both compute the same function. Unlike DARTS's search
network, BN keeps affine parameters (the genotype network has them; extraction copies them).

Built from a `DartsSpace` (`build_supernet(space, "mixed")`) it has the space's search sizes and the
other faces strategies use: `set_arch(genotype)` / `forward(x, arch=...)` run one path (each node the
two ops of the genotype; SETN's and SPOS's weight steps, scoring); `set_sampled` runs GDAS's sampled
one-hot per edge; `top_archs(k)` lists the k genotypes of largest log-probability (SETN's candidates).
`extract` builds the genotype's network at the search sizes (what search scores it as);
`build_model(space, arch)` builds it at the space's evaluation sizes (what retrain trains).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from cream.models.darts import DartsNetCIFAR, make_op, preprocess
from cream.registry import MIXED, register_supernet
from cream.spaces.base import Arch
from cream.spaces.darts import CELLS, EDGES, NODES, OPS, DartsSpace, derive
from cream.supernets.base import arch_selected

_EDGE_OP = re.compile(r"cells\.(\d+)\.edges\.(\d+)\.(\w+?)\.(.+)")


class MixedDartsCell(nn.Module):
    """A cell whose 14 edges each hold every op (`edges[e][op]`), mixed by per-edge weights."""

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.pre0, self.pre1 = preprocess(c_prev_prev, c_prev, channels, reduction_prev)
        self.edges = nn.ModuleList([nn.ModuleDict({op: make_op(op, channels, 2 if reduction and j < 2 else 1)
                                                   for op in OPS}) for j, _ in EDGES])

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor | None = None,
                chosen: list[int] | None = None, pairs: list[list[Any]] | None = None) -> torch.Tensor:
        """Every edge's `weights`-weighted sum of its ops; with `chosen` too, edge e computes only op `chosen[e]`
        times its weight (GDAS's sampled one-hot); or, with `pairs` (a genotype's cell), only its ops."""
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(2, 2 + NODES):
            if pairs is not None:  # summed in the order the genotype's network sums them
                (op_a, a), (op_b, b) = pairs[2 * (node - 2):2 * (node - 1)]
                total = self.edges[EDGES.index((a, node))][op_a](states[a]) + \
                    self.edges[EDGES.index((b, node))][op_b](states[b])
            else:
                total = None
                for e, (j, i) in enumerate(EDGES):
                    if i != node:
                        continue
                    if chosen is not None:
                        mixed = weights[e, chosen[e]] * self.edges[e][OPS[chosen[e]]](states[j])
                    else:
                        mixed = sum(weights[e, k] * self.edges[e][op](states[j]) for k, op in enumerate(OPS))
                    total = mixed if total is None else total + mixed
            states.append(total)
        return torch.cat(states[2:], dim=1)


class MixedDartsSupernet(nn.Module):
    """The DARTS search network (default C=16, 8 cells, as DARTS searches on CIFAR-10)."""

    kind = MIXED

    def __init__(self, num_classes: int = 10, channels: int = 16, layers: int = 8, stem_multiplier: int = 3,
                 space: DartsSpace | None = None) -> None:
        super().__init__()
        self.space = space or DartsSpace(num_classes=num_classes, search_channels=channels, search_layers=layers)
        self.arch: Arch | None = None
        self.sampled: list[tuple[torch.Tensor, list[int]]] | None = None
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
        """α of the normal and of the reduction cells (in `CELLS` order)."""
        return [self.alphas_normal, self.alphas_reduce]

    def derive(self) -> Arch:
        """The genotype of softmax(α) by DARTS's rule (top-2 incoming edges per node, `none` excluded)."""
        return derive(self.alphas_normal.softmax(-1), self.alphas_reduce.softmax(-1))

    def set_arch(self, arch: Arch | str | None) -> None:
        """Run one genotype's path in the next forwards; None returns to the α-weighted mixture."""
        self.arch = None if arch is None else self.space.validate(arch)

    def set_sampled(self, samples: list[tuple[torch.Tensor, list[int]]] | None) -> None:
        """Run the next forwards (with no arch selected) on one sampled (weights, chosen) per α (`CELLS`
        order, as `gumbel_hard` draws them) instead of softmax(α); None returns to softmax(α)."""
        self.sampled = None if samples is None else [(w, list(c)) for w, c in samples]

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        """The selected genotype's path, or `arch`'s if given (without changing the selection), or the mixture."""
        with arch_selected(self, arch):
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch is not None:
            mode = {cell: {"pairs": self.arch[cell]} for cell in CELLS}
        elif self.sampled is not None:
            mode = {cell: {"weights": w, "chosen": c} for cell, (w, c) in zip(CELLS, self.sampled, strict=True)}
        else:
            mode = {cell: {"weights": a.softmax(-1)} for cell, a in zip(CELLS, self.arch_parameters(), strict=True)}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, **mode["reduce" if cell.reduction else "normal"])
        return self.classifier(self.global_pool(s1).flatten(1))

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        """The weights `arch`'s (or the selected genotype's) path uses; with neither, every weight; never α."""
        arch = self.space.validate(arch) if arch is not None else self.arch
        alphas = {id(a) for a in self.arch_parameters()}
        if arch is None:
            return [p for p in self.parameters() if id(p) not in alphas]
        used = {cell: {(EDGES.index((j, 2 + m // 2)), op) for m, (op, j) in enumerate(arch[cell])} for cell in CELLS}
        out = []
        for name, p in self.named_parameters():
            match = _EDGE_OP.fullmatch(name)
            if id(p) in alphas:
                continue
            if match is None or (int(match.group(2)), match.group(3)) in used[
                    "reduce" if self.cells[int(match.group(1))].reduction else "normal"]:
                out.append(p)
        return out

    def top_archs(self, k: int) -> list[tuple[Arch, float]]:
        """The k genotypes of largest log p = Σ log softmax(α_e)[op] over their 16 (edge, op) pairs, best first,
        with that log p (SETN's candidates). Exact: each node's options are scored alone (two different incoming
        edges, an op other than `none` on each, listed stronger first), and the best k sums are merged node by
        node. Options outside a restricted space are left out; ties keep enumeration order."""
        factors = []  # per (cell, node): its k best options
        for cell, alphas in zip(CELLS, self.arch_parameters(), strict=True):
            logp = alphas.detach().double().log_softmax(-1).tolist()
            factors += [sorted(self._node_options(cell, node, logp), key=lambda o: -o[0])[:k]
                        for node in range(2, 2 + NODES)]
        best: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
        for options in factors:
            merged = [(s + t, picks + (i,)) for s, picks in best for i, (t, _) in enumerate(options)]
            best = sorted(merged, key=lambda o: -o[0])[:k]
        out = []
        for score, picks in best:
            pairs = [pair for options, i in zip(factors, picks, strict=True) for pair in options[i][1]]
            out.append(({"normal": pairs[:2 * NODES], "reduce": pairs[2 * NODES:]}, score))
        return out

    def _node_options(self, cell: str, node: int, logp: list[list[float]]) -> list[tuple[float, list[list[Any]]]]:
        """(log p, [[op, input], [op, input]]) of every choice of `node` this space allows, stronger pair first."""
        allowed = self.space.allowed
        m = 2 * (node - 2)
        out = []
        for a in range(node):
            for b in range(a + 1, node):
                for op_a in OPS[1:]:
                    for op_b in OPS[1:]:
                        la, lb = logp[EDGES.index((a, node))][OPS.index(op_a)], logp[EDGES.index((b, node))][
                            OPS.index(op_b)]
                        pairs = [[op_a, a], [op_b, b]] if la >= lb else [[op_b, b], [op_a, a]]
                        if all(op in allowed[f"{cell}[{m + n}].op"] and j in allowed[f"{cell}[{m + n}].input"]
                               for n, (op, j) in enumerate(pairs)):
                            out.append((la + lb, pairs))
        return out

    def extract(self, arch: Arch) -> DartsNetCIFAR:
        """The genotype's network at this supernet's sizes, with the chosen ops' weights and BN statistics."""
        arch = self.space.validate(arch)
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



def build_mixed_darts(space: DartsSpace, **kwargs: Any) -> MixedDartsSupernet:
    """The search network of `space` at its search sizes."""
    return MixedDartsSupernet(space.num_classes, space.search_channels, space.search_layers, space=space, **kwargs)


register_supernet("darts", MIXED, build_mixed_darts)
