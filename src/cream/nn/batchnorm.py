"""BatchNorm recalibration for candidates that inherit supernet weights.

A supernet's BN running statistics mix every path it was trained with, so a candidate is usually
scored after re-estimating them on a few training images: reset, then a forward without
gradients, with BN in train mode (everything else in eval mode) and cumulative averaging
(``momentum=None``: every batch weighted alike).
Only BN layers that the forward actually reaches are reset, so in a single-path supernet the
other candidates' statistics stay as they were; `bn_recalibrated` also restores those of the
path itself afterwards, so hundreds of candidates can be scored on one supernet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cream.errors import ConfigError


def bn_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BN layers of `model` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], num_images: int, arch: Any = None) -> int:
    """Re-estimate, in place, the running statistics of the BN layers reached by a forward.

    `batches` yields image tensors or (images, targets) pairs; the first `num_images` images are
    used. `arch`, if given, is selected with `model.set_arch(arch)` first (supernets). Module
    train/eval modes and BN momenta are restored afterwards. Returns the number of images used.
    """
    if num_images < 1:
        raise ConfigError(f"bn recalibration num_images = {num_images!r} must be at least 1")
    if arch is not None:
        model.set_arch(arch)
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bn_layers(model)}

    def reset_on_first_use(bn: _BatchNorm, _args: Any) -> None:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the recalibration batches
        hooks.pop(bn).remove()

    hooks = {bn: bn.register_forward_pre_hook(reset_on_first_use) for bn in momenta}
    device = next(model.parameters()).device
    seen = 0
    try:
        model.eval()  # dropout and drop-path off; only BN layers see batch statistics
        for bn in momenta:
            bn.train()
        for batch in batches:
            x = _images(batch)[: num_images - seen]
            model(x.to(device, non_blocking=True))
            seen += len(x)
            if seen >= num_images:
                break
    finally:
        for h in hooks.values():
            h.remove()
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return seen


@contextmanager
def preserved_bn_stats(model: nn.Module) -> Iterator[None]:
    """Restore every BN layer's running statistics on exit (whatever happened inside)."""
    saved = [(bn, {k: v.clone() for k, v in bn._buffers.items() if v is not None})
             for bn in bn_layers(model)]
    try:
        yield
    finally:
        with torch.no_grad():
            for bn, buffers in saved:
                for k, v in buffers.items():
                    bn._buffers[k].copy_(v)


@contextmanager
def bn_recalibrated(model: nn.Module, batches: Iterable[Any], num_images: int, arch: Any = None,
                    keep_stats: bool = False) -> Iterator[nn.Module]:
    """Evaluate a candidate with recalibrated BN statistics, leaving the model's own untouched:

        with bn_recalibrated(supernet, calib_loader, 1024, arch=arch) as net:
            accuracy = evaluate(net.eval(), val_loader)

    `keep_stats=True` skips the recalibration and uses the supernet's statistics as they are.
    Module train/eval modes are restored on exit too.
    """
    modes = {m: m.training for m in model.modules()}
    try:
        with preserved_bn_stats(model):
            if keep_stats:
                if arch is not None:
                    model.set_arch(arch)
            else:
                recalibrate_bn(model, batches, num_images, arch=arch)
            yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Train-mode BN normalises with batch statistics but leaves its running statistics alone."""
    layers = bn_layers(model)
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True
