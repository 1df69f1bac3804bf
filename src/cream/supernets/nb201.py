"""The NAS-Bench-201 one-shot supernet: every cell edge holds all five candidate ops.

All cells share one arch (as in the benchmark), but each cell has its own weights. `set_arch`
picks one op per edge for the following forwards (single path, as SPOS trains it); `extract`
builds the standalone `NB201Net` and copies the chosen ops' weights into it. The standalone
network uses the same blocks under the same names, minus the op-name level of the supernet's
edges, so its eval output equals the supernet's for that arch.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from cream.models.nb201 import NB201Macro, NB201Net, build_nb201, cell_forward, make_op
from cream.registry import SINGLE_PATH, register_supernet
from cream.spaces.base import Arch
from cream.spaces.nb201 import EDGES, OPS, NB201Space
from cream.supernets.base import arch_selected

_EDGE_OP = re.compile(r"(cells\.\d+\.edges\.\d+)\.(\w+)\.(.+)")


class MixedCell(nn.Module):
    """A cell whose every edge holds one block per candidate op (`edges[e][op]`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            [nn.ModuleDict({op: m for op in OPS if (m := make_op(op, channels)) is not None}) for _ in EDGES]
        )
        self.ops: list[str] = ["none"] * len(EDGES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cell_forward(x, [None if op == "none" else edge[op] for op, edge in zip(self.ops, self.edges,
                                                                                           strict=True)])


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
            if m is None:
                state[key] = value
            elif arch["ops"][int(m.group(1).rsplit(".", 1)[1])] == m.group(2):
                state[f"{m.group(1)}.{m.group(3)}"] = value
        net.load_state_dict(state)  # copies into the net's own tensors
        return net.to(next(self.parameters()).device).train(self.training)


register_supernet("nb201", SINGLE_PATH, NB201Supernet)
