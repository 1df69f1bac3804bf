"""Scoring archs with weights inherited from a supernet, on held-out images.

What search scores is what export and `init` retrains take: both select an arch on the supernet
with `select_inherited` (BN recalibrated on the images of `recal_loader`), on a supernet placed by
`place_supernet`, so the exported network computes exactly what was scored.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from cream.config import RunConfig
from cream.data import Splits, eval_loader, train_loader
from cream.errors import ConfigError
from cream.nn.batchnorm import bn_layers, recalibrate_bn
from cream.spaces.base import Arch
from cream.train.evaluate import amp_autocast, evaluate


def place_supernet(net: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
    """`net` on `device`, in channels-last memory format when `train.channels_last` asks for it."""
    net = net.to(device)
    return net.to(memory_format=torch.channels_last) if cfg.train.channels_last else net


def recal_loader(train: Dataset, cfg: RunConfig, device: torch.device) -> DataLoader | None:
    """The train images BN statistics are re-estimated on before an arch is scored or exported.

    A loader seeded by `search.seed` whose augmentation is seeded per sample, so every pass yields
    the same images: each arch sees the same `search.bn_recal_images` images. None when that is 0.
    """
    n = cfg.search.bn_recal_images
    if not n:
        return None
    return train_loader(train, min(cfg.data.batch_size, n), seed=cfg.search.seed, workers=cfg.data.workers,
                        pin_memory=device.type == "cuda")


def select_inherited(net: nn.Module, arch: Arch, cfg: RunConfig, recal: DataLoader | None) -> nn.Module:
    """Select `arch` on supernet `net`; with a `recal` loader, re-estimate the BN statistics of its path."""
    net.set_arch(arch)
    if recal is not None and bn_layers(net):
        recalibrate_bn(net, recal, cfg.search.bn_recal_images)
    return net


class InheritedScorer:
    """Scores archs with weights inherited from a supernet, on a held-out split.

    For spaces with BatchNorm, each candidate's statistics can be recalibrated on a few
    training images first (train-mode forwards, no gradient, cumulative averages). Scoring runs
    with the configured `data.workers`, `train.amp` and `train.channels_last`; each split is read
    through one loader for the whole search.
    """

    def __init__(self, net: nn.Module, splits: Splits, cfg: RunConfig, device: torch.device) -> None:
        self.net, self.cfg, self.device = place_supernet(net, cfg, device), cfg, device
        if splits.val is None:
            raise ConfigError("search needs a held-out validation split: set data.val_fraction > 0")
        self.val = _subset(splits.val, cfg.search.eval_images, cfg.search.seed)
        self.test = splits.test
        self.recal_loader = recal_loader(splits.train, cfg, device)
        self.autocast = amp_autocast(device, cfg.train.amp)
        self._loaders: dict[int, tuple[Dataset, DataLoader]] = {}

    def prepare(self, arch: Arch) -> nn.Module:
        return select_inherited(self.net, arch, self.cfg, self.recal_loader)

    def __call__(self, arch: Arch) -> float:
        return self.score(arch, self.val)

    def score(self, arch: Arch, dataset: Dataset) -> float:
        model = self.prepare(arch)
        return evaluate(model, self._loader(dataset), device=self.device, channels_last=self.cfg.train.channels_last,
                        autocast=self.autocast)["top1"]

    def _loader(self, dataset: Dataset) -> DataLoader:
        """One loader per dataset for the whole search (its workers, if any, persist between archs)."""
        if id(dataset) not in self._loaders:  # the dataset is kept with its loader, so its id stays unique
            loader = eval_loader(dataset, self.cfg.data.eval_batch_size, workers=self.cfg.data.workers,
                                 pin_memory=self.device.type == "cuda", persistent=True)
            self._loaders[id(dataset)] = (dataset, loader)
        return self._loaders[id(dataset)][1]


def _subset(ds: Dataset, n: int, seed: int) -> Dataset:
    if not n or n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return Subset(ds, idx.tolist())
