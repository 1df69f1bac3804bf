"""Teachers that run a network: a frozen model (any timm name, ours included) and a supernet path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cream.profiling import create_model
from cream.spaces.base import Arch
from cream.teachers.base import Keys
from cream.teachers.intermediates import Recording, record
from cream.weights import load_weights


def freeze(module: nn.Module) -> nn.Module:
    """`module` in eval mode with no parameter requiring gradients (a teacher is never trained)."""
    return module.eval().requires_grad_(False)


class FrozenModel:
    """A trained network as a teacher: eval mode, no gradients. It runs under the caller's autocast,
    so it computes in the student's precision, on the student's device once `to` has moved it."""

    sees_images = True

    def __init__(self, model: nn.Module) -> None:
        self.model = freeze(model)

    def to(self, device: torch.device) -> FrozenModel:
        self.model.to(device)
        return self

    def __call__(self, images: Tensor, keys: Keys | None = None) -> Tensor:
        with torch.no_grad():
            return self.model(images)

    def with_layers(self, images: Tensor, layers: Sequence[int]) -> tuple[Tensor, Recording]:
        """Logits and the activations of `layers` (block applications counted over the network)."""
        with torch.no_grad(), record(self.model, layers, key="distill.teacher_layers") as rec:
            return self.model(images), rec


def timm_teacher(name: str, num_classes: int, weights: str | Path = "", **kwargs: Any) -> FrozenModel:
    """The timm model `name` with `num_classes` outputs (unless `kwargs` says otherwise), its weights
    read from `weights` (safetensors or a torch file); without a file it keeps timm's initialisation."""
    kwargs.setdefault("num_classes", num_classes)
    model = create_model(name, key="distill.teacher.kwargs", **kwargs)
    if weights:
        load_weights(model, Path(weights))
    return FrozenModel(model)


class SupernetPath:
    """One path of a supernet as a teacher: `net(images, arch=arch)` without gradients.

    The net runs in the mode it is in: Cream distils from board paths of the supernet it is
    training (train mode, as the original does); a finished supernet used as a retrain teacher is
    frozen first (`freeze`).
    """

    sees_images = True

    def __init__(self, net: nn.Module, arch: Arch) -> None:
        self.net, self.arch = net, arch

    def to(self, device: torch.device) -> SupernetPath:
        self.net.to(device)
        return self

    def __call__(self, images: Tensor, keys: Keys | None = None) -> Tensor:
        with torch.no_grad():
            return self.net(images, arch=self.arch)
