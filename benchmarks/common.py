"""Timing shared by the benchmarks (run them from the repository root: `python benchmarks/NAME.py`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


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
