"""AutoFormer: the standalone vision transformer of one AutoFormer arch, registered with timm.

Per-layer heads and MLP widths, a fixed head dim (64) so attention width is heads × 64, 2-D
relative position encoding, class token plus absolute position embedding, and a classifier on
the mean of the patch tokens (`global_pool="avg"`, the original's `--gp`) or on the class
token (`"token"`). LayerNorm eps is 1e-5 as in the original.

`timm.create_model("autoformer_tiny" | "autoformer_small" | "autoformer_base")` builds the
published subnets (spec §7) at 224 px, patch 16, 1000 classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from cream.nn.irpe import IRPE, IRPEConfig
from cream.nn.vit_blocks import Block, PatchEmbed, ViTHead
from cream.registry import register_model_builder
from cream.spaces import get_space
from cream.spaces.base import Arch
from cream.spaces.vit import PUBLISHED_SPACES, ViTSpace, published_archs


class AutoFormer(ViTHead, nn.Module):
    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int | Sequence[int] = 3,
        mlp_ratio: float | Sequence[float] = 4.0,
        head_dim: int = 64,
        rel_pos: bool = True,
        max_relative_position: int = 14,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_depth: int | None = None,
        norm_eps: float = 1e-5,
        irpe: IRPEConfig | None = None,
    ) -> None:
        """`num_heads`/`mlp_ratio` are per layer (a list) or uniform (a number).

        Stochastic depth of layer i is `linspace(0, drop_path_rate, drop_path_depth)[i]`; a subnet
        extracted from a supernet passes the super depth, so it keeps the supernet's rates.
        """
        super().__init__()
        self._check_global_pool(global_pool)
        heads = list(num_heads) if isinstance(num_heads, Sequence) else [num_heads] * depth
        ratios = list(mlp_ratio) if isinstance(mlp_ratio, Sequence) else [mlp_ratio] * depth
        if len(heads) != depth or len(ratios) != depth:
            raise ValueError(f"num_heads and mlp_ratio need {depth} entries each, "
                             f"got {len(heads)} and {len(ratios)}")
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        dpr = torch.linspace(0, drop_path_rate, drop_path_depth or depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, h, int(embed_dim * r), head_dim, rel_pos, max_relative_position, drop_rate,
                  attn_drop_rate, dpr[i], norm_eps, irpe)
            for i, (h, r) in enumerate(zip(heads, ratios, strict=True))
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = self.default_cfg = _cfg(input_size=(in_chans, img_size, img_size),
                                                      num_classes=num_classes)
        init_vit_weights(self)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        x, grid = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = blk(x, grid)
        return self.norm(x)


def init_vit_weights(model: nn.Module) -> None:
    """Spec §2: Linear trunc_normal(0.02)/0, LayerNorm 1/0, embeddings and AutoFormer's rel-pos tables
    trunc_normal(0.02) (other iRPE tables stay zero, as iRPE's); the patch convolution keeps PyTorch's
    default init."""
    clip = {id(p) for m in model.modules() if isinstance(m, IRPE) and m.cfg.method == "clip" for p in m.parameters()}
    for name, p in model.named_parameters():
        if name.endswith(("cls_token", "pos_embed")) or id(p) in clip:
            trunc_normal_(p, std=0.02)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def model_kwargs(space: ViTSpace, arch: Arch) -> dict[str, Any]:
    """`AutoFormer` constructor arguments for an arch of `space` (validated)."""
    arch = space.validate(arch)
    return dict(
        img_size=space.img_size, patch_size=space.patch_size, in_chans=space.in_chans,
        num_classes=space.num_classes, embed_dim=arch["embed_dim"], depth=arch["depth"],
        num_heads=arch["num_heads"], mlp_ratio=arch["mlp_ratio"], head_dim=space.head_dim,
        rel_pos=space.rel_pos, max_relative_position=space.max_relative_position, irpe=space.irpe_config,
        drop_path_depth=space.super_depth, norm_eps=space.norm_eps,
    )


def build_autoformer(space: ViTSpace, arch: Arch, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                     **overrides: Any) -> AutoFormer:
    """The standalone `AutoFormer` of an arch of `space`, as its supernet runs it.

    Dropout rates are given at the super width and scaled by d/E, as the supernet scales them
    (the original's `calc_dropout`); other constructor arguments in `overrides` win over the space's.
    """
    kwargs = model_kwargs(space, arch)
    scale = kwargs["embed_dim"] / space.super_embed_dim
    return AutoFormer(**{**kwargs, "drop_rate": drop_rate * scale, "attn_drop_rate": attn_drop_rate * scale,
                         **overrides})


register_model_builder("vit", build_autoformer)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
        "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": True,
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "first_conv": "patch_embed.proj", "classifier": "head", "license": "mit", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "autoformer_tiny.in1k": _cfg(),
    "autoformer_small.in1k": _cfg(),
    "autoformer_base.in1k": _cfg(),
})


def _create(size: str, pretrained: bool, **kwargs: Any) -> AutoFormer:
    space = get_space(PUBLISHED_SPACES[size])
    return build_model_with_cfg(AutoFormer, f"autoformer_{size}", pretrained,
                                **{**model_kwargs(space, published_archs()[size]), **kwargs})


@register_model
def autoformer_tiny(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """AutoFormer-T (spec §7): d 192, 13 layers, 5.87M params with rel-pos tables (5.77M without)."""
    return _create("tiny", pretrained, **kwargs)


@register_model
def autoformer_small(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """AutoFormer-S (spec §7): d 384, 13 layers, 22.9M params."""
    return _create("small", pretrained, **kwargs)


@register_model
def autoformer_base(pretrained: bool = False, **kwargs: Any) -> AutoFormer:
    """AutoFormer-B (spec §7): d 576, 14 layers, 53.7M params."""
    return _create("base", pretrained, **kwargs)
