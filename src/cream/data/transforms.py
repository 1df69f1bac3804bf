"""Train and eval transforms, built from timm and torchvision from the data config."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision import transforms as T

from cream.config import DataConfig


class Cutout:
    """Zero a `size` x `size` square centred on a uniformly drawn pixel (clipped at the borders) of every
    channel of a normalised image tensor, as DARTS's CIFAR augmentation does; draws from torch's generator,
    which the dataset seeds per sample."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        y, x = int(torch.randint(h, ())), int(torch.randint(w, ()))
        out = image.clone()
        out[..., max(0, y - self.size // 2):y + self.size // 2, max(0, x - self.size // 2):x + self.size // 2] = 0
        return out


def build_transform(cfg: DataConfig, train: bool) -> Callable:
    """PIL image → normalised float tensor of `cfg.image_size` (then `Cutout` in training, if configured)."""
    base = _base_transform(cfg, train)
    return T.Compose([base, Cutout(cfg.cutout)]) if train and cfg.cutout > 0 else base


def _base_transform(cfg: DataConfig, train: bool) -> Callable:
    from timm.data import create_transform

    size = cfg.image_size
    mean, std = tuple(cfg.mean), tuple(cfg.std)
    if not train or cfg.train_crop == "rrc":
        return create_transform(
            input_size=(3, size, size), is_training=train, interpolation=cfg.interpolation,
            crop_pct=cfg.crop_pct, mean=mean, std=std, scale=tuple(cfg.rrc_scale), hflip=cfg.hflip,
            vflip=0.0, color_jitter=cfg.color_jitter or None, auto_augment=cfg.auto_augment or None,
            re_prob=cfg.re_prob, re_mode="pixel", re_count=1,
        )
    interp = T.InterpolationMode(cfg.interpolation)
    steps: list[Callable] = [T.Resize((size, size), interpolation=interp)]
    if cfg.train_crop == "pad" and cfg.pad > 0:
        steps.append(T.RandomCrop(size, padding=cfg.pad))
    if cfg.hflip > 0:
        steps.append(T.RandomHorizontalFlip(cfg.hflip))
    if cfg.auto_augment:
        from timm.data.auto_augment import rand_augment_transform

        steps.append(rand_augment_transform(cfg.auto_augment, {"translate_const": int(size * 0.45),
                                                               "img_mean": tuple(round(255 * m) for m in mean)}))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if cfg.re_prob > 0:
        from timm.data.random_erasing import RandomErasing

        steps.append(RandomErasing(cfg.re_prob, mode="pixel", device="cpu"))
    return T.Compose(steps)
