"""The standalone network of an EfficientViT-MSRA arch: timm's own `EfficientVitMsra`.

An arch of an `EfficientVitSpace` maps onto timm's arguments (per-stage widths, depths and heads, the
model-wide per-head query kernels, key dim and window fixed per space), so the published archs build
exactly `efficientvit_m0` … `efficientvit_m5`.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models.efficientvit_msra import EfficientVitMsra

from cream.errors import ConfigError
from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.efficientvit import EfficientVitSpace


def efficientvit_kwargs(space: EfficientVitSpace, arch: Arch) -> dict[str, Any]:
    """`EfficientVitMsra` constructor arguments of a (validated) arch of `space`."""
    n = space.num_stages
    return dict(img_size=space.img_size, in_chans=space.in_chans, num_classes=space.num_classes,
                embed_dim=tuple(arch["embed_dim"]), key_dim=(space.key_dim,) * n, depth=tuple(arch["depth"]),
                num_heads=tuple(arch["num_heads"]), window_size=(space.window_size,) * n,
                kernels=tuple(arch["kernels"]), down_ops=(("", 1),) + (("subsample", 2),) * (n - 1))


def pretrained_cfg(space: EfficientVitSpace, num_classes: int) -> dict[str, Any]:
    """timm's EfficientViT-MSRA data config (ImageNet normalisation) at the space's size."""
    side = space.stage_map(space.num_stages - 1)
    return {"url": "", "num_classes": num_classes, "input_size": (space.in_chans, space.img_size, space.img_size),
            "pool_size": (side, side), "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": True,
            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.conv1.conv",
            "classifier": "head.linear"}


def build_efficientvit(space: EfficientVitSpace, arch: Arch, **overrides: Any) -> EfficientVitMsra:
    """timm's `EfficientVitMsra` of an arch of `space`, freshly initialised (overrides win over the space).

    timm's model has no stochastic depth, so a `drop_path_rate` (what retraining passes) must be 0.
    """
    drop_path = overrides.pop("drop_path_rate", 0.0)
    if drop_path:
        raise ConfigError(f"model.drop_path = {drop_path} is not supported by timm's EfficientVitMsra (no "
                          f"stochastic depth, as in the original); set it to 0")
    model = EfficientVitMsra(**{**efficientvit_kwargs(space, space.validate(arch)), **overrides})
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(space, model.num_classes)
    return model


register_model_builder("efficientvit", build_efficientvit)
