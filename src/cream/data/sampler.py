"""A deterministic, resumable, sharded batch sampler.

Batch b of epoch e is a fixed slice of a permutation seeded by (seed, e). With W processes
each global batch is split into W contiguous per-rank slices, so W processes with batch B see
exactly the samples one process with batch W·B sees. The last partial global batch is
dropped, as usual for training. Each key carries a per-sample seed
derived from (seed, epoch, index) for the dataset's augmentation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedBatchSampler(Sampler[list[tuple[int, int]]]):
    def __init__(self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; skip its first `start_batch` batches (when resuming)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world) - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_global = self.batch_size * self.world
        base = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        for b in range(self.start_batch, self.start_batch + len(self)):
            chunk = order[b * per_global:(b + 1) * per_global]
            mine = chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            yield [(i, (base + i) % (2**63)) for i in mine]


def epoch_keys(n: int, seed: int, epoch: int) -> list[tuple[int, int]]:
    """Every key `(index, sample_seed)` of epoch `epoch` of a run seeded `seed`, in the epoch's order.

    A training run draws a subset of these (it drops the last partial global batch), whatever its
    batch size and number of processes: what a logit store must cover.
    """
    sampler = ShardedBatchSampler(n, 1, seed=seed)
    sampler.set_epoch(epoch)
    return [key for batch in sampler for key in batch]
