"""Top-1/top-5 evaluation, shared by the engine and by search with inherited weights."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cream.data import eval_loader
from cream.train.distributed import Dist, all_sum


def amp_autocast(device: torch.device, amp: str) -> Callable[[], AbstractContextManager]:
    """The autocast context of `train.amp` ("none", "bf16", "fp16") on `device`."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | DataLoader, *, batch_size: int = 256,
             device: torch.device | None = None, dist: Dist | None = None, workers: int = 0,
             channels_last: bool = False,
             autocast: Callable[[], AbstractContextManager] = nullcontext) -> dict[str, float]:
    """Top-1, top-5 (fractions) and mean cross-entropy of `model` on `data`, summed over ranks.

    `data` is a dataset (read through this rank's `eval_loader`), or a loader already built for this
    rank, which callers scoring many models reuse.
    """
    dist = dist or Dist()
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = data if isinstance(data, DataLoader) else eval_loader(
        data, batch_size, rank=dist.rank, world=dist.world, workers=workers, pin_memory=device.type == "cuda")
    correct1 = correct5 = loss_sum = count = 0.0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        correct1 += float(hits[:, 0].sum())
        correct5 += float(hits.any(dim=1).sum())
        count += targets.numel()
    correct1, correct5, loss_sum, count = all_sum([correct1, correct5, loss_sum, count], device, dist)
    model.train(was_training)
    n = max(count, 1.0)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n}
