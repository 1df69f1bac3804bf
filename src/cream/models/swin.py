"""The standalone network of a hierarchical (Swin-style) arch: timm's own `SwinTransformer`.

An arch of a `SwinSpace` maps onto timm's per-stage arguments (depths, num_heads, mlp_ratio,
window_size, a fixed head_dim), so the released S3 archs build exactly `swin_s3_*_224`.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models.swin_transformer import SwinTransformer

from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.swin import SwinSpace


class _StageDims(list):
    """Per-stage embed dims for `SwinTransformer`, whose constructor accepts a list but first computes
    `int(embed_dim * 2 ** (stages - 1))` as its feature width (a TypeError for a plain list in timm
    1.0): multiplying this list gives the last stage's dim instead, which is what that line means."""

    def __mul__(self, other: int) -> int:  # type: ignore[override]
        return self[-1]


def embed_dim_arg(dims: list[int]) -> int | list[int]:
    """timm's `embed_dim`: the first dim where each stage doubles the last (timm's own form), else the list."""
    if all(d == dims[0] * 2**s for s, d in enumerate(dims)):
        return dims[0]
    return _StageDims(dims)


def swin_kwargs(space: SwinSpace, arch: Arch) -> dict[str, Any]:
    """`SwinTransformer` constructor arguments of a (validated) arch of `space`."""
    return dict(img_size=space.img_size, patch_size=space.patch_size, in_chans=space.in_chans,
                num_classes=space.num_classes, embed_dim=embed_dim_arg(arch["embed_dim"]),
                depths=tuple(arch["depth"]), num_heads=tuple(arch["num_heads"]), head_dim=space.head_dim,
                window_size=tuple(arch["window_size"]), mlp_ratio=tuple(arch["mlp_ratio"]))


def pretrained_cfg(space: SwinSpace, num_classes: int) -> dict[str, Any]:
    """timm's Swin data config (ImageNet normalisation, bicubic, crop 0.9) at the space's size."""
    return {"url": "", "num_classes": num_classes, "input_size": (space.in_chans, space.img_size, space.img_size),
            "pool_size": None, "crop_pct": 0.9, "interpolation": "bicubic", "fixed_input_size": True,
            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.proj",
            "classifier": "head.fc"}


def build_swin(space: SwinSpace, arch: Arch, drop_path_rate: float = 0.0, **overrides: Any) -> SwinTransformer:
    """timm's `SwinTransformer` of an arch of `space`, freshly initialised (overrides win over the space)."""
    kwargs = {**swin_kwargs(space, space.validate(arch)), "drop_path_rate": drop_path_rate, **overrides}
    model = SwinTransformer(**kwargs)
    if isinstance(model.embed_dim, _StageDims):
        model.embed_dim = list(model.embed_dim)
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(space, model.num_classes)
    return model


register_model_builder("swin", build_swin)
