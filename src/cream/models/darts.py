"""The DARTS-space CIFAR network of a genotype (`cream.spaces.darts`), registered with timm.

Skeleton as in DARTS's evaluation network: a 3x3 stem to 3C channels; `layers` cells, the ones at
1/3 and 2/3 of the depth reducing (stride 2, channels doubled); each cell preprocesses its two
inputs to C channels (a factorized reduction where the previous cell reduced) and concatenates
its four nodes; global average pooling and a linear classifier. The auxiliary head (on the output
of the cell at 2/3 of the depth, 8x8 at 32 px) runs in training mode only; its logits are kept in
`aux_logits` for a loss that weights them. Drop path (`drop_path_rate`, set per epoch by a schedule
if wanted) drops each op's output except identities, per sample, in training.

    timm.create_model("darts_cifar", arch=DARTS_V2, channels=36, layers=20, auxiliary=True)
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import drop_path
from timm.models import register_model
from torch import nn

from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.darts import DARTS_V2, NODES, DartsSpace, validate_genotype


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out))


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class SepConv(nn.Sequential):
    """Two undilated `DilConv`s, the first with the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1), DilConv(c_in, c_out, kernel, 1, padding, 1))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two stride-2 1x1 convs on offset grids, concatenated (C_out/2 each)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """`none`: zeros at the output resolution (only a mixed op computes it)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride] * 0.0


def make_op(op: str, channels: int, stride: int) -> nn.Module:
    """The block of one DARTS op at `channels` (C -> C) and `stride`."""
    c = channels
    builders = {
        "none": lambda: Zero(stride),
        "max_pool_3x3": lambda: nn.MaxPool2d(3, stride, padding=1),
        "avg_pool_3x3": lambda: nn.AvgPool2d(3, stride, padding=1, count_include_pad=False),
        "skip_connect": lambda: nn.Identity() if stride == 1 else FactorizedReduce(c, c),
        "sep_conv_3x3": lambda: SepConv(c, c, 3, stride, 1),
        "sep_conv_5x5": lambda: SepConv(c, c, 5, stride, 2),
        "dil_conv_3x3": lambda: DilConv(c, c, 3, stride, 2, 2),
        "dil_conv_5x5": lambda: DilConv(c, c, 5, stride, 4, 2),
    }
    if op not in builders:
        raise ValueError(f"unknown DARTS op {op!r}; choose one of {sorted(builders)}")
    return builders[op]()


def preprocess(c_prev_prev: int, c_prev: int, channels: int, reduction_prev: bool) -> tuple[nn.Module, nn.Module]:
    """The two input adapters of a cell (to `channels`; the older input also halves after a reduction)."""
    pre0 = FactorizedReduce(c_prev_prev, channels) if reduction_prev else ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
    return pre0, ReLUConvBN(c_prev, channels, 1, 1, 0)


class Cell(nn.Module):
    """One cell of a genotype: node 2 + k sums its two (op, input) pairs; the output concatenates nodes 2 … 5."""

    def __init__(self, pairs: list[list[Any]], c_prev_prev: int, c_prev: int, channels: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.pre0, self.pre1 = preprocess(c_prev_prev, c_prev, channels, reduction_prev)
        self.inputs = [j for _, j in pairs]
        self.ops = nn.ModuleList([make_op(op, channels, 2 if reduction and j < 2 else 1) for op, j in pairs])

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for k in range(NODES):
            terms = []
            for m in (2 * k, 2 * k + 1):
                h = self.ops[m](states[self.inputs[m]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[m], nn.Identity):
                    h = drop_path(h, drop_prob, training=True)
                terms.append(h)
            states.append(terms[0] + terms[1])
        return torch.cat(states[2:], dim=1)


class AuxiliaryHead(nn.Sequential):
    """DARTS's CIFAR auxiliary classifier, for 8x8 inputs."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(nn.ReLU(inplace=True), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
                         nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                         nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
                         nn.Flatten(), nn.Linear(768, num_classes))


class DartsNetCIFAR(nn.Module):
    """The CIFAR evaluation network of a DARTS genotype."""

    def __init__(self, arch: Arch = DARTS_V2, num_classes: int = 10, channels: int = 36, layers: int = 20,
                 auxiliary: bool = False, drop_path_rate: float = 0.0, stem_multiplier: int = 3) -> None:
        super().__init__()
        self.arch = validate_genotype(arch)
        self.num_classes, self.drop_path_rate = num_classes, drop_path_rate
        reductions = (layers // 3, 2 * layers // 3)
        self._build([(self.arch, i in reductions) for i in range(layers)], 2 * layers // 3, channels, auxiliary,
                    stem_multiplier)

    def _build(self, layout: list[tuple[Arch, bool]], aux_index: int, channels: int, auxiliary: bool,
               stem_multiplier: int) -> None:
        """Stem, one cell per (genotype, reduction) of `layout` in order (a reduction cell doubles the
        channels), the auxiliary head after cell `aux_index`, classifier: shared by every layout of cells."""
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev, self.aux_index, c_aux = False, aux_index, 0
        for i, (genotype, reduction) in enumerate(layout):
            c_curr = 2 * c_curr if reduction else c_curr
            self.cells.append(Cell(genotype["reduce" if reduction else "normal"], c_pp, c_p, c_curr, reduction,
                                   reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, NODES * c_curr
            if i == self.aux_index:
                c_aux = c_p
        self.auxiliary_head = AuxiliaryHead(c_aux, self.num_classes) if auxiliary else None
        self.num_features = c_p
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, self.num_classes)
        #: the auxiliary head's logits of the latest training-mode forward (None otherwise)
        self.aux_logits: torch.Tensor | None = None

    def set_drop_path(self, rate: float) -> None:
        """The drop-path rate of the following training forwards (a schedule sets it per epoch)."""
        self.drop_path_rate = rate

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_rate)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                self.aux_logits = self.auxiliary_head(s1)
        return s1

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def count_params(model: nn.Module, auxiliary: bool = False) -> int:
    """Parameters, without the auxiliary head's unless `auxiliary` (as DARTS reports model size)."""
    return sum(p.numel() for name, p in model.named_parameters() if auxiliary or not name.startswith("auxiliary_head"))


@register_model
def darts_cifar(pretrained: bool = False, arch: Arch = DARTS_V2, **kwargs: Any) -> DartsNetCIFAR:
    """timm entry point: the CIFAR network of a DARTS genotype (default DARTS-V2, C=36, 20 cells)."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory options
        kwargs.pop(key, None)
    if pretrained:
        raise ValueError("darts_cifar has no pretrained weights")
    return DartsNetCIFAR(arch, **kwargs)


def build_darts(space: DartsSpace, arch: Arch, **overrides: Any) -> DartsNetCIFAR:
    """The evaluation network of a genotype at the space's sizes (`overrides`: auxiliary, drop_path_rate, ...)."""
    kwargs = {"num_classes": space.num_classes, "channels": space.channels, "layers": space.layers, **overrides}
    return DartsNetCIFAR(arch, **kwargs)


register_model_builder("darts", build_darts)
