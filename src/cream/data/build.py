"""Datasets and loaders from a `DataConfig`: train, val (held out of train) and test splits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cream.config import DataConfig
from cream.data import arrays as A
from cream.data.datasets import ArrayDataset, FileDataset
from cream.data.sampler import ShardedBatchSampler
from cream.data.transforms import build_transform
from cream.errors import DataError


@dataclass
class Splits:
    train: Dataset
    val: Dataset | None
    test: Dataset
    num_classes: int


def build_splits(cfg: DataConfig) -> Splits:
    """The three splits of the configured dataset. `val` is held out of train, seeded by split_seed."""
    train_tf, eval_tf = build_transform(cfg, train=True), build_transform(cfg, train=False)
    if cfg.name == "imagefolder" and not cfg.cache:
        return _file_splits(cfg, train_tf, eval_tf)
    train_arr, test_arr = _arrays(cfg)
    train_arr = train_arr.per_class(cfg.train_per_class)
    test_arr = test_arr.per_class(cfg.test_per_class)
    fit_idx, val_idx = _holdout(len(train_arr), cfg.val_fraction, cfg.split_seed)
    val = ArrayDataset(train_arr.take(val_idx), eval_tf) if len(val_idx) else None
    return Splits(ArrayDataset(train_arr.take(fit_idx), train_tf), val, ArrayDataset(test_arr, eval_tf),
                  len(train_arr.classes))


def _arrays(cfg: DataConfig) -> tuple[A.ImageArrays, A.ImageArrays]:
    if cfg.name == "digits":
        full, _ = A.digits()
        rest, test = _holdout(len(full), cfg.test_fraction, cfg.split_seed + 1)
        return full.take(rest), full.take(test)
    if not cfg.root:
        raise DataError(f"data.name={cfg.name} needs data.root (a dataset folder)")
    if cfg.name in ("cifar10", "cifar100"):
        return A.cifar_pickle(cfg.root, 10 if cfg.name == "cifar10" else 100)
    from pathlib import Path

    root = Path(cfg.root).resolve()
    if not root.exists():
        raise DataError(f"data folder '{cfg.root}' does not exist")
    key = f"tree:{root}:{A.tree_signature(root)}:{cfg.on_corrupt}"
    splits = A.cached(key, cfg.cache_dir, lambda: A.image_tree(str(root), cfg.on_corrupt))
    if "train" not in splits:
        raise DataError(f"'{cfg.root}' has no train/ split; found {sorted(splits)}")
    test_name = next((s for s in ("test", "val") if s in splits), None)
    if test_name is None:
        raise DataError(f"'{cfg.root}' has no test/ or val/ split; found {sorted(splits)}")
    return splits["train"], splits[test_name]


def _file_splits(cfg: DataConfig, train_tf, eval_tf) -> Splits:
    from pathlib import Path

    train_samples, classes = A.list_folder_samples(cfg.root, "train")
    test_name = next((s for s in ("test", "val") if (Path(cfg.root) / s).is_dir()), None)
    if test_name is None:
        raise DataError(f"'{cfg.root}' has no test/ or val/ folder")
    test_samples, _ = A.list_folder_samples(cfg.root, test_name, classes)
    fit_idx, val_idx = _holdout(len(train_samples), cfg.val_fraction, cfg.split_seed)
    train = FileDataset([train_samples[i] for i in fit_idx], classes, train_tf, cfg.on_corrupt)
    val = FileDataset([train_samples[i] for i in val_idx], classes, eval_tf, cfg.on_corrupt) if len(val_idx) else None
    return Splits(train, val, FileDataset(test_samples, classes, eval_tf, cfg.on_corrupt), len(classes))


def _holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split range(n) into (kept, held out), the held-out part a seeded random `fraction`."""
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(n * fraction))
    return np.sort(perm[k:]), np.sort(perm[:k])


def train_loader(ds: Dataset, batch_size: int, *, seed: int, rank: int = 0, world: int = 1,
                 workers: int = 0, pin_memory: bool = False, split: str = "training") -> DataLoader:
    """A shuffled, sharded, resumable training loader (see `ShardedBatchSampler`) over the `split` split."""
    if len(ds) < batch_size * world:
        raise DataError(f"the {split} split has {len(ds)} images, fewer than one global batch "
                        f"({batch_size} x {world} processes); lower data.batch_size")
    own = getattr(ds, "batch_sampler", None)  # a dataset that needs its own order (pairs of a logit store)
    sampler = own(batch_size, seed=seed, rank=rank, world=world) if own is not None else \
        ShardedBatchSampler(len(ds), batch_size, seed=seed, rank=rank, world=world)
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))


def with_keys(loader: DataLoader) -> Iterator[tuple[list[tuple[int, int]], Any]]:
    """Each batch of a `train_loader` with its sample keys `(index, sample_seed)`, as (keys, batch).

    The sampler is a pure function of its (seed, epoch, start batch), so a second pass over it
    yields the keys of exactly the batches the loader loads, whatever its workers prefetch.
    """
    return zip(loader.batch_sampler, loader, strict=True)


def eval_loader(ds: Dataset, batch_size: int, *, rank: int = 0, world: int = 1, workers: int = 0,
                pin_memory: bool = False, persistent: bool = False) -> DataLoader:
    """An in-order loader over this rank's contiguous shard of `ds` (results are summed across ranks).

    `persistent` keeps its worker processes between passes (for a loader read many times, as in search).
    """
    n = len(ds)
    lo, hi = n * rank // world, n * (rank + 1) // world
    shard = ds if world == 1 else Subset(ds, range(lo, hi))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=persistent and workers > 0)
