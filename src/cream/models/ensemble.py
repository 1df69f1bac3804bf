"""Ensemble networks (NEAS, spec §2.2): a shared trunk run once, K member branches, the mean of their logits.

`EnsembleNet(x)` returns the mean of the K raw logit vectors (inference); `EnsembleNet(x, members=True)`
returns them stacked `[K, batch, classes]`, for the retrain loss, the sum of one loss per member
(`member_loss`). The gradient that flows back into the trunk is divided by K (`grad_div`), as in the
released code. Blocks are built by timm's builder like every MobileNet-style child, so a supernet's
`extract` is a state-dict copy. The published NEAS-S/M/L are registered with timm as `neas_s/m/l`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d, create_conv2d, get_norm_act_layer
from timm.models import register_model
from timm.models._efficientnet_builder import efficientnet_init_weights
from torch import nn

from cream.cost import register_reported_cost
from cream.errors import ConfigError
from cream.models.mobilenet import make_block, pretrained_cfg, timm_kwargs
from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.ensemble import EnsembleSpace
from cream.spaces.mobilenet import SKIP, MobileNetConfig
from cream.spaces.neas import PUBLISHED, published


class _GradDiv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: int) -> torch.Tensor:
        ctx.k = k
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad / ctx.k, None


def grad_div(x: torch.Tensor, k: int) -> torch.Tensor:
    """Identity forward; the gradient back through it is divided by `k` (NEAS's `GradDivHeads`)."""
    return _GradDiv.apply(x, k) if torch.is_grad_enabled() and x.requires_grad else x


def member_loss(criterion: nn.Module, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The ensemble's training loss: the sum over members of `criterion(logits[k], targets)` (spec §2.2:
    not the loss of the mean)."""
    return sum((criterion(member, targets) for member in logits), start=logits.new_zeros(()))


class Stem(nn.Module):
    """Stem conv + BN/act and the trunk's blocks: what every member shares."""

    def __init__(self, cfg: MobileNetConfig, blocks: list[nn.Module]) -> None:
        super().__init__()
        kw = timm_kwargs(cfg)
        self.conv_stem = create_conv2d(3, cfg.stem_channels, 3, stride=cfg.stem_stride, padding="")
        self.bn1 = get_norm_act_layer(kw["norm_layer"], kw["act_layer"])(cfg.stem_channels, inplace=True)
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))


class Head(nn.Module):
    """A member's own layers after the split, then pool, conv_head (with bias), activation, dropout, FC."""

    def __init__(self, cfg: MobileNetConfig, blocks: list[nn.Module], num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.global_pool = SelectAdaptivePool2d(pool_type="avg")
        self.conv_head = create_conv2d(cfg.stages[-1].channels, cfg.head_channels, 1, padding="", bias=True)
        self.act2 = timm_kwargs(cfg)["act_layer"](inplace=True)
        self.flatten = nn.Flatten(1)
        self.drop_rate = drop_rate
        self.classifier = nn.Linear(cfg.head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.act2(self.conv_head(self.global_pool(self.blocks(x)))))
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)


class EnsembleNet(nn.Module):
    """Trunk once, then K member heads; the mean of their raw logits (or all of them, `members=True`)."""

    def __init__(self, trunk: Stem, heads: list[Head]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)
        self.num_classes = heads[0].classifier.out_features

    def forward(self, x: torch.Tensor, members: bool = False) -> torch.Tensor:
        h = grad_div(self.trunk(x), len(self.heads))
        logits = torch.stack([head(h) for head in self.heads])
        return logits if members else logits.mean(0)


def build_ensemble(space: EnsembleSpace, arch: Arch, num_classes: int | None = None,
                   drop_rate: float | None = None) -> EnsembleNet:
    """The standalone ensemble of `arch` (freshly initialised; a supernet's `extract` copies weights in)."""
    arch = space.validate(arch)
    cfg = space.member.config
    num_classes = cfg.num_classes if num_classes is None else num_classes
    drop_rate = cfg.dropout if drop_rate is None else drop_rate
    split = len(arch["shared"])

    def blocks(ops: list[str], start: int) -> list[nn.Module]:
        return [make_block(cfg, op, space.geometry[start + j]) for j, op in enumerate(ops) if op != SKIP]

    net = EnsembleNet(Stem(cfg, blocks(arch["shared"], 0)),
                      [Head(cfg, blocks(m, split), num_classes, drop_rate) for m in arch["members"]])
    efficientnet_init_weights(net)
    net.pretrained_cfg = net.default_cfg = pretrained_cfg(cfg, num_classes=num_classes, first_conv="trunk.conv_stem",
                                                          classifier="heads.0.classifier")
    return net


register_model_builder("ensemble", build_ensemble)


def _create(name: str, pretrained: bool = False, **kwargs: Any) -> EnsembleNet:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory options
        kwargs.pop(key, None)
    if pretrained:
        raise ConfigError(f"{name} has no pretrained weights here; pass checkpoint_path=... to timm.create_model")
    space, arch = published(name, kwargs.pop("num_classes", 1000))
    kwargs.setdefault("drop_rate", 0.2)  # the retrain recipe's dropout (spec §2.4)
    return build_ensemble(space, arch, **kwargs)


def _ptflops(name: str) -> dict[str, int]:
    space, arch = published(name)
    return {"macs_ptflops": space.cost(arch, convention="ptflops")["macs"]}


for _name in PUBLISHED:
    register_reported_cost(_name, partial(_ptflops, _name))


@register_model
def neas_s(pretrained: bool = False, **kwargs: Any) -> EnsembleNet:
    """NEAS-S: 2 members sharing all 20 searchable layers, 314M (README top-1 77.9)."""
    return _create("neas_s", pretrained, **kwargs)


@register_model
def neas_m(pretrained: bool = False, **kwargs: Any) -> EnsembleNet:
    """NEAS-M: 2 members split after layer 16, 472M (README top-1 79.5)."""
    return _create("neas_m", pretrained, **kwargs)


@register_model
def neas_l(pretrained: bool = False, **kwargs: Any) -> EnsembleNet:
    """NEAS-L: 2 members split after layer 16, 574M (README top-1 80.0)."""
    return _create("neas_l", pretrained, **kwargs)
