"""CDARTS's controller on the staged DARTS space: the search and the evaluation network in one module
(spec §6.1; `cream.spaces.darts_stages`).

* Shared: the stem, the two auxiliary heads (at the ends of stages 0 and 1, or of the last two stages
  before the final one) and the ensemble weights π.
* The search network: `search_cells[s]` mixed cells per stage (`MixedDartsCell`), with α of its own per
  stage (`alphas[s]`: normal and reduction rows), and its classifier.
* The evaluation network: `eval_cells[s]` cells per stage, each holding every op of every edge but
  running only its stage's genotype (`genotypes[s]`), so that one parameter set serves every genotype
  (one SGD and a checkpoint that does not change shape); its own classifier.

Progressive search (`stage`): the search network runs the evaluation cells of the stages before
`stage` (frozen genotypes), then its own mixed cells from `stage` on. Each network returns
(logits, em) with em = concat_k softmax(π)_k · logits_k over the two auxiliary heads and the
classifier, concatenated along the batch as the original does (`ensemble_sum`: summed instead).

Op weights move between the networks cell by cell by position in a stage: the reduction cell with
the reduction cell, normal cell i with search normal cell min(i, last); the evaluation network's
extra normal cells take the last search normal cell's ops and never give them back. Copied are the
genotype's ops (weights and BN statistics) and the cell's input preprocessing where its widths agree.
"""

from __future__ import annotations

import torch
from torch import nn

from cream.registry import MIXED, register_supernet
from cream.spaces.base import Arch
from cream.spaces.darts import EDGES, NODES, OPS, derive
from cream.spaces.darts_stages import DartsStagesSpace, stage_cells
from cream.supernets.darts import MixedDartsCell


class PathCell(MixedDartsCell):
    """An evaluation cell: all ops held, the genotype's eight run (node 2 + k sums pairs 2k and 2k + 1)."""

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, pairs: list[list]) -> torch.Tensor:  # type: ignore[override]
        states = [self.pre0(s0), self.pre1(s1)]
        for k in range(NODES):
            node = 2 + k
            states.append(sum(self.edges[EDGES.index((j, node))][op](states[j]) for op, j in pairs[2 * k:2 * k + 2]))
        return torch.cat(states[2:], dim=1)


class DistillHead(nn.Sequential):
    """An auxiliary classifier for any input resolution (CDARTS's distillation heads; pooled to 2x2 first)."""

    def __init__(self, channels: int, num_classes: int, hidden: tuple[int, int] = (128, 768)) -> None:
        a, b = hidden
        super().__init__(nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Conv2d(channels, a, 1, bias=False),
                         nn.BatchNorm2d(a), nn.ReLU(), nn.Conv2d(a, b, 2, bias=False), nn.BatchNorm2d(b),
                         nn.ReLU(), nn.Flatten(), nn.Linear(b, num_classes))


def ensemble_output(logits: list[torch.Tensor], pi: torch.Tensor, summed: bool) -> torch.Tensor:
    """em = concat_k softmax(π)_k · logits_k along the batch (or their sum)."""
    w = pi.softmax(0)
    terms = [w[k] * out for k, out in enumerate(logits)]
    return torch.stack(terms).sum(0) if summed else torch.cat(terms, dim=0)


class CdartsDartsNet(nn.Module):
    """The two networks of CDARTS on `space` (a `DartsStagesSpace`)."""

    kind = MIXED

    def __init__(self, space: DartsStagesSpace, stem_multiplier: int = 3, ensemble_param: bool = False,
                 ensemble_sum: bool = False, head_channels: tuple[int, int] | list[int] = (128, 768)) -> None:
        super().__init__()
        self.space, self.ensemble_sum = space, ensemble_sum
        c = stem_multiplier * space.channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        stages = space.stages
        head_at = [max(stages - 3, 0), max(stages - 2, 0)]  # the stage whose end each auxiliary head reads
        self.search_stages, widths = self._stages(space.search_cells, MixedDartsCell, stem_multiplier)
        self.eval_stages, _ = self._stages(space.eval_cells, PathCell, stem_multiplier)
        self.aux_heads = nn.ModuleList([DistillHead(widths[s], space.num_classes, tuple(head_channels))
                                        for s in head_at])
        width = widths[-1]
        self.search_classifier = nn.Linear(width, space.num_classes)
        self.eval_classifier = nn.Linear(width, space.num_classes)
        self.head_at = head_at
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        #: π: learnable with `ensemble_param`, else fixed uniform (softmax of zeros)
        self.pi = nn.Parameter(torch.zeros(3), requires_grad=ensemble_param)
        self.alphas = nn.ParameterList([nn.Parameter(1e-3 * torch.randn(2, len(EDGES), len(OPS)))
                                        for _ in range(stages)])
        #: the evaluation network's genotype of every stage (None until built) and the stage being searched
        self.genotypes: list[Arch | None] = [None] * stages
        self.stage = 0

    def _stages(self, cells: tuple[int, ...], cls: type, stem_multiplier: int) -> tuple[nn.ModuleList, list[int]]:
        """The cells of each stage, and each stage's output width."""
        c_curr = stem_multiplier * self.space.channels
        c_pp, c_p, c_curr = c_curr, c_curr, self.space.channels
        stages = nn.ModuleList([nn.ModuleList() for _ in cells])
        reduction_prev, ends = False, []
        for stage, reduction in stage_cells(cells):
            c_curr = 2 * c_curr if reduction else c_curr
            stages[stage].append(cls(c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, NODES * c_curr
            if len(stages[stage]) == cells[stage]:
                ends.append(c_p)
        return stages, ends

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def searched_alphas(self) -> list[nn.Parameter]:
        """α of the stages still being searched (this stage and the later ones)."""
        return list(self.alphas)[self.stage:]

    def edge_weights(self, stage: int) -> torch.Tensor:
        """softmax(α) of a stage: 2 (normal, reduce) x edges x ops."""
        return self.alphas[stage].softmax(-1)

    def derive(self, stage: int) -> Arch:
        w = self.edge_weights(stage)
        return derive(w[0], w[1])

    def arch(self) -> Arch:
        """The staged arch: the evaluation genotypes of stages already searched, derived ones for the rest."""
        return {"stages": [g if s < self.stage and g is not None else self.derive(s)
                           for s, g in enumerate(self.genotypes)]}

    # --- forwards ------------------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, search: bool) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = s1 = self.stem(x)
        aux = []
        for stage in range(self.space.stages):
            if search and stage >= self.stage:
                w = self.edge_weights(stage)
                for cell in self.search_stages[stage]:
                    s0, s1 = s1, cell(s0, s1, w[1] if cell.reduction else w[0])
            else:
                genotype = self.genotypes[stage]
                for cell in self.eval_stages[stage]:
                    s0, s1 = s1, cell(s0, s1, genotype["reduce" if cell.reduction else "normal"])
            aux += [head(s1) for head, at in zip(self.aux_heads, self.head_at, strict=True) if at == stage]
        logits = (self.search_classifier if search else self.eval_classifier)(self.global_pool(s1).flatten(1))
        return logits, ensemble_output([*aux, logits], self.pi, self.ensemble_sum)

    def forward_search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x, search=True)

    def forward_eval(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x, search=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The search network's logits (at the current stage)."""
        return self.forward_search(x)[0]

    def set_arch(self, arch: Arch | None) -> None:
        """Only None (the search network as it is): a staged arch runs through `forward_eval` once built."""
        if arch is not None:
            raise ValueError("the CDARTS controller runs its networks through forward_search / forward_eval")

    # --- parameters of each network ------------------------------------------------------------
    def eval_parameters(self) -> list[nn.Parameter]:
        """What the evaluation network's optimizer moves: stem, evaluation cells, auxiliary heads, π (when
        learnable) and its classifier."""
        modules = [self.stem, self.eval_stages, self.aux_heads, self.eval_classifier]
        return [p for m in modules for p in m.parameters()] + ([self.pi] if self.pi.requires_grad else [])

    def eval_path_parameters(self) -> list[nn.Parameter]:
        """The evaluation parameters the current genotypes use (the other ops' are held, not run)."""
        out = [p for m in (self.stem, self.aux_heads, self.eval_classifier) for p in m.parameters()]
        for stage, cells in enumerate(self.eval_stages):
            genotype = self.genotypes[stage]
            for cell in cells:
                out += [*cell.pre0.parameters(), *cell.pre1.parameters()]
                if genotype is not None:
                    pairs = genotype["reduce" if cell.reduction else "normal"]
                    out += [p for m, (op, j) in enumerate(pairs)
                            for p in cell.edges[EDGES.index((j, 2 + m // 2))][op].parameters()]
        return out + ([self.pi] if self.pi.requires_grad else [])

    # --- copying op weights ----------------------------------------------------------------------
    def _pairs(self, stage: int) -> list[tuple[nn.Module, nn.Module]]:
        """(evaluation cell, search cell) of a stage by position (see the module docstring)."""
        search, evals = self.search_stages[stage], self.eval_stages[stage]
        normal = [c for c in search if not c.reduction]
        out = []
        for i, cell in enumerate(evals):
            if cell.reduction:
                out.append((cell, search[-1]))
            elif normal:
                out.append((cell, normal[min(i, len(normal) - 1)]))
        return out

    def _copy_cell(self, source: nn.Module, target: nn.Module, pairs: list[list]) -> None:
        chosen = tuple(f"edges.{EDGES.index((j, 2 + m // 2))}.{op}." for m, (op, j) in enumerate(pairs))
        target_state = target.state_dict()
        for key, value in source.state_dict().items():
            if key.startswith(chosen) or (key.startswith(("pre0.", "pre1.")) and key in target_state
                                          and target_state[key].shape == value.shape):
                target_state[key].copy_(value)

    @torch.no_grad()
    def copy_to_eval(self, stage: int) -> None:
        """The evaluation cells of `stage` take the search cells' ops of the stage's genotype."""
        genotype = self.genotypes[stage]
        for eval_cell, search_cell in self._pairs(stage):
            self._copy_cell(search_cell, eval_cell, genotype["reduce" if eval_cell.reduction else "normal"])

    @torch.no_grad()
    def copy_to_search(self, stage: int) -> None:
        """The search cells of `stage` take the genotype's ops back from the evaluation cells at their positions."""
        genotype, seen = self.genotypes[stage], set()
        for eval_cell, search_cell in self._pairs(stage):
            if id(search_cell) not in seen:  # the first evaluation cell mapped to it sits at its position
                seen.add(id(search_cell))
                self._copy_cell(eval_cell, search_cell, genotype["reduce" if eval_cell.reduction else "normal"])


register_supernet("darts_stages", MIXED, CdartsDartsNet)
