"""torchrun integration: process group setup and cross-rank reductions."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_type: str) -> Dist:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return Dist(rank, world, local)


def all_sum(values: list[float], device: torch.device, d: Dist) -> list[float]:
    """Element-wise sum of `values` over all ranks (identity for one process)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def mean_over_ranks(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Element-wise mean of `t` over all ranks, as a new tensor (`t` itself for one process)."""
    if not d.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t)
    t /= d.world
    return t


def from_rank0(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Rank 0's `t` on every rank (`t` itself for one process)."""
    if d.enabled:
        t = t.contiguous()
        dist.broadcast(t, src=0)
    return t


def split_map(fn: Callable[[T], R], items: Sequence[T], d: Dist) -> list[R]:
    """`[fn(x) for x in items]`, each rank computing every `world`-th item and all ranks receiving all results.

    Results travel as pickled objects, so every rank holds exactly the values the computing rank got.
    """
    if not d.enabled:
        return [fn(x) for x in items]
    mine = {i: fn(items[i]) for i in range(d.rank, len(items), d.world)}
    parts: list[Any] = [None] * d.world
    dist.all_gather_object(parts, mine)
    merged = {i: r for part in parts for i, r in part.items()}
    return [merged[i] for i in range(len(items))]


def gather_objects(obj: T, d: Dist) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank (`[obj]` for one process)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, device: torch.device, d: Dist) -> bool:
    """True on every rank when `flag` holds on at least one (so ranks take the same branch)."""
    return all_sum([1.0 if flag else 0.0], device, d)[0] > 0


def barrier(d: Dist) -> None:
    """Wait until every rank gets here, e.g. until rank 0 has written the files the others read next."""
    if d.enabled:
        dist.barrier()


def teardown() -> None:
    """Leave the process group, so the process exits cleanly instead of aborting in the group's destructor."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
