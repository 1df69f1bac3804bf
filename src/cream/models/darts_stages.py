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

from cream.models.darts import DartsNetCIFAR
from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.darts_stages import DartsStagesSpace, stage_cells


class StagedDartsNet(DartsNetCIFAR):
    """The CIFAR network of one DARTS genotype per stage."""

    def __init__(self, arch: Arch, num_classes: int = 10, channels: int = 36, cells: Sequence[int] = (7, 7, 6),
                 auxiliary: bool = False, drop_path_rate: float = 0.0, stem_multiplier: int = 3) -> None:
        nn.Module.__init__(self)  # DartsNetCIFAR's fields, laid out by stage
        self.arch, self.num_classes, self.drop_path_rate = arch, num_classes, drop_path_rate
        layout = stage_cells(cells)
        self._build([(arch["stages"][stage], reduction) for stage, reduction in layout],
                    len(layout) - 1 - (cells[-1] if len(cells) > 1 else 0), channels, auxiliary, stem_multiplier)


def build_staged(space: DartsStagesSpace, arch: Arch, **overrides: Any) -> StagedDartsNet:
    """`arch`'s network at the space's evaluation sizes (`eval_cells`, `channels`) unless `overrides` say
    otherwise (e.g. model.kwargs {channels: 36, auxiliary: true})."""
    kwargs = {"num_classes": space.num_classes, "channels": space.channels, "cells": space.eval_cells, **overrides}
    return StagedDartsNet(arch, **kwargs)


register_model_builder("darts_stages", build_staged)
