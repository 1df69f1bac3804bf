"""2-D relative position encoding of AutoFormer (iRPE-style tables on a patch grid).

Each encoder holds a vertical and a horizontal table of 2R + 2 rows (offsets −R..R clipped, at
rows 1..2R+1, and row 0 for every pair that involves the class token), stored together as one
`(2, 2R + 2, head_dim)` tensor. Per head:

    logits[i, j] += q_i · (T_v[iv(i, j)] + T_h[ih(i, j)])          (key encoder)
    out_i        += Σ_j a[i, j] · (T_v[iv(i, j)] + T_h[ih(i, j)])   (value encoder)

Instead of materialising the (N, N, head_dim) embedding as the original does, the key term is
`q @ Tᵀ` gathered by index, and the value term bins the attention weights by index
(scatter-add) and multiplies the bins by the table: the same result with N·(4R+4)·head_dim
multiply-adds per term instead of N²·head_dim.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn


def rel_pos_tables(head_dim: int, max_rel: int) -> tuple[nn.Parameter, nn.Parameter]:
    """The key and value tables, each `(2, 2R + 2, head_dim)` zeros (initialised by the model)."""
    rows = 2 * max_rel + 2
    return nn.Parameter(torch.zeros(2, rows, head_dim)), nn.Parameter(torch.zeros(2, rows, head_dim))


@lru_cache(maxsize=64)
def rel_pos_index(grid: tuple[int, int], max_rel: int, device: torch.device) -> Tensor:
    """`(2, N, N)` long indices into the flattened `(2·(2R+2), d)` table, N = H·W + 1.

    `[0]` holds the vertical index iv, `[1]` the horizontal index ih offset by 2R + 2 (so it
    addresses the second table). Cached per grid size, so the index is built once per (H, W).
    """
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward
        return _build_index(grid, max_rel, device)


def _build_index(grid: tuple[int, int], max_rel: int, device: torch.device) -> Tensor:
    H, W = grid
    rows = torch.arange(H, device=device).repeat_interleave(W)
    cols = torch.arange(W, device=device).repeat(H)
    iv = (rows[None, :] - rows[:, None]).clamp(-max_rel, max_rel) + max_rel + 1
    ih = (cols[None, :] - cols[:, None]).clamp(-max_rel, max_rel) + max_rel + 1
    index = torch.zeros(2, H * W + 1, H * W + 1, dtype=torch.long, device=device)
    index[0, 1:, 1:] = iv
    index[1, 1:, 1:] = ih
    index[1] += 2 * max_rel + 2
    return index


def attend(qkv: Tensor, num_heads: int, head_dim: int, rel_k: Tensor | None = None,
           rel_v: Tensor | None = None, grid: tuple[int, int] | None = None, max_rel: int = 14) -> Tensor:
    """Multi-head attention on a fused `(B, N, 3·h·head_dim)` [Q; K; V] projection.

    Without relative positions this is PyTorch's fused `scaled_dot_product_attention`; with them
    (`rel_k`, `rel_v` of shape `(2, 2R + 2, head_dim)`) the explicit form above. Returns
    `(B, N, h·head_dim)`.
    """
    B, N, _ = qkv.shape
    q, k, v = qkv.view(B, N, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if rel_k is None:
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    else:
        index = rel_pos_index(grid, max_rel, qkv.device)
        shape = (B, num_heads, N, N)
        iv, ih = index[0].expand(shape), index[1].expand(shape)
        q = q * head_dim**-0.5
        qr = q @ rel_k.flatten(0, 1).t()
        attn = (q @ k.transpose(-2, -1) + qr.gather(-1, iv) + qr.gather(-1, ih)).softmax(-1)
        bins = attn.new_zeros(B, num_heads, N, qr.shape[-1])
        bins = bins.scatter_add_(-1, iv, attn).scatter_add_(-1, ih, attn)
        x = attn @ v + bins @ rel_v.flatten(0, 1)
    return x.transpose(1, 2).reshape(B, N, num_heads * head_dim)
