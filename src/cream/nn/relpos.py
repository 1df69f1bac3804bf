"""AutoFormer's 2-D relative positions, as one setting of iRPE, and the attention that uses them.

AutoFormer gives each of K and V a vertical and a horizontal table of 2R + 2 rows (offsets
pos_j − pos_i clipped to −R..R at rows 1..2R+1, row 0 for every pair that involves the class
token), shared by all heads, whose two encodings are summed:

    logits[i, j] += q_i · (T_v[iv(i, j)] + T_h[ih(i, j)])          (key term)
    out_i        += Σ_j a[i, j] · (T_v[iv(i, j)] + T_h[ih(i, j)])   (value term)

That is iRPE's contextual, shared-head `clip` method on "kv" (`autoformer_irpe`): the tables are
`irpe.table_k` and `irpe.table_v`, each `(2, 2R + 2, head_dim)` stacked [v, h]. Checkpoints
written before they moved under `irpe.` (as `rel_pos_k`, `rel_pos_v`, same shapes and order)
load through `load_legacy_tables`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cream.nn.irpe import IRPE, IRPEConfig


def autoformer_irpe(max_rel: int) -> IRPEConfig:
    """AutoFormer's relative positions (clip distance `max_rel`) as an iRPE setting."""
    return IRPEConfig(method="clip", mode="ctx", ratio=max_rel, shared_head=True, skip=1, on="kv")


def attention_irpe(head_dim: int, num_heads: int, rel_pos: bool, max_rel: int,
                   irpe: IRPEConfig | None) -> IRPE | None:
    """The iRPE of an attention: `irpe` when given, else AutoFormer's when `rel_pos`, else none."""
    cfg = irpe if irpe is not None else autoformer_irpe(max_rel) if rel_pos else None
    return None if cfg is None else IRPE(cfg, head_dim, num_heads)


def load_legacy_tables(state_dict: dict[str, Tensor], prefix: str, *args) -> None:
    """A `load_state_dict` pre-hook: `rel_pos_k`/`rel_pos_v` (before iRPE) → `irpe.table_k`/`irpe.table_v`."""
    for where in "kv":
        if (old := f"{prefix}rel_pos_{where}") in state_dict:
            state_dict[f"{prefix}irpe.table_{where}"] = state_dict.pop(old)


def attend(qkv: Tensor, num_heads: int, head_dim: int, irpe: IRPE | None = None,
           grid: tuple[int, int] | None = None) -> Tensor:
    """Multi-head attention on a fused `(B, N, 3·h·head_dim)` [Q; K; V] projection.

    Without iRPE this is PyTorch's fused `scaled_dot_product_attention`; with it the explicit
    form with iRPE's terms added (`grid`: the (H, W) patch grid). Returns `(B, N, h·head_dim)`.
    """
    B, N, _ = qkv.shape
    q, k, v = qkv.view(B, N, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if irpe is None:
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    else:
        q = q * head_dim**-0.5
        logits = q @ k.transpose(-2, -1)
        rel = irpe.qk_term(q, k, *grid)
        attn = (logits if rel is None else logits + rel).softmax(-1)
        x = attn @ v
        rel = irpe.v_term(attn, *grid)
        if rel is not None:
            x = x + rel
    return x.transpose(1, 2).reshape(B, N, num_heads * head_dim)
