"""MiniViT's weight multiplexing: one physical transformer block applied several times in a row.

The block (timm's ViT `Block` or `SwinTransformerBlock`) keeps what is shared: qkv, proj, the MLP
and, in Swin, the relative-position bias table. Each application owns an `Application`: its two
LayerNorms, the head-mixing transforms before and after the softmax, Mini-Swin's LN_local + 7x7
depth-wise conv in front of the MLP, its drop-path rate and, in Mini-DeiT, its iRPE tables.

The attention is our own forward (`attend`) around the block's weights, since the head mixing needs
the logits and the probabilities, which the fused SDPA kernels never show. Each application's
qkv activations and output pass through modules (`block.attn.qkv`, `out_tap`) that forward hooks
can watch: `cream.teachers.intermediates` records them for relation distillation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import DropPath
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse
from torch import Tensor, nn

from cream.errors import ConfigError


def head_mix(num_heads: int, kind: str) -> nn.Module | None:
    """A linear map across the head axis of (B, H, N, N): Mini-DeiT's bias-free 1x1 conv ('conv'),
    Mini-Swin's `Linear` with bias ('linear'), or none (''). Initialised trunc_normal(0.02), bias 0."""
    if not kind:
        return None
    m: nn.Module = nn.Conv2d(num_heads, num_heads, 1, bias=False) if kind == "conv" else nn.Linear(num_heads, num_heads)
    nn.init.trunc_normal_(m.weight, std=0.02)
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)
    return m


def _mix(m: nn.Module, attn: Tensor) -> Tensor:
    if isinstance(m, nn.Linear):  # acts on the last axis: move the heads there and back
        return m(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return m(attn)


class Application(nn.Module):
    """What one application of a shared block owns (nothing here is shared with the other applications)."""

    def __init__(self, dim: int, num_heads: int, *, norm_layer: Callable[[int], nn.Module], drop_path: float = 0.0,
                 mix: str = "", local_ffn: bool = False, rpe: nn.Module | None = None) -> None:
        super().__init__()
        self.norm1, self.norm2 = norm_layer(dim), norm_layer(dim)
        self.mix_pre, self.mix_post = head_mix(num_heads, mix), head_mix(num_heads, mix)
        self.local_norm = norm_layer(dim) if local_ffn else None
        self.local_conv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim) if local_ffn else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.rpe = rpe

    def local(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """Mini-Swin's FFN transform: x = LN_local(x) (no residual around it), then x + DWConv7x7(x)."""
        if self.local_conv is None:
            return x
        x = self.local_norm(x)
        shape = x.shape
        m = x.reshape(shape[0], *grid, shape[-1]).permute(0, 3, 1, 2)
        return x + self.local_conv(m).permute(0, 2, 3, 1).reshape(shape)


def attend(attn: nn.Module, x: Tensor, app: Application, *, bias: Tensor | None = None, mask: Tensor | None = None,
           grid: tuple[int, int] | None = None) -> Tensor:
    """Self-attention of (B, N, C) tokens with the shared weights of `attn` (timm `Attention` or
    `WindowAttention`) and the per-application transforms of `app`:
    logits (+ iRPE on keys, + rel-pos `bias`) -> mix_pre -> (+ shift `mask`) -> softmax -> mix_post -> @ v."""
    b, n, _ = x.shape
    heads = attn.num_heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = getattr(attn, "q_norm", nn.Identity())(q), getattr(attn, "k_norm", nn.Identity())(k)
    q = q * attn.scale
    a = q @ k.transpose(-2, -1)
    rel = None if app.rpe is None else app.rpe.qk_term(q, k, *grid)
    if rel is not None:
        a = a + rel
    if bias is not None:
        a = a + bias
    if app.mix_pre is not None:
        a = _mix(app.mix_pre, a)
    if mask is not None:  # (windows, N, N), the batch's windows in order: B * windows rows
        a = (a.view(-1, mask.shape[0], heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    a = a.softmax(-1)
    if app.mix_post is not None:
        a = _mix(app.mix_post, a)
    a = attn.attn_drop(a)
    out = a @ v
    rel = None if app.rpe is None else app.rpe.v_term(a, *grid)
    if rel is not None:
        out = out + rel
    out = getattr(attn, "norm", nn.Identity())(out.transpose(1, 2).reshape(b, n, -1))
    return attn.proj_drop(attn.proj(out))


def _strip(block: nn.Module) -> nn.Module:
    """The block without what each application owns (its norms and drop paths): those move to `Application`s."""
    for name in ("norm1", "norm2", "drop_path1", "drop_path2"):
        setattr(block, name, nn.Identity())
    return block


class MultiplexedBlock(nn.Module):
    """A ViT `Block` applied `len(apps)` times in a row over (B, N, C) tokens on a `grid` (no prefix tokens)."""

    def __init__(self, block: nn.Module, apps: list[Application], grid: tuple[int, int]) -> None:
        super().__init__()
        self.block, self.apps, self.grid = _strip(block), nn.ModuleList(apps), tuple(grid)
        self.out_tap = nn.Identity()  # called on each application's output: a place for forward hooks

    def mix_tokens(self, x: Tensor, app: Application, index: int) -> Tensor:
        return attend(self.block.attn, x, app, grid=self.grid)

    def forward(self, x: Tensor) -> Tensor:
        for i, app in enumerate(self.apps):
            x = x + app.drop_path(self.mix_tokens(app.norm1(x), app, i))
            x = app.local(x, self.grid)
            x = x + app.drop_path(self.block.mlp(app.norm2(x)))
            x = self.out_tap(x)
        return x


class MultiplexedSwinBlock(MultiplexedBlock):
    """A `SwinTransformerBlock` applied `len(apps)` times over (B, H, W, C) maps; the cyclic shift
    alternates with each application, starting shifted when `first_shifted`.

    With `mask_unshifted` (the original code's behaviour), the shifted windows' mask is added in the
    unshifted applications too; the original registers one mask per block and always passes it.
    """

    def __init__(self, block: SwinTransformerBlock, apps: list[Application], *, first_shifted: bool = False,
                 mask_unshifted: bool = True) -> None:
        res = tuple(block.input_resolution)
        window = block.window_size
        super().__init__(block, apps, res)
        self.first_shifted, self.mask_unshifted = first_shifted, mask_unshifted
        # timm shrinks the window to the map and drops the shift where the map fits in one window
        self.shift = 0 if min(res) <= min(window) else window[0] // 2
        block.shift_size = (self.shift, self.shift)
        mask = block.get_attn_mask(device=block.attn.qkv.weight.device, dtype=torch.float32) if self.shift else None
        block.attn_mask = None  # timm's own mask (for the shift it was built with) is never used here
        self.register_buffer("shift_mask", mask, persistent=False)
        if any(r % w for r, w in zip(res, window, strict=True)):
            raise ConfigError(f"a Mini-Swin stage map of {res} does not split into windows of {window}; "
                              "choose model.kwargs img_size / window_size that divide")

    def mix_tokens(self, x: Tensor, app: Application, index: int) -> Tensor:
        b, h, w, c = x.shape
        win = self.block.window_size
        shifted = bool(self.shift) and (index + self.first_shifted) % 2 == 1
        if shifted:
            x = torch.roll(x, (-self.shift, -self.shift), (1, 2))
        windows = window_partition(x, win).reshape(-1, win[0] * win[1], c)
        mask = self.shift_mask if shifted or self.mask_unshifted else None
        out = attend(self.block.attn, windows, app, bias=self.block.attn._get_rel_pos_bias(), mask=mask)
        x = window_reverse(out.view(-1, *win, c), win, h, w)
        return torch.roll(x, (self.shift, self.shift), (1, 2)) if shifted else x
