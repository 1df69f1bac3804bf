"""Single-path supernet of an ensemble space (NEAS, spec §2.3): the member space's supernet, run K-path.

One arch selects a split, the trunk's ops and each member's ops. The stem and the trunk's blocks run
once; their output goes (gradient divided by K) through each member's blocks and a head. Every member
takes its blocks from the same candidate weights of the member space's supernet (`net`), so the
supernet is the member supernet's size whatever K is. Heads: `heads="shared"` (default) runs one
head for every member, `"separate"` keeps K heads; the paper does not say which it used (spec §2.6).

`forward(x)` returns the mean of the K logit vectors (what search scores); `forward(x, members=True)`
returns them stacked for the per-member loss. `extract(arch)` is an `EnsembleNet` whose eval outputs
equal the supernet's (a shared head is copied into every member).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import torch
from torch import nn

from cream.errors import ConfigError
from cream.models.ensemble import build_ensemble, grad_div
from cream.registry import SINGLE_PATH, register_supernet
from cream.spaces.base import Arch
from cream.spaces.ensemble import EnsembleSpace
from cream.spaces.mobilenet import SKIP
from cream.supernets.mobilenet import MobileNetSupernet

HEADS = ("shared", "separate")
_HEAD_PARTS = ("conv_head", "classifier")


class EnsembleSupernet(nn.Module):
    """Weights of every ensemble of an `EnsembleSpace`; one ensemble (trunk + K member paths) runs per forward."""

    kind = SINGLE_PATH

    def __init__(self, space: EnsembleSpace, num_classes: int | None = None, drop_rate: float | None = None,
                 heads: str = "shared") -> None:
        super().__init__()
        if heads not in HEADS:
            raise ConfigError(f"supernet heads = {heads!r} is not allowed; choose one of {list(HEADS)}")
        self.space, self.heads = space, heads
        self.net = MobileNetSupernet(space.member, num_classes=num_classes, drop_rate=drop_rate)
        self.num_classes = self.net.num_classes
        self.pretrained_cfg = self.default_cfg = dict(self.net.pretrained_cfg)
        # members 1..K-1's own heads (member 0 uses the member supernet's)
        self.extra_heads = nn.ModuleList(
            nn.ModuleDict({p: copy.deepcopy(getattr(self.net, p)) for p in _HEAD_PARTS})
            for _ in range(space.members - 1 if heads == "separate" else 0))
        self.layers = [layer for stage in self.net.blocks for layer in stage]  # flat, in the space's layer order
        self.set_arch(space.sample(random.Random(0)))  # until a strategy sets one

    def set_arch(self, arch: Arch) -> None:
        self.arch = self.space.validate(arch)

    def _head(self, k: int, x: torch.Tensor) -> torch.Tensor:
        if k == 0 or self.heads == "shared":
            return self.net.forward_head(x)
        h = self.extra_heads[k - 1]
        x = self.net.flatten(self.net.act2(h["conv_head"](self.net.global_pool(x))))
        if self.net.drop_rate > 0.0:
            x = nn.functional.dropout(x, p=self.net.drop_rate, training=self.training)
        return h["classifier"](x)

    def forward(self, x: torch.Tensor, arch: Arch | None = None, members: bool = False) -> torch.Tensor:
        """Mean logits of the selected ensemble (or `arch`); all K logit vectors stacked with `members`."""
        arch = self.arch if arch is None else self.space.validate(arch)
        split = len(arch["shared"])
        h = self.net.bn1(self.net.conv_stem(x))
        for g, op in enumerate(arch["shared"]):
            h = self.layers[g][op](h)
        h = grad_div(h, self.space.members)
        out = []
        for k, ops in enumerate(arch["members"]):
            y = h
            for j, op in enumerate(ops):
                y = self.layers[split + j][op](y)
            out.append(self._head(k, y))
        logits = torch.stack(out)
        return logits if members else logits.mean(0)

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        arch = self.arch if arch is None else self.space.validate(arch)
        split, seen, out = len(arch["shared"]), set(), []
        used = [self.layers[g][op] for g, op in enumerate(arch["shared"])]
        used += [self.layers[split + j][op] for m in arch["members"] for j, op in enumerate(m)]
        fixed = [self.net.conv_stem, self.net.bn1, self.net.conv_head, self.net.classifier, *self.extra_heads]
        for module in fixed + used:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """The standalone `EnsembleNet` of `arch` with this supernet's weights and BN statistics."""
        arch = self.space.validate(arch)
        split = len(arch["shared"])
        child = build_ensemble(self.space, arch, num_classes=self.num_classes, drop_rate=self.net.drop_rate)
        child.trunk.conv_stem.load_state_dict(self.net.conv_stem.state_dict())
        child.trunk.bn1.load_state_dict(self.net.bn1.state_dict())
        _copy_blocks(child.trunk.blocks, [self.layers[g][op] for g, op in enumerate(arch["shared"]) if op != SKIP])
        for k, (head, ops) in enumerate(zip(child.heads, arch["members"], strict=True)):
            _copy_blocks(head.blocks, [self.layers[split + j][op] for j, op in enumerate(ops) if op != SKIP])
            src = self.net if k == 0 or self.heads == "shared" else self.extra_heads[k - 1]
            for part in _HEAD_PARTS:
                getattr(head, part).load_state_dict(_part(src, part).state_dict())
        return child.to(next(self.parameters()).device).train(self.training)


def _part(src: Any, name: str) -> nn.Module:
    return src[name] if isinstance(src, nn.ModuleDict) else getattr(src, name)


def _copy_blocks(dst: nn.Sequential, src: list[nn.Module]) -> None:
    for d, s in zip(dst, src, strict=True):
        d.load_state_dict(s.state_dict())


register_supernet("ensemble", SINGLE_PATH, EnsembleSupernet)
