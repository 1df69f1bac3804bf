"""MiniViT (spec §3): Mini-DeiT and Mini-Swin, timm's ViT and Swin with multiplexed blocks.

Each model is timm's own network built with the unique blocks only; every unique block is then
wrapped in a `MultiplexedBlock` that applies it several times with per-application transforms
(`cream.nn.multiplex`). Parameter names outside the blocks stay timm's. Registered with timm:
`mini_deit_{tiny,small,base}_patch16_224`, `mini_deit_base_patch16_384`,
`mini_swin_{tiny,small,base}_patch4_window7_224`, `mini_swin_base_patch4_window12_384`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cream.errors import ConfigError
from cream.nn.irpe import IRPE, IRPEConfig
from cream.nn.multiplex import Application, MultiplexedBlock, MultiplexedSwinBlock


def _drop_paths(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly over all `depth` applications (timm's and the original's rule)."""
    return torch.linspace(0, rate, depth, device="cpu").tolist()


class MiniSwin(SwinTransformer):
    """Swin whose stage s has `shared[s]` unique blocks, each applied `depths[s] // shared[s]` times.

    Per application: LN1, LN2, head mixing (`Linear(H, H)` with bias, before and after the softmax),
    LN_local + DW 7x7 conv before the MLP (`local_ffn`), drop path. Shared: qkv, proj, MLP, the
    relative-position bias table. The shift alternates with each application counted over the stage.
    """

    def __init__(self, *, depths: Sequence[int] = (2, 2, 6, 2), shared: Sequence[int] = (1, 1, 1, 1),
                 drop_path_rate: float = 0.1, head_mix: bool = True, local_ffn: bool = True,
                 mask_unshifted: bool = True, **kwargs: Any) -> None:
        if len(shared) != len(depths) or any(d % s for d, s in zip(depths, shared, strict=True)):
            raise ConfigError(f"config key 'model.kwargs.shared' = {list(shared)} must divide each stage depth "
                              f"of {list(depths)} (unique blocks per stage)")
        super().__init__(depths=tuple(shared), drop_path_rate=0.0, **kwargs)
        self.depths, self.shared = tuple(depths), tuple(shared)
        rates = iter(_drop_paths(drop_path_rate, sum(depths)))
        for stage, depth, unique in zip(self.layers, depths, shared, strict=True):
            n = depth // unique
            blocks = []
            for u, block in enumerate(stage.blocks):
                apps = [Application(block.dim, block.attn.num_heads, norm_layer=nn.LayerNorm, drop_path=next(rates),
                                    mix="linear" if head_mix else "", local_ffn=local_ffn) for _ in range(n)]
                blocks.append(MultiplexedSwinBlock(block, apps, first_shifted=(u * n) % 2 == 1,
                                                   mask_unshifted=mask_unshifted))
            stage.blocks = nn.Sequential(*blocks)


class MiniDeiT(VisionTransformer):
    """DeiT without class token (average pooling after the final norm), depth/`repeats` unique blocks each
    applied `repeats` times. Per application: LN1, LN2, bias-free 1x1-conv head mixing before and after
    the softmax, drop path and iRPE on keys (contextual product, shared head, ratio 1.9, 49 buckets).
    `local_ffn` adds the paper's MLP transform (LN_local + DW 7x7 conv), which the original DeiT code lacks."""

    def __init__(self, *, depth: int = 12, repeats: int = 2, drop_path_rate: float = 0.0, head_mix: bool = True,
                 rpe: bool = True, local_ffn: bool = False, **kwargs: Any) -> None:
        if depth % repeats:
            raise ConfigError(f"config key 'model.kwargs.repeats' = {repeats} must divide the depth {depth}")
        kwargs = {"qkv_bias": True, "class_token": False, "global_pool": "avg", "fc_norm": False, **kwargs}
        super().__init__(depth=depth // repeats, drop_path_rate=0.0, **kwargs)
        self.repeats = repeats
        norm = partial(nn.LayerNorm, eps=1e-6)
        grid = tuple(self.patch_embed.grid_size)
        dim, heads = self.embed_dim, self.blocks[0].attn.num_heads
        rates = iter(_drop_paths(drop_path_rate, depth))
        self.blocks = nn.Sequential(*[
            MultiplexedBlock(block, [Application(dim, heads, norm_layer=norm, drop_path=next(rates),
                                                 mix="conv" if head_mix else "", local_ffn=local_ffn,
                                                 rpe=_mini_deit_rpe(dim // heads, heads) if rpe else None)
                                     for _ in range(repeats)], grid)
            for block in self.blocks])


#: Mini-DeiT's iRPE: contextual product method on keys, one table for all heads, ratio 1.9 (49 buckets), no skip.
MINI_DEIT_RPE = IRPEConfig(method="product", mode="ctx", ratio=1.9, shared_head=True, skip=0, on="k")


def _mini_deit_rpe(head_dim: int, num_heads: int) -> nn.Module:
    return IRPE(MINI_DEIT_RPE, head_dim, num_heads)


def _cfg(size: int = 224, swin: bool = False) -> dict[str, Any]:
    return {"url": "", "num_classes": 1000, "input_size": (3, size, size), "pool_size": None,
            "crop_pct": 0.9 if swin else 0.875, "interpolation": "bicubic", "fixed_input_size": True,
            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj",
            "classifier": "head.fc" if swin else "head", "license": "mit"}


default_cfgs = generate_default_cfgs({
    "mini_deit_tiny_patch16_224.in1k": _cfg(),
    "mini_deit_small_patch16_224.in1k": _cfg(),
    "mini_deit_base_patch16_224.in1k": _cfg(),
    "mini_deit_base_patch16_384.in1k": {**_cfg(384), "crop_pct": 1.0},
    "mini_swin_tiny_patch4_window7_224.in1k": _cfg(swin=True),
    "mini_swin_small_patch4_window7_224.in1k": _cfg(swin=True),
    "mini_swin_base_patch4_window7_224.in1k": _cfg(swin=True),
    "mini_swin_base_patch4_window12_384.in1k": {**_cfg(384, swin=True), "crop_pct": 1.0},
})

_DEIT = {"tiny": dict(embed_dim=192, num_heads=3), "small": dict(embed_dim=384, num_heads=6),
         "base": dict(embed_dim=768, num_heads=12)}
_SWIN = {"tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), shared=(1, 1, 1, 1)),
         "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), shared=(1, 1, 9, 1)),
         "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), shared=(1, 1, 9, 1))}


def _mini_deit(variant: str, size: str, pretrained: bool, **kwargs: Any) -> MiniDeiT:
    args = {"patch_size": 16, "depth": 12, "repeats": 2, "drop_path_rate": 0.1 if size == "base" else 0.0,
            **_DEIT[size], **kwargs}
    return build_model_with_cfg(MiniDeiT, variant, pretrained, feature_cfg={"flatten_sequential": True}, **args)


def _mini_swin(variant: str, size: str, pretrained: bool, **kwargs: Any) -> MiniSwin:
    args = {"patch_size": 4, "window_size": 7, **_SWIN[size], **kwargs}
    return build_model_with_cfg(MiniSwin, variant, pretrained, feature_cfg={"flatten_sequential": True}, **args)


@register_model
def mini_deit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> MiniDeiT:
    """Mini-DeiT-Ti: DeiT-Ti (192-d, 3 heads), 6 unique blocks x 2 (published 3M params, 73.0 top-1)."""
    return _mini_deit("mini_deit_tiny_patch16_224", "tiny", pretrained, **kwargs)


@register_model
def mini_deit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> MiniDeiT:
    """Mini-DeiT-S: DeiT-S (384-d, 6 heads), 6 unique blocks x 2 (published 11M params, 80.9 top-1)."""
    return _mini_deit("mini_deit_small_patch16_224", "small", pretrained, **kwargs)


@register_model
def mini_deit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> MiniDeiT:
    """Mini-DeiT-B: DeiT-B (768-d, 12 heads), 6 unique blocks x 2, drop path 0.1 (published 44M, 83.2 top-1)."""
    return _mini_deit("mini_deit_base_patch16_224", "base", pretrained, **kwargs)


@register_model
def mini_deit_base_patch16_384(pretrained: bool = False, **kwargs: Any) -> MiniDeiT:
    """Mini-DeiT-B at 384 px (published 44M params, 84.9 top-1)."""
    return _mini_deit("mini_deit_base_patch16_384", "base", pretrained, img_size=384, **kwargs)


@register_model
def mini_swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> MiniSwin:
    """Mini-Swin-T: Swin-T with one unique block per stage (published 12M params, 81.3 top-1)."""
    return _mini_swin("mini_swin_tiny_patch4_window7_224", "tiny", pretrained, **kwargs)


@register_model
def mini_swin_small_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> MiniSwin:
    """Mini-Swin-S: Swin-S with unique blocks [1, 1, 9, 1] (published 26M params, 83.9 top-1)."""
    return _mini_swin("mini_swin_small_patch4_window7_224", "small", pretrained, **kwargs)


@register_model
def mini_swin_base_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> MiniSwin:
    """Mini-Swin-B: Swin-B with unique blocks [1, 1, 9, 1] (published 46M params, 84.5 top-1)."""
    return _mini_swin("mini_swin_base_patch4_window7_224", "base", pretrained, **kwargs)


@register_model
def mini_swin_base_patch4_window12_384(pretrained: bool = False, **kwargs: Any) -> MiniSwin:
    """Mini-Swin-B at 384 px, window 12 (published 47M params, 85.5 top-1)."""
    return _mini_swin("mini_swin_base_patch4_window12_384", "base", pretrained, img_size=384, window_size=12,
                      **kwargs)
