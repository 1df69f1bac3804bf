"""Timing shared by the benchmarks (run them from the repository root: `python benchmarks/NAME.py`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CREAM_SHARED_DATA", REPO.parent / "shared" / "data"))  # the project's real data
NB201_TABLE = SHARED / "nb201" / "nb201.csv"
CIFAR10_ARCHIVE = SHARED / "cifar10" / "cifar10-jpg.tar.gz"


def eval_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    """One inference forward: what the eval side of a speed comparison times."""
    with torch.inference_mode():
        model(x)


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One forward and backward with cross-entropy: what the train side of a speed comparison times."""
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()


def sets(items: list[str]) -> list[str]:
    """`--set ITEM` for each item: config overrides on a `cream` command line."""
    return [a for item in items for a in ("--set", item)]


def images_per_second(batches: Iterable, step: Callable, steps: int, warmup: int = 2) -> float:
    """Images/s of `step(images, targets)` over `steps` batches after `warmup` untimed ones (cycling `batches`)."""
    done, seen, start = 0, 0, 0.0
    while done < steps + warmup:
        for images, targets in batches:
            if done == warmup:
                start = time.perf_counter()
            step(images, targets)
            done += 1
            seen += images.shape[0] if done > warmup else 0
            if done >= steps + warmup:
                break
    return seen / (time.perf_counter() - start)


def time_round_robin(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
                     stat: Callable[[list[float]], float] = min) -> dict[str, float]:
    """Process CPU seconds of one call of each fn, called in turn `repeats` times; `stat` of each.

    Round-robin makes slow phases of a shared machine hit every side alike, and process time
    does not count time spent descheduled.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.process_time()
            fn()
            times[k].append(time.process_time() - t)
    return {k: stat(v) for k, v in times.items()}
