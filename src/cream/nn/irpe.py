"""iRPE: image relative position encoding (Wu et al., ICCV 2021), pure PyTorch.

Every pair of tokens (i, j) on an H × W grid gets a bucket id from its 2-D offset; a table per
bucket enters attention at up to three places (spec §4.3):

    logits[i, j] += q_i · r^K[b(i, j)]          (on "k"; `bias` mode: + b^K[b(i, j)])
    logits[i, j] += k_j · r^Q[b(j, i)]          (on "q"; k scaled like q)
    out_i        += Σ_j a[i, j] · r^V[b(i, j)]  (on "v"; contextual only)

Methods (spec §4.2) map the offset (x̃, ỹ) = pos_i − pos_j through the piecewise index g of a
ratio r: `euc` (distance), `quant` (squared distance), `product` (one bucket per (g(x̃), g(ỹ))),
`cross` (a rows part and a columns part whose encodings are summed). `clip` is AutoFormer's
relative position (`cream.nn.relpos` semantics): like `cross`, but offsets pos_j − pos_i are
clipped to ±R (R = `ratio`) and each part's class-token bucket comes first (row 0), so
AutoFormer's tables are this module's tables reshaped.

Skip tokens (class, distillation) lead the sequence; every pair involving one uses one extra
bucket per part. Tables start at zero. Each part has a (heads or 1, buckets[, head_dim]) table
and the parts are stacked on the first axis: (parts·(heads or 1), buckets, head_dim) in
contextual mode, (parts·(heads or 1), buckets) in bias mode. So AutoFormer's shared `clip` tables
are `(2, 2R + 2, head_dim)` as before; the original stores its q/k contextual tables transposed,
as (heads, head_dim, buckets).

The q/k lookups compute `x @ tableᵀ` (B, H, L, buckets) and gather it by bucket id, O(L·buckets·d
+ L²) per head instead of O(L²·d); the value term bins the attention weights by bucket
(scatter-add) and multiplies the bins by the table, O(L² + L·buckets·d). Both were the fastest
of the pure-PyTorch options measured on CPU (benchmarks/irpe_cost.py, one DeiT-Ti layer, batch 8,
forward + backward): gather 4.6 ms vs one-hot einsum 7.3 ms vs the original's flat indexing
12.5 ms; scatter 4.3 ms vs one-hot einsum 7.4 ms vs the original's gathered (L, L, d) table 13.6 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from timm.layers.attention import Attention
from torch import Tensor, nn

from cream.errors import ConfigError

METHODS = ("euc", "quant", "cross", "product", "clip")
MODES = ("ctx", "bias")


@dataclass(frozen=True)
class IRPEConfig:
    """One iRPE setting, shared by the q, k and v terms it is `on`.

    `ratio` sets α = r, β = 2r, γ = 8r of the piecewise index (for `clip`: the clip distance R).
    `skip` > 0 adds the extra bucket for leading skip tokens (their number is found at run time,
    L − H·W). `shared_head` uses one table for all heads.
    """

    method: str = "product"
    mode: str = "ctx"
    ratio: float = 1.9
    shared_head: bool = True
    skip: int = 0
    on: str = "k"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"irpe.method = {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.mode not in MODES:
            raise ConfigError(f"irpe.mode = {self.mode!r}; choose one of {', '.join(MODES)}")
        if not self.ratio > 0 or (self.method == "clip" and self.ratio != int(self.ratio)):
            allowed = "a positive integer for method 'clip'" if self.method == "clip" else "a positive number"
            raise ConfigError(f"irpe.ratio = {self.ratio!r}; must be {allowed}")
        if self.skip < 0:
            raise ConfigError(f"irpe.skip = {self.skip!r}; must be >= 0")
        if not self.on or any(c not in "qkv" for c in self.on) or len(set(self.on)) != len(self.on):
            raise ConfigError(f"irpe.on = {self.on!r}; must be a non-empty subset of 'qkv' (e.g. 'k', 'qkv')")
        if self.mode == "bias" and "v" in self.on:
            raise ConfigError(f"irpe.on = {self.on!r} with mode 'bias'; the value term is contextual only")

    @property
    def parts(self) -> int:
        """Index maps whose encodings are summed: 2 for `cross`/`clip` (rows, columns), else 1."""
        return 2 if self.method in ("cross", "clip") else 1

    @property
    def part_buckets(self) -> int:
        """Buckets of one part, the skip bucket included."""
        return num_buckets(self.method, self.ratio) + (1 if self.skip > 0 or self.method == "clip" else 0)

    @property
    def table_buckets(self) -> int:
        return self.parts * self.part_buckets


def piecewise_index(x: Tensor, ratio: float) -> Tensor:
    """g(x) of spec §4.1 as a long tensor: round(x) when |x| <= α, else log-spaced up to ±int(β)."""
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    x = x.double()
    far = alpha + torch.log(x.abs().clamp_min(alpha) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    far = torch.sign(x) * far.round().clamp(max=int(beta))
    return torch.where(x.abs() <= alpha, x.round(), far).long()


def num_buckets(method: str, ratio: float) -> int:
    """Buckets of one part, without the skip bucket (for `clip`: the 2R + 1 clipped offsets)."""
    side = 2 * int(ratio if method == "clip" else 2 * ratio) + 1
    return side * side if method == "product" else side


@lru_cache(maxsize=64)
def bucket_ids(method: str, ratio: float, grid: tuple[int, int], skip: int, part_buckets: int,
               device: torch.device) -> Tensor:
    """`(parts, L, L)` long ids into a row of all parts' buckets (`part_buckets` each, the skip
    bucket included when the table has one), L = skip + H·W. Cached."""
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward
        return _build_ids(method, ratio, grid, skip, part_buckets, device)


def _build_ids(method: str, ratio: float, grid: tuple[int, int], skip: int, part_buckets: int,
               device: torch.device) -> Tensor:
    H, W = grid
    rows = torch.arange(H, device=device).repeat_interleave(W)
    cols = torch.arange(W, device=device).repeat(H)
    dr, dc = rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]  # pos_i - pos_j
    b = int(2 * ratio)
    if method == "euc":
        ids = [piecewise_index((dr * dr + dc * dc).double().sqrt().round(), ratio) + b]
    elif method == "quant":
        ids = [piecewise_index(dr * dr + dc * dc, ratio) + b]
    elif method == "product":
        ids = [(piecewise_index(dr, ratio) + b) * (2 * b + 1) + piecewise_index(dc, ratio) + b]
    elif method == "cross":
        ids = [piecewise_index(dr, ratio) + b, piecewise_index(dc, ratio) + b]
    else:  # clip: AutoFormer's layout, pos_j - pos_i clipped, the skip bucket first
        R = int(ratio)
        ids = [(-dr).clamp(-R, R) + R + 1, (-dc).clamp(-R, R) + R + 1]
    extra = 0 if method == "clip" else num_buckets(method, ratio)
    out = torch.full((len(ids), skip + H * W, skip + H * W), extra, dtype=torch.long, device=device)
    for p, part in enumerate(ids):
        out[p, skip:, skip:] = part
        out[p] += p * part_buckets
    return out


class IRPE(nn.Module):
    """The q, k and v terms of one attention layer (`table_q`, `table_k`, `table_v`, or None).

    Call `qk_term` with the scaled queries (`q * scale`) and the raw keys; the query term scales
    the keys by the same `scale` (head_dim⁻¹ᐟ² unless given), as the original does.
    """

    def __init__(self, cfg: IRPEConfig, head_dim: int, num_heads: int, scale: float | None = None) -> None:
        super().__init__()
        self.cfg, self.head_dim, self.num_heads = cfg, head_dim, num_heads
        self.scale = head_dim**-0.5 if scale is None else scale
        rows = cfg.parts * (1 if cfg.shared_head else num_heads)
        shape = (rows, cfg.part_buckets, head_dim) if cfg.mode == "ctx" else (rows, cfg.part_buckets)
        for where in "qkv":
            table = nn.Parameter(torch.zeros(shape)) if where in cfg.on else None
            self.register_parameter(f"table_{where}", table)

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"method={c.method}, mode={c.mode}, ratio={c.ratio}, on={c.on!r}, shared_head={c.shared_head}, "
                f"buckets={c.table_buckets}, head_dim={self.head_dim}")

    def ids(self, height: int, width: int, length: int, device: torch.device) -> Tensor:
        """Bucket ids `(parts, L, L)` for a sequence of `length` = skip tokens + height·width."""
        skip = length - height * width
        if skip < 0 or (skip > 0 and self.cfg.skip == 0 and self.cfg.method != "clip"):
            raise ValueError(f"iRPE got {length} tokens for a {height}x{width} grid; "
                             f"{skip} skip tokens but irpe.skip = {self.cfg.skip}")
        return bucket_ids(self.cfg.method, float(self.cfg.ratio), (height, width), skip, self.cfg.part_buckets, device)

    def merged(self, table: Tensor, heads: int) -> Tensor:
        """`table` as one row of all parts' buckets per head: (heads or 1, parts·buckets[, head_dim]).

        Per-head tables keep their first `heads` (an elastic attention's active heads)."""
        t = table.unflatten(0, (self.cfg.parts, -1))
        if t.shape[1] > 1:
            t = t[:, :heads]
        return t.transpose(0, 1).flatten(1, 2)

    def active_tables(self, heads: int) -> dict[str, Tensor]:
        """The tables a `heads`-head slice of this layer uses (the first heads of per-head tables)."""
        out = {}
        for name, table in self.named_parameters():
            t = table.unflatten(0, (self.cfg.parts, -1))
            out[name] = table if t.shape[1] == 1 or t.shape[1] == heads else t[:, :heads].flatten(0, 1)
        return out

    def _lookup(self, x: Tensor, table: Tensor, ids: Tensor) -> Tensor:
        """`e[b, h, i, j] = x[b, h, i] · table[ids[i, j]]` (contextual) or `table[ids[i, j]]` (bias)."""
        table = self.merged(table, x.shape[1])
        if self.cfg.mode == "bias":
            out = table[:, ids[0]]
            for part in ids[1:]:
                out = out + table[:, part]
            return out.unsqueeze(0)
        B, H, L, _ = x.shape
        t = x @ table.transpose(-2, -1)  # (B, H, L, buckets)
        out = t.gather(-1, ids[0].expand(B, H, L, L))
        for part in ids[1:]:
            out = out + t.gather(-1, part.expand(B, H, L, L))
        return out

    def qk_term(self, q: Tensor, k: Tensor, height: int, width: int) -> Tensor | None:
        """What to add to the logits `q @ kᵀ`: `(B, H, L, L)` (bias mode: `(1, H or 1, L, L)`, broadcast)."""
        if self.table_q is None and self.table_k is None:
            return None
        ids = self.ids(height, width, q.shape[-2], q.device)
        out = None if self.table_k is None else self._lookup(q, self.table_k, ids)
        if self.table_q is not None:
            term = self._lookup(k * self.scale, self.table_q, ids).transpose(-2, -1)
            out = term if out is None else out + term
        return out

    def v_term(self, attn: Tensor, height: int, width: int) -> Tensor | None:
        """What to add to `attn @ v`: `(B, H, L, head_dim)`, `Σ_j a[i, j] · r^V[b(i, j)]`."""
        if self.table_v is None:
            return None
        B, H, L, _ = attn.shape
        ids = self.ids(height, width, L, attn.device)
        bins = attn.new_zeros(B, H, L, self.cfg.table_buckets)
        for part in ids:
            bins.scatter_add_(-1, part.expand(B, H, L, L), attn)
        return bins @ self.merged(self.table_v, H)


def mask_bias(n: int, attn: Tensor, attn_mask: Tensor | None, is_causal: bool) -> Tensor | None:
    """The additive form of an attention mask, as SDPA reads it: causal wins, a bool mask keeps its
    True entries. (timm's own helper for this is newer than our timm floor.)"""
    if is_causal:
        return attn.new_full((n, n), float("-inf")).triu_(1)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        return torch.zeros_like(attn_mask, dtype=attn.dtype).masked_fill_(~attn_mask, float("-inf"))
    return attn_mask


class IRPEAttention(nn.Module):
    """timm's ViT `Attention` with iRPE: takes over an `Attention`'s layers (so parameter names stay
    timm's, plus `irpe.table_*`) and runs the explicit (non-fused) form with the three terms added.

    The grid is square, of side √(L − prefix) for `prefix` leading class/register tokens.
    """

    def __init__(self, attn: Attention, cfg: IRPEConfig, prefix: int = 1) -> None:
        super().__init__()
        if getattr(attn, "gate", None) is not None:
            raise ValueError("IRPEAttention does not support gated attention")
        self.num_heads, self.head_dim, self.attn_dim = attn.num_heads, attn.head_dim, attn.attn_dim
        self.scale = attn.scale
        self.qkv, self.q_norm, self.k_norm, self.attn_drop = attn.qkv, attn.q_norm, attn.k_norm, attn.attn_drop
        self.norm, self.proj, self.proj_drop = attn.norm, attn.proj, attn.proj_drop
        self.prefix = prefix
        self.irpe = IRPE(cfg, self.head_dim, self.num_heads, self.scale)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        B, N, _ = x.shape
        side = math.isqrt(N - self.prefix)
        if side * side != N - self.prefix:
            raise ValueError(f"iRPE needs a square grid; got {N - self.prefix} patch tokens")
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        rel = self.irpe.qk_term(q, k, side, side)
        if rel is not None:
            attn = attn + rel
        bias = mask_bias(N, attn, attn_mask, is_causal)
        if bias is not None:
            attn = attn + bias
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = attn @ v
        rel = self.irpe.v_term(attn, side, side)
        if rel is not None:
            x = x + rel
        x = self.norm(x.transpose(1, 2).reshape(B, N, self.attn_dim))
        return self.proj_drop(self.proj(x))
