"""NSE networks (Ci et al., ICCV 2021): a chain of multi-branch cells, and the published NSENets.

A cell runs each op of its set and averages the outputs; a residual (N) cell averages the input in
too: `(x + Σ b(x)) / (n + 1)`; an N cell with no op is the identity. Stem conv 3×3 s2 + BN + ReLU;
tail 1×1 conv to `tail_channels` + ReLU (no BN, as the original); global pool; linear classifier.
The blocks here are shared with the supernet (`cream.supernets.nse`), which holds one branch per
active op under its code, so extraction is a state-dict copy.

    timm.create_model("nsenet")      # NSENet (72-op list), 330.95M MACs at 224 px (paper: 333M)
    timm.create_model("nsenet_27")   # NSENet-27, 326.33M
    timm.create_model("nsenet_gpu")  # NSENet-GPU (19-op list, latency run), 1471.1M
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.models import register_model
from torch import nn

from cream.errors import ConfigError
from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.nse import RESIDUAL, CellGeom, NseOp, NseSpace


def _conv_bn(cin: int, cout: int, kernel: int | tuple[int, int], stride: int | tuple[int, int] = 1,
             groups: int = 1, dilation: int = 1, relu: bool = True) -> list[nn.Module]:
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    pad = (dilation * (k[0] - 1) // 2, dilation * (k[1] - 1) // 2)
    layers = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return [*layers, nn.ReLU(inplace=True)] if relu else layers


def make_branch(op: NseOp, g: CellGeom) -> nn.Sequential:
    """One op at one cell: 1×1 expand → spatial part → 1×1 project, BN after every conv, ReLU after the
    first two convs (see `cream.spaces.nse.NseOp`)."""
    mid, s, k = g.cin * op.expand, g.stride, op.kernel
    layers = _conv_bn(g.cin, mid, 1, groups=op.groups[0])
    if op.kind == "lb":
        layers += _conv_bn(mid, mid, k, s, groups=mid, dilation=op.dilation)
    elif op.kind == "rec":
        layers += _conv_bn(mid, mid, (1, k), (1, s)) + _conv_bn(mid, mid, (k, 1), (s, 1), relu=False)
    elif op.kind == "conv":
        layers += _conv_bn(mid, mid, k, s)
    else:  # dual
        layers += _conv_bn(mid, mid, k, s) + _conv_bn(mid, mid, k, 1, relu=False)
    return nn.Sequential(*layers, *_conv_bn(mid, g.cout, 1, groups=op.groups[1], relu=False))


class BranchCell(nn.Module):
    """A cell holding branches by op code (`branches["7"]`); `forward(x, ops)` averages the given ones."""

    def __init__(self, space: NseSpace, cell: int, codes: Sequence[int]) -> None:
        super().__init__()
        g = space.geometry[cell]
        self.residual = g.kind == RESIDUAL
        self.branches = nn.ModuleDict({str(o): make_branch(space.ops[o], g) for o in codes})

    def forward(self, x: torch.Tensor, ops: Sequence[int]) -> torch.Tensor:
        if not ops:
            return x  # a skipped residual cell (validation refuses an empty transition cell)
        y = x if self.residual else None
        for o in ops:
            b = self.branches[str(o)](x)
            y = b if y is None else y + b
        return y / (len(ops) + self.residual)


def init_weights(net: nn.Module) -> None:
    """Kaiming (fan-out) convs, BN 1/0, small normal classifier: the NSE initialisation, also each round's."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class NseBody(nn.Module):
    """Stem, cells (each holding the branches `codes[c]`), tail and classifier of an NSE network."""

    def __init__(self, space: NseSpace, codes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.space = space
        c0, last = space.stage_widths[0], space.geometry[-1].cout
        self.stem = nn.Sequential(*_conv_bn(3, c0, 3, 2))
        self.cells = nn.ModuleList([BranchCell(space, c, ops) for c, ops in enumerate(codes)])
        self.tail = nn.Sequential(nn.Conv2d(last, space.tail_channels, 1), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(space.tail_channels, space.num_classes)
        init_weights(self)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.tail(x).mean((2, 3)))


class NseNet(NseBody):
    """The standalone network of one arch of an `NseSpace`."""

    def __init__(self, space: NseSpace, arch: Arch) -> None:
        arch = space.validate(arch)
        super().__init__(space, arch["cells"])
        self.arch = arch
        self.num_classes = space.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell, ops in zip(self.cells, self.arch["cells"], strict=True):
            x = cell(x, ops)
        return self.head(x)


def build_nse(space: NseSpace, arch: Arch, **overrides: Any) -> NseNet:
    if overrides:
        raise ConfigError(f"NSE models take no model.kwargs; got {sorted(overrides)}")
    return NseNet(space, arch)


#: The published genotypes (the original's `utils/supernet_utils.py`): op list, layout, depths, scale, cells.
GENOTYPES: dict[str, dict[str, Any]] = {
    "nsenet": {"ops": "nse72", "layout": "NER", "depths": [1, 1, 2, 3, 2, 3], "scale": 1.045, "cells": [
        [0], [34], [3], [52], [35], [38], [17, 11, 49], [41], [35], [12], [1, 10, 6], [9], [0, 9], [35, 52, 61],
        [10, 32], [3, 57], [13], [3, 19, 44]]},
    "nsenet_27": {"ops": "nse27", "layout": "NER", "depths": [1, 2, 2, 2, 2, 3], "scale": 1.04, "cells": [
        [0], [6], [3], [0], [16], [3], [9], [11, 17], [9, 2], [12], [1, 6], [9, 12], [9], [17, 14], [21], [3], [13],
        [19, 3, 14]]},
    "nsenet_gpu": {"ops": "nse19", "layout": "NR", "depths": [0, 1, 3, 4, 2], "widths": [16, 32, 64, 128, 256],
                   "scale": 1.0, "cells": [[15], [11], [1, 17], [16, 1], [11], [11], [2, 7], [3], [1, 6], [11],
                                           [11, 6], [8, 2], [0, 1, 8, 11], [2, 6, 8, 12, 14]]},
}


def published(name: str, num_classes: int = 1000, input_size: int = 224) -> tuple[NseSpace, Arch]:
    """The space (its active subsets exactly the genotype's ops) and arch of a published NSENet."""
    g = dict(GENOTYPES[name])
    cells = g.pop("cells")
    space = NseSpace(**g, num_classes=num_classes, input_size=input_size, active=cells, name=name,
                     active_size=max(2, *map(len, cells)))
    return space, {"cells": cells}


def _create(name: str, pretrained: bool, num_classes: int = 1000, **kwargs: Any) -> NseNet:
    if pretrained:
        raise ValueError(f"{name}: no pretrained weights are published")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory options
        kwargs.pop(key, None)
    if kwargs:
        raise TypeError(f"{name} got unexpected arguments {sorted(kwargs)}")
    model = NseNet(*published(name, num_classes))
    model.default_cfg = model.pretrained_cfg = {"input_size": (3, 224, 224), "num_classes": num_classes}
    return model


@register_model
def nsenet(pretrained: bool = False, **kwargs: Any) -> NseNet:
    """NSENet (ICCV 2021): 72-op list, NER [1,1,2,3,2,3], scale 1.045; 77.3 % ImageNet top-1 at 333M (paper)."""
    return _create("nsenet", pretrained, **kwargs)


@register_model
def nsenet_27(pretrained: bool = False, **kwargs: Any) -> NseNet:
    """NSENet-27: the 27-op run's network (accuracy not published)."""
    return _create("nsenet_27", pretrained, **kwargs)


@register_model
def nsenet_gpu(pretrained: bool = False, **kwargs: Any) -> NseNet:
    """NSENet-GPU: the latency-constrained run's network (19-op list, NR layout); 77.9 % top-1 (paper)."""
    return _create("nsenet_gpu", pretrained, **kwargs)


register_model_builder("nse", build_nse)
