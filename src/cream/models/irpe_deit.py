"""DeiT with iRPE (spec §4.4), registered with timm under the original's names.

timm's `VisionTransformer` (DeiT-Ti/S/B shapes, class token, no distillation token) whose every
block's attention is an `IRPEAttention`: contextual iRPE, shared head, skip 1 (the class token),
on k, qk or qkv. No weights are published in a form we can fetch, so `pretrained=True` is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from cream.errors import ConfigError
from cream.nn.irpe import IRPEAttention, IRPEConfig


class IRPEVisionTransformer(VisionTransformer):
    """A `VisionTransformer` whose attentions carry iRPE (`irpe`: its config)."""

    def __init__(self, irpe: IRPEConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for blk in self.blocks:
            blk.attn = IRPEAttention(blk.attn, irpe, prefix=self.num_prefix_tokens)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The iRPE tables are not decayed, like the position embedding and class token."""
        return super().no_weight_decay() | {n for n, _ in self.named_parameters() if ".irpe.table_" in n}


SIZES = {"tiny": dict(embed_dim=192, depth=12, num_heads=3), "small": dict(embed_dim=384, depth=12, num_heads=6),
         "base": dict(embed_dim=768, depth=12, num_heads=12)}

# name → (size, method, ratio, on); the number in a name counts the buckets used at 14x14 (spec §4.2)
VARIANTS = {
    "deit_tiny_patch16_224_ctx_product_50_shared_k": ("tiny", "product", 1.9, "k"),
    "deit_small_patch16_224_ctx_product_50_shared_k": ("small", "product", 1.9, "k"),
    "deit_small_patch16_224_ctx_product_50_shared_qk": ("small", "product", 1.9, "qk"),
    "deit_small_patch16_224_ctx_product_50_shared_qkv": ("small", "product", 1.9, "qkv"),
    "deit_base_patch16_224_ctx_product_50_shared_k": ("base", "product", 1.9, "k"),
    "deit_base_patch16_224_ctx_product_50_shared_qkv": ("base", "product", 1.9, "qkv"),
    "deit_small_patch16_224_ctx_euc_20_shared_k": ("small", "euc", 20, "k"),
    "deit_small_patch16_224_ctx_quant_51_shared_k": ("small", "quant", 33, "k"),
    "deit_small_patch16_224_ctx_cross_56_shared_k": ("small", "cross", 20, "k"),
}


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None, "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": True, "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj", "classifier": "head", "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in VARIANTS})


def create_irpe_deit(name: str, pretrained: bool = False, **kwargs: Any) -> IRPEVisionTransformer:
    """One of `VARIANTS` (kwargs go to `VisionTransformer`, e.g. `num_classes`, `img_size`)."""
    if pretrained:
        raise ConfigError(f"pretrained = True for {name}; no iRPE weights are available offline, use pretrained=False")
    size, method, ratio, on = VARIANTS[name]
    irpe = IRPEConfig(method=method, mode="ctx", ratio=ratio, shared_head=True, skip=1, on=on)
    args = dict(patch_size=16, **SIZES[size], irpe=irpe)
    return build_model_with_cfg(IRPEVisionTransformer, name, False, **{**args, **kwargs})


def _register(name: str) -> None:
    def create(pretrained: bool = False, **kwargs: Any) -> IRPEVisionTransformer:
        return create_irpe_deit(name, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = f"DeiT + iRPE {VARIANTS[name]} (spec §4.4)."
    create.__module__ = __name__
    register_model(create)


for _name in VARIANTS:
    _register(_name)
