"""torchrun integration: process group setup and cross-rank reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
