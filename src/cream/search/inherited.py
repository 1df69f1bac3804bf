"""Scoring archs with weights inherited from a supernet, on held-out images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from cream.config import RunConfig
from cream.data import Splits, train_loader
from cream.errors import ConfigError
from cream.nn.batchnorm import recalibrate_bn
from cream.spaces.base import Arch
from cream.train.evaluate import evaluate


class InheritedScorer:
    """Scores archs with weights inherited from a supernet, on a held-out split.

    For spaces with BatchNorm, each candidate's statistics can be recalibrated on a few
    training images first (train-mode forwards, no gradient, cumulative averages).
    """

    def __init__(self, net: nn.Module, splits: Splits, cfg: RunConfig, device: torch.device) -> None:
        self.net, self.cfg, self.device = net.to(device), cfg, device
        if splits.val is None:
            raise ConfigError("search needs a held-out validation split: set data.val_fraction > 0")
        self.val = _subset(splits.val, cfg.search.eval_images, cfg.search.seed)
        self.test = splits.test
        self.recal_images = cfg.search.bn_recal_images
        self.recal_loader = train_loader(splits.train, min(cfg.data.batch_size, self.recal_images),
                                         seed=cfg.search.seed) if self.recal_images else None

    def prepare(self, arch: Arch) -> nn.Module:
        self.net.set_arch(arch)
        if self.recal_images:
            recalibrate_bn(self.net, self.recal_loader, self.recal_images)
        return self.net

    def __call__(self, arch: Arch) -> float:
        return self.score(arch, self.val)

    def score(self, arch: Arch, dataset: Dataset) -> float:
        model = self.prepare(arch)
        return evaluate(model, dataset, batch_size=self.cfg.data.eval_batch_size, device=self.device)["top1"]


def _subset(ds: Dataset, n: int, seed: int) -> Dataset:
    if not n or n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return Subset(ds, idx.tolist())
