"""Elastic ops of the Swin-style supernet, named like timm's `SwinTransformer` modules.

Each keeps super weights and uses a slice of them (`cream.nn.elastic`'s contract): window
attention with elastic heads (fixed head dim) and an elastic window whose relative-position bias
table is the centre of the super window's table (offsets −(w−1)..w−1 inside −(W−1)..W−1, so a
small window shares the rows of the offsets it has), and patch merging whose 4C inputs are four
groups of C (the 2×2 neighbours), each sliced to its leading channels.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_, use_fused_attn
from timm.models.swin_transformer import get_relative_position_index, window_partition
from torch import Tensor, nn

from cream.nn.elastic import ElasticLinear, ElasticModule, ElasticQKV, leading


def grouped(t: Tensor, groups: int, active: int, out: int | None = None) -> Tensor:
    """The last dim of `t` as `groups` equal blocks, each cut to its first `active` entries
    (and the first dim to `out`); `t` itself when nothing is cut."""
    width = t.shape[-1] // groups
    if active == width and (out is None or out == t.shape[0]):
        return t
    if out is not None:
        t = t[:out]
    return t.reshape(*t.shape[:-1], groups, width)[..., :active].flatten(-2)


class ElasticGroupedLayerNorm(nn.LayerNorm, ElasticModule):
    """LayerNorm over `groups`·C features, of which each group's leading c are active."""

    def __init__(self, dim: int, groups: int) -> None:
        super().__init__(groups * dim)
        self.groups, self.active_dim = groups, dim

    def set_active(self, dim: int) -> None:
        self.active_dim = dim
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        return {"weight": grouped(self.weight, self.groups, self.active_dim),
                "bias": grouped(self.bias, self.groups, self.active_dim)}

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.groups * self.active_dim,), **self.forward_params(), eps=self.eps)


class ElasticGroupedLinear(nn.Linear, ElasticModule):
    """A Linear without bias whose `groups`·C inputs are grouped like `ElasticGroupedLayerNorm`'s."""

    def __init__(self, dim: int, groups: int, out_features: int) -> None:
        super().__init__(groups * dim, out_features, bias=False)
        self.groups, self.active_in, self.active_out = groups, dim, out_features

    def set_active(self, dim: int, out_features: int) -> None:
        self.active_in, self.active_out = dim, out_features
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        return {"weight": grouped(self.weight, self.groups, self.active_in, self.active_out)}

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, **self.forward_params())


class ElasticPatchMerging(nn.Module):
    """timm's `PatchMerging` (2×2 concat, LayerNorm(4C), Linear 4C → C' without bias) on super weights."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = ElasticGroupedLayerNorm(dim, 4)
        self.reduction = ElasticGroupedLinear(dim, 4, out_dim)

    def set_active(self, dim: int, out_dim: int) -> None:
        self.norm.set_active(dim)
        self.reduction.set_active(dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


@lru_cache(maxsize=64)
def relative_index(window: int, device: torch.device) -> Tensor:
    """timm's relative-position index of a square window, flattened (cached per window and device)."""
    with torch.inference_mode(False):
        return get_relative_position_index(window, window).view(-1).to(device)  # timm < 1.0.20 takes no device


@lru_cache(maxsize=64)
def shift_mask(side: int, window: int, shift: int, device: torch.device) -> Tensor:
    """The (windows, w², w²) 0/−100 mask of shifted-window attention on a side×side map, as timm builds it:
    tokens from different regions of the rolled map do not attend to each other."""
    with torch.inference_mode(False):
        img = torch.zeros(1, side, side, 1, device=device)
        cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for n, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
            img[:, h, w, :] = n
        regions = window_partition(img, (window, window)).view(-1, window * window)
        mask = regions.unsqueeze(1) - regions.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class ElasticWindowAttention(ElasticModule):
    """timm's `WindowAttention` with h of the super heads (head dim fixed) and window w ≤ the super window."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, window: int) -> None:
        super().__init__()
        self.head_dim, self.window = head_dim, window
        self.scale = head_dim**-0.5
        self.fused_attn = use_fused_attn(experimental=True)  # timm's choice, so both run the same kernels
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window - 1) ** 2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        width = num_heads * head_dim
        self.qkv = ElasticQKV(dim, width)
        self.proj = ElasticLinear(width, dim)
        self.active_heads, self.active_window = num_heads, window

    def set_active(self, dim: int, num_heads: int, window: int) -> None:
        width = num_heads * self.head_dim
        self.active_heads, self.active_window = num_heads, window
        self.qkv.set_active(dim, width)
        self.proj.set_active(width, dim)
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        W, w, h = self.window, self.active_window, self.active_heads
        table = self.relative_position_bias_table
        if w != W:
            side = 2 * W - 1
            table = table.view(side, side, -1)[W - w: W + w - 1, W - w: W + w - 1].flatten(0, 1)
        return {"relative_position_bias_table": leading(table, table.shape[0], h)}

    def _bias(self) -> Tensor:
        w, n = self.active_window, self.active_window**2
        table = self.forward_params()["relative_position_bias_table"]
        bias = table[relative_index(w, table.device)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B_, N, C = x.shape
        h = self.active_heads
        q, k, v = self.qkv(x).reshape(B_, N, 3, h, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused_attn:
            attn_mask = self._bias()
            if mask is not None:
                num_win = mask.shape[0]
                mask = mask.view(1, num_win, 1, N, N).expand(B_ // num_win, -1, h, -1, -1)
                attn_mask = attn_mask + mask.reshape(-1, h, N, N)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn + self._bias()
            if mask is not None:
                num_win = mask.shape[0]
                attn = attn.view(-1, num_win, h, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, h, N, N)
            x = attn.softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B_, N, -1))
