"""The AutoFormer supernet: one ViT at the super dims whose subnets use leading weight slices.

`set_arch(arch)` picks the embed dim d (shared by all layers), the depth L (the first L blocks
run, the rest are skipped) and each layer's heads and MLP ratio; `extract(arch)` copies the
active slices into a standalone `AutoFormer` whose eval output equals the supernet's.
"""

from __future__ import annotations

from itertools import islice

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from cream.models.autoformer import AutoFormer, build_autoformer, init_vit_weights
from cream.nn.elastic import (
    ElasticAttention,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLinear,
    active_state_dict,
    leading,
)
from cream.nn.vit_blocks import PatchEmbed, ViTHead, gelu_fp32
from cream.registry import SINGLE_PATH, register_supernet
from cream.spaces.base import Arch
from cream.spaces.vit import ViTSpace
from cream.supernets.base import arch_selected


class ElasticMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ElasticLinear(dim, hidden)
        self.fc2 = ElasticLinear(hidden, dim)
        self.drop = 0.0

    def set_active(self, dim: int, hidden: int, drop: float) -> None:
        self.fc1.set_active(dim, hidden)
        self.fc2.set_active(hidden, dim)
        self.drop = drop

    def forward(self, x: Tensor) -> Tensor:
        x = gelu_fp32(self.fc1(x))
        if self.drop > 0:
            x = F.dropout(x, self.drop, self.training)
        x = self.fc2(x)
        return F.dropout(x, self.drop, self.training) if self.drop > 0 else x


class ElasticBlock(nn.Module):
    """The block of `cream.nn.vit_blocks.Block` on super weights; dropout rates scale with d."""

    def __init__(self, space: ViTSpace, drop_path: float) -> None:
        super().__init__()
        E = space.super_embed_dim
        self.norm1 = ElasticLayerNorm(E, eps=space.norm_eps)
        self.attn = ElasticAttention(E, space.super_num_heads, space.head_dim, space.rel_pos,
                                     space.max_relative_position, legacy_qkv=space.legacy_qkv_bias,
                                     irpe=space.irpe_config)
        self.norm2 = ElasticLayerNorm(E, eps=space.norm_eps)
        self.mlp = ElasticMlp(E, space.super_mlp_dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.attn_drop = 0.0

    def set_active(self, dim: int, num_heads: int, hidden: int, drop: float, attn_drop: float) -> None:
        self.norm1.set_active(dim)
        self.attn.set_active(dim, num_heads)
        self.norm2.set_active(dim)
        self.mlp.set_active(dim, hidden, drop)
        self.attn_drop = attn_drop

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        a = self.attn(self.norm1(x), grid)
        if self.attn_drop > 0:
            a = F.dropout(a, self.attn_drop, self.training)
        x = x + self.drop_path(a)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViTSupernet(ViTHead, nn.Module):
    """AutoFormer supernet for a `ViTSpace` (spec §2–§3).

    Dropout rates are the original's `calc_dropout`: p·d/E for the sampled d. Layer i's
    stochastic-depth rate is `linspace(0, drop_path_rate, super_depth)[i]` whatever the depth.
    """

    kind = SINGLE_PATH

    def __init__(self, space: ViTSpace, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        self._check_global_pool(global_pool)
        self.space = space
        self.drop_rate, self.attn_drop_rate, self.drop_path_rate = drop_rate, attn_drop_rate, drop_path_rate
        self.global_pool = global_pool
        self.num_classes = space.num_classes
        E = self.num_features = space.super_embed_dim
        H, W = space.grid
        self.patch_embed = PatchEmbed(space.patch_size, space.in_chans, E, ElasticConv2d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embed = nn.Parameter(torch.zeros(1, H * W + 1, E))
        dpr = torch.linspace(0, drop_path_rate, space.super_depth).tolist()
        self.blocks = nn.ModuleList(ElasticBlock(space, dpr[i]) for i in range(space.super_depth))
        self.norm = ElasticLayerNorm(E, eps=space.norm_eps)
        self.head = ElasticLinear(E, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.pretrained_cfg = {"input_size": (space.in_chans, space.img_size, space.img_size),
                               "num_classes": self.num_classes}
        init_vit_weights(self)
        self.set_arch(space.largest())

    @property
    def arch(self) -> Arch:
        return self._arch

    def set_arch(self, arch: Arch) -> None:
        """Select the path of `arch` (validated) for the next forwards."""
        arch = self.space.validate(arch)
        d = arch["embed_dim"]
        scale = d / self.space.super_embed_dim
        self._arch, self._dim, self._depth = arch, d, arch["depth"]
        self._pos_drop = self.drop_rate * scale
        self.patch_embed.proj.set_active(d)
        for blk, h, r in zip(self.blocks, arch["num_heads"], arch["mlp_ratio"], strict=False):
            blk.set_active(d, h, int(d * r), self.drop_rate * scale, self.attn_drop_rate * scale)
        self.norm.set_active(d)
        if isinstance(self.head, ElasticLinear):
            self.head.set_active(d, self.num_classes)

    def forward(self, x: Tensor, arch: Arch | None = None) -> Tensor:
        """Run the selected arch, or `arch` if given (without changing the selection)."""
        with arch_selected(self, arch):
            return super().forward(x)

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        """The super tensors whose slices `arch` uses: all but the blocks past its depth."""
        depth = self._depth if arch is None else self.space.validate(arch)["depth"]
        unused = {id(p) for blk in self.blocks[depth:] for p in blk.parameters()}
        return [p for p in self.parameters() if id(p) not in unused]

    def _embeddings(self) -> tuple[Tensor, Tensor]:
        """The class token and position embedding of the active embed dim (whole when it is E)."""
        d = self._dim
        return leading(self.cls_token, 1, 1, d), leading(self.pos_embed, 1, self.pos_embed.shape[1], d)

    def forward_features(self, x: Tensor) -> Tensor:
        cls, pos = self._embeddings()
        x, grid = self.patch_embed(x)
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1) + pos
        if self._pos_drop > 0:
            x = F.dropout(x, self._pos_drop, self.training)
        for blk in islice(self.blocks, self._depth):
            x = blk(x, grid)
        return self.norm(x)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new super-width classifier. The analytic cost counts `space.num_classes`, so prefer a
        space built with the wanted `num_classes`."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = ElasticLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_vit_weights(self.head)
            self.head.set_active(self._dim, num_classes)

    @torch.no_grad()
    def extract(self, arch: Arch) -> AutoFormer:
        """A standalone `AutoFormer` for `arch` holding copies of the active weights."""
        with arch_selected(self, arch):
            model = build_autoformer(self.space, self._arch, num_classes=self.num_classes,
                                     global_pool=self.global_pool, drop_rate=self.drop_rate,
                                     attn_drop_rate=self.attn_drop_rate, drop_path_rate=self.drop_path_rate)
            cls, pos = self._embeddings()
            state = {"cls_token": cls, "pos_embed": pos}
            for name in ("patch_embed", "norm", "head"):
                state.update(active_state_dict(getattr(self, name), name))
            for i in range(self._depth):
                state.update(active_state_dict(self.blocks[i], f"blocks.{i}"))
            model.load_state_dict(state, strict=True)
        return model.train(self.training).to(self.cls_token.device)


register_supernet("vit", SINGLE_PATH, ViTSupernet)
