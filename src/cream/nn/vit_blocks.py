"""Static AutoFormer ViT blocks: patch embedding, attention with a fixed head dim, MLP, block.

These are what a standalone model is built from; `cream.nn.elastic` has the elastic
counterparts with the same parameter names, so an extracted state dict loads strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from cream.nn.irpe import IRPEConfig
from cream.nn.relpos import attend, attention_irpe, load_legacy_tables


def gelu_fp32(x: Tensor) -> Tensor:
    """Exact (erf) GELU computed in fp32 (as the original), cast back to the input dtype."""
    return F.gelu(x.float()).type_as(x)


class ViTHead:
    """The timm head face shared by the ViT supernet and the standalone AutoFormer.

    With global_pool "avg" the classifier sees the mean of the patch tokens (AutoFormer's `--gp`);
    the class token still takes part in attention. With "token" it sees the class token.
    """

    global_pool: str
    head: nn.Module

    @staticmethod
    def _check_global_pool(global_pool: str) -> None:
        if global_pool not in ("avg", "token"):
            raise ValueError(f"global_pool = {global_pool!r}; choose 'avg' or 'token'")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Embeddings and the relative-position tables are not decayed (spec §8 item 6)."""
        return {"pos_embed", "cls_token", "*.irpe.table_q", "*.irpe.table_k", "*.irpe.table_v"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x[:, 1:].mean(1) if self.global_pool == "avg" else x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens; returns the tokens and the (H, W) patch grid.

    `conv` is the projection's class: the supernet passes `ElasticConv2d`.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, conv: type[nn.Conv2d] = nn.Conv2d) -> None:
        super().__init__()
        self.proj = conv(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class Attention(nn.Module):
    """Multi-head attention whose width is heads × head_dim (independent of the embed dim).

    `qkv` rows are [Q; K; V], each `num_heads·head_dim` wide. `irpe` (an `IRPEConfig`) adds iRPE;
    without it, `rel_pos` adds AutoFormer's relative positions (`cream.nn.relpos`), which are iRPE's
    `clip` setting.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int = 64, rel_pos: bool = True,
                 max_relative_position: int = 14, irpe: IRPEConfig | None = None) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        width = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * width)
        self.proj = nn.Linear(width, dim)
        self.irpe = attention_irpe(head_dim, num_heads, rel_pos, max_relative_position, irpe)
        self._register_load_state_dict_pre_hook(load_legacy_tables)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        return self.proj(attend(self.qkv(x), self.num_heads, self.head_dim, self.irpe, grid))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(gelu_fp32(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Dropout(Attn(LN(x)))), x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, head_dim: int = 64, rel_pos: bool = True,
                 max_relative_position: int = 14, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, norm_eps: float = 1e-5, irpe: IRPEConfig | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, head_dim, rel_pos, max_relative_position, irpe)
        self.attn_drop = nn.Dropout(attn_drop) if attn_drop > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.attn_drop(self.attn(self.norm1(x), grid)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
