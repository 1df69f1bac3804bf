"""The NAS-Bench-201 cell network (Dong & Yang, ICLR 2020) as a standalone timm model.

The macro skeleton is the benchmark's CIFAR network: stem conv3x3 (C) + BN; three stages of
`cells_per_stage` cells with C, 2C, 4C channels, a residual reduction block between stages;
BN-ReLU, global average pool, linear. A cell computes node k = sum over j < k of op_{j->k}(node j)
for nodes 1 … 3 and outputs node 3. `none` edges contribute nothing and are not computed.

The building blocks here are shared with the supernet (`cream.supernets.nb201`): a supernet edge
holds one block per op under the op's name, so extraction is a state-dict copy.

    timm.create_model("nb201", arch="|nor_conv_3x3~0|+|…|")   # default: the best CIFAR-10 cell
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.models import register_model
from torch import nn

from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.nb201 import EDGES, NB201Space, index_to_arch

BEST_CIFAR10_INDEX = 6111  # 94.37 % CIFAR-10 test after 200 epochs (shared/specs/data.md §3.4)


class ReLUConvBN(nn.Sequential):
    """ReLU, conv (no bias), BN: the benchmark's convolution op and reduction-block half."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


def make_op(op: str, channels: int) -> nn.Module | None:
    """The block of one cell op at `channels` (C -> C, stride 1); None for `none`."""
    if op == "none":
        return None
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB201 op {op!r}")


def cell_forward(x: torch.Tensor, edge_ops: Sequence[Callable[[torch.Tensor], torch.Tensor] | None]) -> torch.Tensor:
    """Node 3 of a cell whose edge e (in `EDGES` order) applies `edge_ops[e]` (None = `none`)."""
    nodes = [x]
    for k in (1, 2, 3):
        terms = [op(nodes[j]) for (j, kk), op in zip(EDGES, edge_ops, strict=True) if kk == k and op is not None]
        node = terms[0] if terms else torch.zeros_like(x)
        for t in terms[1:]:
            node = node + t
        nodes.append(node)
    return nodes[3]


class Cell(nn.Module):
    """One NB201 cell with a fixed op per edge."""

    def __init__(self, channels: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.ops = list(ops)
        # Parameter-free `none` edges still hold a slot so that indices match the supernet's.
        self.edges = nn.ModuleList([make_op(op, channels) or nn.Identity() for op in ops])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cell_forward(x, [None if op == "none" else m for op, m in zip(self.ops, self.edges, strict=True)])


class ResBlock(nn.Module):
    """The reduction block between stages: two ReLU-Conv3x3-BN (first at stride 2) + AvgPool-Conv1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Macro(nn.Module):
    """The benchmark's macro skeleton around cells made by `make_cell(channels)`, with timm's face."""

    def __init__(self, make_cell: Callable[[int], nn.Module], num_classes: int = 10, channels: int = 16,
                 cells_per_stage: int = 5, input_size: int = 32, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_chans, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResBlock(c, 2 * c))
                c *= 2
            layers += [make_cell(c) for _ in range(cells_per_stage)]
        self.cells = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=False)
        self.num_features = self.head_hidden_size = c
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = self.default_cfg = {
            "url": "", "num_classes": num_classes, "input_size": (in_chans, input_size, input_size),
            "pool_size": (input_size // 4, input_size // 4), "crop_pct": 1.0, "interpolation": "bilinear",
            # CIFAR-10 train statistics of the shared JPEG archive (shared/specs/data.md §2.3).
            "mean": (0.4913, 0.4821, 0.4465), "std": (0.2452, 0.2428, 0.2606),
            "first_conv": "stem.0", "classifier": "classifier",
        }

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.cells(self.stem(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class NB201Net(NB201Macro):
    """The network of one NB201 cell (every cell of the network is the same)."""

    def __init__(self, arch: Arch | str | int, num_classes: int = 10, channels: int = 16, cells_per_stage: int = 5,
                 input_size: int = 32, in_chans: int = 3) -> None:
        arch = index_to_arch(arch) if isinstance(arch, int) and not isinstance(arch, bool) else arch
        ops = NB201Space().validate(arch)["ops"]
        super().__init__(lambda c: Cell(c, ops), num_classes, channels, cells_per_stage, input_size, in_chans)
        self.arch = {"ops": ops}


def build_nb201(space: NB201Space, arch: Arch, **overrides: Any) -> NB201Net:
    """The standalone network of an arch of `space` (its macro sizes)."""
    sizes = {"num_classes": space.num_classes, "channels": space.channels,
             "cells_per_stage": space.cells_per_stage, "input_size": space.input_size}
    return NB201Net(space.validate(arch), **{**sizes, **overrides})


register_model_builder("nb201", build_nb201)


@register_model
def nb201(pretrained: bool = False, arch: Arch | str | int = BEST_CIFAR10_INDEX, **kwargs: Any) -> NB201Net:
    """An NB201 cell network; `arch` is an arch mapping, a cell string or a benchmark index."""
    if pretrained:
        raise ValueError("no pretrained weights are published for NB201 cell networks")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory options
        kwargs.pop(key, None)
    return NB201Net(arch, **kwargs)
