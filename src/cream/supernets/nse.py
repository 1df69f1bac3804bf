"""The NSE supernet: every cell holds one branch per op the space built it with, and gate logits α.

`set_arch({"cells": [[codes], ...]})` selects the branches the following forwards average (a
multi-branch arch, not a single path). `forward_pair` is the α step's forward (spec §4.1): in each
cell with a choice, the selected gate configuration runs with gradients and the unselected one
without, mixed so that the value is the selected output and α gets the two-sample gradient.

α (`arch_parameters`) is one float row per cell over the whole op list (the original made it an
integer tensor, which cannot require a gradient); only the active ops' entries are used. A new
round builds a new supernet from the evolved space, so weights and α start afresh each round.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cream.models.nse import NseBody, NseNet
from cream.registry import MIXED, SINGLE_PATH, register_supernet
from cream.spaces.base import Arch
from cream.spaces.nse import RESIDUAL, NseSpace
from cream.supernets.base import arch_selected


def two_sample_mix(y_s: torch.Tensor, y_u: torch.Tensor, q_s: torch.Tensor, q_u: torch.Tensor) -> torch.Tensor:
    """`y_s(1 + q_s − sg q_s) + sg(y_u)(q_u − sg q_u)`: the value of `y_s`, the gradient of `y_s` to the layers
    below, and ⟨∂L/∂y, y_s⟩ ∂q_s + ⟨∂L/∂y, y_u⟩ ∂q_u to the gate logits."""
    return y_s * (1 + q_s - q_s.detach()) + y_u.detach() * (q_u - q_u.detach())


class NseSupernet(NseBody):
    kind = MIXED

    def __init__(self, space: NseSpace) -> None:
        super().__init__(space, space.built)
        self.alpha = nn.Parameter(torch.zeros(len(space.kinds), len(space.ops)))
        self.arch: Arch = {"cells": [sorted(a) for a in space.active]}

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def set_arch(self, arch: Arch) -> None:
        self.arch = self.space.validate(arch)

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        with arch_selected(self, arch):
            x = self.stem(x)
            for cell, ops in zip(self.cells, self.arch["cells"], strict=True):
                x = cell(x, ops)
            return self.head(x)

    def forward_pair(self, x: torch.Tensor, selected: Arch, unselected: Arch, q_s: Sequence[torch.Tensor | None],
                     q_u: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Cell c outputs `y_s(1 + q_s − sg q_s) + sg(y_u)(q_u − sg q_u)` where `q_s[c]` is given (else `y_s`):
        the value of the selected arch, with ∂/∂q_s = ⟨·, y_s⟩ and ∂/∂q_u = ⟨·, y_u⟩."""
        x = self.stem(x)
        for c, (cell, sel, unsel) in enumerate(zip(self.cells, selected["cells"], unselected["cells"], strict=True)):
            y = cell(x, sel)
            if q_s[c] is not None:
                with torch.no_grad():
                    y_u = cell(x, unsel)
                y = two_sample_mix(y, y_u, q_s[c], q_u[c])
            x = y
        return self.head(x)

    def derive(self, active: Sequence[Sequence[int]] | None = None) -> Arch:
        """Each cell's ops (of `active`, default the space's) with gate probability above 1/2; a transition
        cell keeps at least its most likely op."""
        cells = []
        for c, ops in enumerate(self.space.active if active is None else active):
            a = self.alpha.detach()[c]
            keep = [o for o in ops if a[o] > 0]
            if not keep and ops and self.space.kinds[c] != RESIDUAL:
                keep = [max(ops, key=lambda o, a=a: float(a[o]))]
            cells.append(sorted(keep))
        return {"cells": cells}

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        cells = self.space.validate(arch)["cells"] if arch is not None else self.arch["cells"]
        params = [*self.stem.parameters(), *self.tail.parameters(), *self.classifier.parameters()]
        for cell, ops in zip(self.cells, cells, strict=True):
            params += [p for o in ops for p in cell.branches[str(o)].parameters()]
        return params

    def extract(self, arch: Arch) -> NseNet:
        model = NseNet(self.space, arch)
        mine = self.state_dict()
        model.load_state_dict({k: mine[k] for k in model.state_dict()})
        return model.train(self.training)


register_supernet("nse", MIXED, NseSupernet)
register_supernet("nse", SINGLE_PATH, NseSupernet)
