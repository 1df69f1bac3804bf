"""The standalone network of a staged DARTS arch (`cream.spaces.darts_stages`): CDARTS's retrained model.

`darts_cifar`'s skeleton and forward (stem, cells, auxiliary head, drop path, classifier), laid out by
stages: stage s has `cells[s]` cells of genotype s, every stage but the last ends with its reduction
cell, and the auxiliary head reads the end of the second-to-last stage. With [7, 7, 6] cells and
one genotype repeated this is exactly `darts_cifar` at 20 cells (reductions at cells 6 and 13).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from cream.models.darts import AuxiliaryHead, Cell, DartsNetCIFAR
from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.darts import NODES
from cream.spaces.darts_stages import DartsStagesSpace, stage_cells


class StagedDartsNet(DartsNetCIFAR):
    """The CIFAR network of one DARTS genotype per stage."""

    def __init__(self, arch: Arch, num_classes: int = 10, channels: int = 36, cells: Sequence[int] = (7, 7, 6),
                 auxiliary: bool = False, drop_path_rate: float = 0.0, stem_multiplier: int = 3) -> None:
        nn.Module.__init__(self)  # DartsNetCIFAR's fields, laid out by stage
        self.arch, self.num_classes, self.drop_path_rate = arch, num_classes, drop_path_rate
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        layout = stage_cells(cells)
        self.cells = nn.ModuleList()
        self.aux_index = len(layout) - 1 - (cells[-1] if len(cells) > 1 else 0)
        reduction_prev, c_aux = False, 0
        for i, (stage, reduction) in enumerate(layout):
            c_curr = 2 * c_curr if reduction else c_curr
            genotype = arch["stages"][stage]
            self.cells.append(Cell(genotype["reduce" if reduction else "normal"], c_pp, c_p, c_curr, reduction,
                                   reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, NODES * c_curr
            if i == self.aux_index:
                c_aux = c_p
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes) if auxiliary else None
        self.num_features = c_p
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.aux_logits = None


def build_staged(space: DartsStagesSpace, arch: Arch, **overrides: Any) -> StagedDartsNet:
    """`arch`'s network at the space's evaluation sizes (`eval_cells`, `channels`) unless `overrides` say
    otherwise (e.g. model.kwargs {channels: 36, auxiliary: true})."""
    kwargs = {"num_classes": space.num_classes, "channels": space.channels, "cells": space.eval_cells, **overrides}
    return StagedDartsNet(arch, **kwargs)


register_model_builder("darts_stages", build_staged)
