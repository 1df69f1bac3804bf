"""Any timm vision transformer as a supernet: `supernet_from_timm(model) -> (space, supernet)`.

The supernet's largest arch *is* the given model (same weights, same output); its subnets shrink depth, heads,
embed dim and MLP width by AutoFormer's weight entanglement (leading slices), so they can be searched with
inherited weights (LayerNorm only: nothing to recalibrate), and `extract(arch)` gives a smaller model of the
given model's class. Dispatch is on the model's class (`register_from_timm`); this module has timm's
`VisionTransformer`.

`VisionTransformer` maps onto the AutoFormer supernet (`ViTSupernet`) by identical parameter names: timm's fused
qkv rows are [Q; K; V] with heads contiguous, which is the supernet's default qkv layout, so a subnet of h heads
takes the first h heads of Q, K and V. The head dim stays the model's (embed_dim / num_heads); shrinking the
embed dim keeps it, so a subnet's attention may be wider than its embed dim, which timm's `Attention` expresses
with `attn_head_dim`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.layers import Mlp
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from cream.errors import ConfigError
from cream.models.timm_vit import build_timm_vit
from cream.registry import SINGLE_PATH, register_supernet
from cream.spaces.base import Arch
from cream.spaces.vit import TimmViTSpace, timm_vit_space
from cream.supernets.vit import ViTSupernet

FROM_TIMM: dict[type, Callable[..., tuple[Any, nn.Module]]] = {}


def register_from_timm(cls: type, convert: Callable[..., tuple[Any, nn.Module]]) -> None:
    """Make `supernet_from_timm` turn models of `cls` (and its subclasses) into supernets with `convert`."""
    FROM_TIMM[cls] = convert


def supernet_from_timm(model: nn.Module, weights: str | None = None, **choices: Any) -> tuple[Any, nn.Module]:
    """(space, supernet) of a timm model whose largest arch reproduces `model`: with the weights of `weights`
    (a file, loaded into `model` first) if given, else the module's own. `choices` replace the default choices
    of the family's dimensions."""
    convert = next((FROM_TIMM[cls] for cls in type(model).__mro__ if cls in FROM_TIMM), None)
    if convert is None:
        raise ConfigError(f"supernet_from_timm: {type(model).__name__} is not supported; allowed: "
                          f"{sorted(c.__name__ for c in FROM_TIMM)}")
    if weights is not None:
        from cream.weights import load_weights

        load_weights(model, weights)
    return convert(model, **choices)


# ---- VisionTransformer ---------------------------------------------------------------------------------------


def _refuse(what: str) -> None:
    raise ConfigError(f"supernet_from_timm: this VisionTransformer has {what}, which the elastic ViT does not "
                      "model; allowed: class token, learned position embedding, token or avg pooling after the "
                      "final norm, plain pre-norm blocks (qkv bias, GELU Mlp, no layer scale or q/k norm)")


def _check_vit(model: VisionTransformer) -> None:
    """Refuse the VisionTransformer options the supernet does not reproduce (one line, naming the option)."""
    checks = {
        "no class token or register tokens": model.num_prefix_tokens != 1 or model.cls_token is None,
        "no_embed_class position embedding": model.no_embed_class or model.pos_embed is None,
        "dynamic image size": model.dynamic_img_size,
        f"global_pool={model.global_pool!r} (or fc_norm)": model.global_pool not in ("token", "avg")
        or not isinstance(model.fc_norm, nn.Identity) or isinstance(model.norm, nn.Identity),
        "pre-norm or a patch-embedding norm": not isinstance(model.norm_pre, nn.Identity)
        or not isinstance(model.patch_embed.norm, nn.Identity),
        "a patch-dropout layer": not isinstance(getattr(model, "patch_drop", nn.Identity()), nn.Identity),
    }
    for blk in model.blocks:
        for what, bad in _block_checks(blk).items():
            checks[what] = checks.get(what, False) or bad
    for what, bad in checks.items():
        if bad:
            _refuse(what)


def _block_checks(blk: nn.Module) -> dict[str, bool]:
    if type(blk) is not Block:
        return {"blocks other than timm's Block": True}
    attn, mlp = blk.attn, blk.mlp
    return {
        "layer scale": not isinstance(blk.ls1, nn.Identity) or not isinstance(blk.ls2, nn.Identity),
        "attention other than timm's Attention with qkv bias and no q/k norm": type(attn) is not Attention
        or attn.qkv.bias is None or not isinstance(attn.q_norm, nn.Identity) or not isinstance(attn.norm, nn.Identity),
        "an MLP other than timm's exact-GELU Mlp": type(mlp) is not Mlp or type(mlp.act) is not nn.GELU
        or mlp.act.approximate != "none" or not isinstance(mlp.norm, nn.Identity),
    }


def _default_choices(largest: int, parts: Sequence[float], cast: type = int) -> list:
    return sorted({cast(largest * p) for p in parts if cast(largest * p) > 0})


def vit_space_of(model: VisionTransformer, **choices: Any) -> TimmViTSpace:
    """The elastic space of a timm `VisionTransformer`: its shape is the largest arch; by default embed dims
    ½, ¾ and all of it (multiples of the head dim's divisor 8), depths ½…all, heads 1…all, MLP ratios ½, ¾, 1 of
    the model's. `choices` (embed_dims, depths, num_heads, mlp_ratios) replace the defaults; the largest must be
    the model's."""
    _check_vit(model)
    blk = model.blocks[0]
    E, L, H = model.embed_dim, len(model.blocks), blk.attn.num_heads
    R = blk.mlp.fc1.out_features / E
    for i, b in enumerate(model.blocks):
        if b.attn.num_heads != H or b.mlp.fc1.out_features != blk.mlp.fc1.out_features:
            _refuse(f"non-uniform blocks (block {i})")
    grid = model.patch_embed.grid_size
    if grid[0] != grid[1] or model.patch_embed.patch_size[0] != model.patch_embed.patch_size[1]:
        _refuse("a non-square input or patch")
    defaults = {"embed_dims": sorted({8 * round(E * p / 8) or E for p in (0.5, 0.75)} | {E}),
                "depths": _default_choices(L, (0.5, 0.75, 1.0)), "num_heads": list(range(1, H + 1)),
                "mlp_ratios": sorted({round(R * p, 4) for p in (0.5, 0.75)} | {R})}
    unknown = sorted(set(choices) - set(defaults))
    if unknown:
        raise ConfigError(f"supernet_from_timm: choices {unknown} are unknown; allowed: {sorted(defaults)}")
    picked = {**defaults, **choices}
    largest = {"embed_dims": E, "depths": L, "num_heads": H, "mlp_ratios": R}
    for key, top in largest.items():
        if max(picked[key]) != top:
            raise ConfigError(f"supernet_from_timm: {key} = {list(picked[key])} must have the model's {top} as its "
                              "largest choice (the largest arch is the model)")
    return timm_vit_space(name=f"timm-{type(model).__name__}", **picked, img_size=model.patch_embed.img_size[0],
                          patch_size=model.patch_embed.patch_size[0], in_chans=model.patch_embed.proj.in_channels,
                          num_classes=model.num_classes, rel_pos=False, head_dim=E // H, norm_eps=model.norm.eps,
                          global_pool=model.global_pool)


class TimmViTSupernet(ViTSupernet):
    """The AutoFormer supernet of a timm `VisionTransformer` (pooling as the space's `global_pool`);
    `extract` returns a `VisionTransformer`."""

    def __init__(self, space: TimmViTSpace, **kwargs: Any) -> None:
        super().__init__(space, **kwargs, global_pool=space.global_pool)

    @torch.no_grad()
    def extract(self, arch: Arch) -> VisionTransformer:
        """A timm `VisionTransformer` of `arch` with the active weights (per-layer heads and MLP widths)."""
        arch = self.space.validate(arch)
        model = build_timm_vit(self.space, arch)
        model.load_state_dict(super().extract(arch).state_dict(), strict=True)
        return model.train(self.training).to(self.cls_token.device)


def _from_vit(model: VisionTransformer, **choices: Any) -> tuple[TimmViTSpace, TimmViTSupernet]:
    space = vit_space_of(model, **choices)
    net = TimmViTSupernet(space)
    net.load_state_dict(model.state_dict(), strict=True)
    net.set_arch(space.largest())
    return space, net.train(model.training)


register_supernet(TimmViTSpace.family, SINGLE_PATH, TimmViTSupernet)
register_from_timm(VisionTransformer, _from_vit)
