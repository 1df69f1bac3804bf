"""The standalone network of an arch of a timm ViT's space (`TimmViTSpace`): timm's own `VisionTransformer`.

Heads and MLP widths vary per layer and the head dim is the original model's, so each block's `Attention`
(with `attn_head_dim`) and `Mlp` are rebuilt at the arch's widths; parameter names stay timm's, so the state
dict of the supernet's extracted subnet loads strictly.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import Mlp
from timm.layers.attention import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.vit import TimmViTSpace


def build_timm_vit(space: TimmViTSpace, arch: Arch, drop_path_rate: float = 0.0, attn_drop_rate: float = 0.0,
                   **overrides: Any) -> VisionTransformer:
    """timm's `VisionTransformer` of an arch of `space`, freshly initialised (overrides go to its constructor)."""
    arch = space.validate(arch)
    d = arch["embed_dim"]
    kwargs = dict(img_size=space.img_size, patch_size=space.patch_size, in_chans=space.in_chans,
                  num_classes=space.num_classes, global_pool=space.global_pool, embed_dim=d, depth=arch["depth"],
                  num_heads=1, mlp_ratio=1.0, fc_norm=False, norm_layer=partial(nn.LayerNorm, eps=space.norm_eps),
                  drop_path_rate=drop_path_rate, attn_drop_rate=attn_drop_rate, **overrides)
    model = VisionTransformer(**kwargs, weight_init="skip")
    for blk, h, r in zip(model.blocks, arch["num_heads"], arch["mlp_ratio"], strict=True):
        blk.attn = Attention(d, num_heads=h, attn_head_dim=space.head_dim, qkv_bias=True, attn_drop=attn_drop_rate)
        blk.mlp = Mlp(d, hidden_features=int(d * r))
    model.init_weights()
    return model


register_model_builder("timm-vit", build_timm_vit)
