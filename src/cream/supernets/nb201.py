"""The NAS-Bench-201 one-shot supernets: every cell edge holds all five candidate ops.

All cells share one arch (as in the benchmark), but each cell has its own weights. `set_arch`
picks one op per edge for the following forwards (single path, as SPOS trains it); `extract`
builds the standalone `NB201Net` and copies the chosen ops' weights into it. The standalone
network uses the same blocks under the same names, minus the op-name level of the supernet's
edges, so its eval output equals the supernet's for that arch.

The mixed supernet (DARTS-style) has the same weights plus architecture parameters α (one row of
op logits per edge, shared by all cells, as in the benchmark's DARTS): with no arch selected,
every edge computes the softmax(α)-weighted sum of its candidates (`none` adds zero).
"""

from __future__ import annotations

import itertools
import re

import torch
from torch import nn

from cream.models.nb201 import NB201Macro, NB201Net, build_nb201, cell_forward, make_op
from cream.registry import MIXED, SINGLE_PATH, register_supernet
from cream.spaces.base import Arch
from cream.spaces.nb201 import EDGES, OPS, NB201Space
from cream.supernets.base import arch_selected

_EDGE_OP = re.compile(r"(cells\.\d+\.edges\.\d+)\.(\w+)\.(.+)")
_OP_INDEX = {op: i for i, op in enumerate(OPS)}


class MixedCell(nn.Module):
    """A cell whose every edge holds one block per candidate op (`edges[e][op]`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            [nn.ModuleDict({op: m for op in OPS if (m := make_op(op, channels)) is not None}) for _ in EDGES]
        )
        self.ops: list[str] = ["none"] * len(EDGES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None,
                chosen: list[int] | None = None) -> torch.Tensor:
        """The selected ops (`self.ops`), or with `weights` (edges x `OPS`) every edge's weighted sum; with
        `chosen` too, edge e computes only its op `chosen[e]`, times its weight (a sampled one-hot)."""
        if weights is None:
            return cell_forward(x, [None if op == "none" else edge[op] for op, edge in zip(self.ops, self.edges,
                                                                                               strict=True)])
        if chosen is not None:
            return cell_forward(x, [None if OPS[c] == "none" else _scaled(edge[OPS[c]], w[c])
                                    for edge, w, c in zip(self.edges, weights, chosen, strict=True)])
        return cell_forward(x, [_weighted(edge, w) for edge, w in zip(self.edges, weights, strict=True)])


def _scaled(block: nn.Module, w: torch.Tensor):
    """One op times its (straight-through) weight, so that the weight's gradient reaches α."""
    return lambda x: w * block(x)


def _weighted(edge: nn.ModuleDict, w: torch.Tensor):
    """An edge's mixed op: sum of w[op] x op(x) over its blocks (`none` has none and adds zero)."""
    return lambda x: sum(w[_OP_INDEX[op]] * block(x) for op, block in edge.items())


class NB201Supernet(NB201Macro):
    """Shared weights of the whole NB201 space (the space's macro network sizes)."""

    kind = SINGLE_PATH

    def __init__(self, space: NB201Space) -> None:
        super().__init__(MixedCell, space.num_classes, space.channels, space.cells_per_stage, space.input_size)
        self.space = space
        self.arch: Arch | None = None
        self.set_arch({"ops": ["nor_conv_3x3" if "nor_conv_3x3" in ops else ops[0] for ops in space.edge_ops]})

    def set_arch(self, arch: Arch | str) -> None:
        """Select the op of every edge (in every cell) for the next forwards."""
        self.arch = self.space.validate(arch)
        for cell in self.cells:
            if isinstance(cell, MixedCell):
                cell.ops = list(self.arch["ops"])

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        """Run the selected arch, or `arch` if given (without changing the selection)."""
        with arch_selected(self, arch):
            return super().forward(x)

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        """Everything but the blocks of the ops `arch` does not choose."""
        ops = self.arch["ops"] if arch is None else self.space.validate(arch)["ops"]
        unused = {id(p) for cell in self.cells if isinstance(cell, MixedCell)
                  for op, edge in zip(ops, cell.edges, strict=True)
                  for name, block in edge.items() if name != op for p in block.parameters()}
        return [p for p in self.parameters() if id(p) not in unused]

    def extract(self, arch: Arch | str) -> NB201Net:
        """The standalone network of `arch` with the supernet's weights and BN statistics copied in."""
        arch = self.space.validate(arch)
        net = build_nb201(self.space, arch)
        state = {}
        for key, value in self.state_dict().items():
            m = _EDGE_OP.fullmatch(key)
            if key == "alphas":
                continue  # the mixed supernet's architecture parameters
            if m is None:
                state[key] = value
            elif arch["ops"][int(m.group(1).rsplit(".", 1)[1])] == m.group(2):
                state[f"{m.group(1)}.{m.group(3)}"] = value
        net.load_state_dict(state)  # copies into the net's own tensors
        return net.to(next(self.parameters()).device).train(self.training)


class MixedNB201Supernet(NB201Supernet):
    """The NB201 supernet with architecture parameters (DARTS-style): `alphas` (edges x ops, shared by all
    cells). With no arch selected (the default, or `set_arch(None)`) every edge computes the
    softmax(α)-weighted sum of its ops; `set_arch(arch)` or `forward(x, arch=...)` runs one path, as the
    single-path supernet does (to score or extract an arch with the shared weights)."""

    kind = MIXED

    def __init__(self, space: NB201Space) -> None:
        super().__init__(space)
        self.alphas = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))
        self.arch = None
        self.sampled: tuple[torch.Tensor, list[int]] | None = None

    def set_sampled(self, samples: list[tuple[torch.Tensor, list[int]]] | None) -> None:
        """Run the next forwards (with no arch selected) on sampled edge weights instead of softmax(α): with
        `samples` = [(weights, chosen)] (one per architecture parameter: here one), edge e computes only op
        `chosen[e]`, times `weights[e, chosen[e]]` (GDAS's straight-through one-hot, whose gradient reaches α).
        None returns to softmax(α)."""
        if samples is not None and len(samples) != 1:
            raise ValueError(f"the NB201 supernet has one architecture parameter; got {len(samples)} samples")
        self.sampled = None if samples is None else (samples[0][0], list(samples[0][1]))

    def set_arch(self, arch: Arch | str | None) -> None:
        """Select one path for the next forwards; None returns to the α-weighted mixture."""
        if arch is None:
            self.arch = None
        else:
            super().set_arch(arch)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas]

    def edge_weights(self) -> torch.Tensor:
        """softmax(α) per edge (edges x `OPS`)."""
        return self.alphas.softmax(-1)

    def derive(self) -> Arch:
        """The arch α prefers: the op of largest α on each edge (the first on ties)."""
        return {"ops": [OPS[i] for i in self.alphas.detach().argmax(-1).tolist()]}

    def log_probs(self) -> torch.Tensor:
        """log p(arch) of every arch of the space under p = Π_e softmax(α_e) (float64, `space_archs` order)."""
        table = self.alphas.detach().double().log_softmax(-1)
        index = torch.tensor([[_OP_INDEX[op] for op in a["ops"]] for a in self.space_archs()], device=table.device)
        return table[torch.arange(len(EDGES), device=table.device), index].sum(-1)

    def space_archs(self) -> list[Arch]:
        """Every arch of the (possibly restricted) space, in lexicographic order of its edges' op lists."""
        return [{"ops": list(ops)} for ops in itertools.product(*self.space.edge_ops)]

    def top_archs(self, k: int) -> list[tuple[Arch, float]]:
        """The k most probable archs under softmax(α) with their log-probabilities, best first; ties keep
        `space_archs` order (SETN's deterministic candidates)."""
        logp = self.log_probs()
        order = torch.sort(logp, descending=True, stable=True).indices[:k].tolist()
        archs = self.space_archs()
        return [(archs[i], float(logp[i])) for i in order]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = None, None
        if self.arch is None:
            weights, chosen = self.sampled if self.sampled is not None else (self.edge_weights(), None)
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights, chosen) if isinstance(cell, MixedCell) else cell(x)
        return self.act(self.norm(x))

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        """The weights `arch`'s forward uses (with no arch and none selected: every weight), never α."""
        if arch is None and self.arch is None:
            return [p for p in self.parameters() if p is not self.alphas]
        return [p for p in super().path_parameters(arch) if p is not self.alphas]


register_supernet("nb201", SINGLE_PATH, NB201Supernet)
register_supernet("nb201", MIXED, MixedNB201Supernet)
