"""Scoring archs with weights inherited from a supernet.

Data for scoring hundreds of candidates is loaded once: `load_batches` decodes and transforms a
dataset (or a seeded random subset of it) into a list of tensor batches, reused for every arch.
`inherited_accuracy` selects an arch, recalibrates the BN statistics of its path on the
calibration batches (`cream.search.bn_recal`, the supernet's own statistics restored afterwards)
and returns its top-1 accuracy on the evaluation batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from cream.errors import CheckpointError, ConfigError
from cream.search.bn_recal import bn_recalibrated
from cream.spaces.base import Arch

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def load_batches(dataset: Dataset, batch_size: int, num_images: int | None = None, seed: int = 0) -> Batches:
    """All of `dataset` in order, or `num_images` of it drawn at random (seeded), as (images, labels) batches.

    The torch generator is seeded too, so random augmentations of the dataset are reproducible.
    """
    n = len(dataset)
    if num_images is not None:
        if num_images < 1:
            raise ConfigError(f"number of images = {num_images} is not allowed; use at least 1")
        gen = torch.Generator().manual_seed(seed)
        dataset = Subset(dataset, torch.randperm(n, generator=gen)[: min(num_images, n)].tolist())
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return [(x, y) for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False)]
    finally:
        torch.set_rng_state(state)


@torch.no_grad()
def accuracy(model: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy (%) of `model` in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    try:
        for x, y in batches:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return 100.0 * correct / max(total, 1)


def inherited_accuracy(supernet: nn.Module, arch: Arch, batches: Batches, calib: Batches | None = None,
                       bn_images: int = 0) -> float:
    """Top-1 (%) of `arch` with inherited weights; BN recalibrated on `bn_images` of `calib` when > 0."""
    if bn_images <= 0 or not calib:
        supernet.set_arch(arch)
        return accuracy(supernet, batches)
    with bn_recalibrated(supernet, calib, bn_images, arch=arch) as net:
        return accuracy(net, batches)


def inherited_accuracies(supernet: nn.Module, archs: Sequence[Arch], batches: Batches, calib: Batches | None = None,
                         bn_images: int = 0) -> list[float]:
    """`inherited_accuracy` of each arch; the supernet's arch selection is restored afterwards."""
    previous = getattr(supernet, "arch", None)
    try:
        return [inherited_accuracy(supernet, arch, batches, calib, bn_images) for arch in archs]
    finally:
        if previous is not None:
            supernet.set_arch(previous)


@dataclass
class SupernetRun:
    """A trained supernet with its evaluation data: held-out validation batches and BN calibration batches."""

    supernet: nn.Module
    val: Batches
    calib: Batches
    path: Path


def load_supernet_run(path: str | Path, calib_images: int = 1024, seed: int = 0) -> SupernetRun:
    """The supernet of a run directory (its config.yaml `space` and `data`, its newest weights) and its data.

    Weights: `supernet.safetensors` or `model.safetensors` of a finished run, else the model
    state of the newest checkpoint. Validation = the run's held-out split (`data.val_fraction`).
    """
    from cream.config import DataConfig, from_dict, read_yaml
    from cream.data import build_splits
    from cream.pipeline import load_weights
    from cream.registry import build_supernet, get_space
    from cream.train import checkpoint as ckpt

    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise CheckpointError(f"'{path}' is not a run directory (no config.yaml)")
    raw = read_yaml(path / "config.yaml")
    if not isinstance(raw.get("space"), dict):
        raise ConfigError(f"'{path / 'config.yaml'}' has no `space` section; is '{path}' a supernet run?")
    supernet = build_supernet(get_space(raw["space"]))
    weights = next((path / n for n in ("supernet.safetensors", "model.safetensors") if (path / n).is_file()), None)
    if weights is not None:
        load_weights(supernet, weights)
    else:
        state = ckpt.load_latest(path / "checkpoints")
        try:
            supernet.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(f"checkpoint in '{path}' does not fit the supernet: {str(e).splitlines()[0]}") \
                from None
    data = from_dict(DataConfig, raw.get("data", {}), "data.")
    splits = build_splits(data)
    if splits.val is None:
        raise ConfigError(f"run '{path}' has no validation split (data.val_fraction = {data.val_fraction}); "
                          "ranking needs held-out images")
    val = load_batches(splits.val, data.eval_batch_size)
    calib = load_batches(splits.train, data.eval_batch_size, calib_images, seed) if calib_images > 0 else []
    return SupernetRun(supernet.eval(), val, calib, path)
