"""Elastic (weight-entangled) layers: each holds super weights and uses their leading slice.

Every elastic op has `set_active(...)` to choose its slice and `active_params()` returning the
sliced tensors under the same names as its static counterpart (`cream.nn.vit_blocks`). Its
forward uses exactly the values of `active_params()` (through `forward_params()`), so a state
dict built from them reproduces the supernet's output in the static model.

Slices are views, except the qkv weight, whose Q, K and V parts come from three places. A slice
that covers a whole tensor is the parameter itself (`leading`). The forward runs on contiguous
copies of strided slices (a slice of a weight's input columns): with gradients a matmul's
backward on a strided weight measured ~10 % slower per linear on CPU, and the copy is small next
to the activations; without gradients (eval, search) the copies are kept from one forward to
the next, so inference runs the extracted model's kernels on the same layouts, with no slicing
or copying per forward.
"""

from __future__ import annotations

from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cream.nn.irpe import IRPEConfig
from cream.nn.relpos import attend, attention_irpe, load_legacy_tables


def leading(t: Tensor, *sizes: int) -> Tensor:
    """`t[:sizes[0], :sizes[1], ...]`, or `t` itself when the sizes cover it.

    Even a full-range slice makes autograd allocate a zero gradient of the whole parameter and
    copy into it on every backward; the parameter itself accumulates its gradient directly.
    """
    if all(s == n for s, n in zip(sizes, t.shape, strict=False)):
        return t
    return t[tuple(slice(0, s) for s in sizes)]


class ElasticModule(nn.Module):
    """Base of the ops with super weights: `active_params()` is the active slice."""

    # (parameter key, tensors) of the last no-grad forward; `set_active` and `_apply` drop it
    _inference: tuple[tuple, dict[str, Tensor]] | None = None

    def active_params(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward_params(self) -> dict[str, Tensor]:
        """`active_params()` made contiguous. Without gradients they are kept while each parameter
        keeps its storage and version counter (an optimizer step, `load_state_dict` or any
        in-place write bumps it; a write through `.data`, invisible to autograd too, does not)."""
        if torch.is_grad_enabled():
            return {k: t.contiguous() for k, t in self.active_params().items()}
        key = tuple((p.data_ptr(), p._version) for p in self.parameters(recurse=False))
        if self._inference is None or self._inference[0] != key:
            self._inference = key, {k: t.contiguous() for k, t in self.active_params().items()}
        return self._inference[1]

    def _apply(self, *args, **kwargs):  # .to(), .half(), ... may give a parameter a reused address
        self._inference = None
        return super()._apply(*args, **kwargs)


class ElasticLinear(nn.Linear, ElasticModule):
    """`y = x W[:out, :in]ᵀ + b[:out]`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.active_in, self.active_out = in_features, out_features

    def set_active(self, in_features: int, out_features: int) -> None:
        self.active_in, self.active_out = in_features, out_features
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        p = {"weight": leading(self.weight, self.active_out, self.active_in)}
        if self.bias is not None:
            p["bias"] = leading(self.bias, self.active_out)
        return p

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, **self.forward_params())


class ElasticQKV(nn.Linear, ElasticModule):
    """The fused Q/K/V projection: `3·width` output rows, of which 3·q are used.

    Default layout: the rows are three blocks [Q; K; V] of `width` rows each, and a subnet of
    width q takes the first q rows of each block, for the weight and the bias alike.
    `legacy=True` reproduces the original AutoFormer slicing (spec §3): Q, K, V are the rows
    0, 3, 6, …; 1, 4, 7, …; 2, 5, 8, … of `W[:3q, :d]`, while the bias is `b[:3q]`, contiguous.
    Either way the active weight is returned as [Q; K; V] of shape (3q, d).
    """

    def __init__(self, in_features: int, width: int, legacy: bool = False) -> None:
        super().__init__(in_features, 3 * width)
        self.width, self.legacy = width, legacy
        self.active_in, self.active_width = in_features, width

    def set_active(self, in_features: int, width: int) -> None:
        self.active_in, self.active_width = in_features, width
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        d, q = self.active_in, self.active_width
        if self.legacy:
            weight = self.weight[: 3 * q, :d].view(q, 3, d).transpose(0, 1).reshape(3 * q, d)
            bias = leading(self.bias, 3 * q)
        elif q == self.width and d == self.in_features:
            weight, bias = self.weight, self.bias
        else:
            weight = self.weight.view(3, self.width, -1)[:, :q, :d].reshape(3 * q, d)
            bias = self.bias.view(3, self.width)[:, :q].reshape(3 * q)
        return {"weight": weight, "bias": bias}

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, **self.forward_params())


class ElasticLayerNorm(nn.LayerNorm, ElasticModule):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__(dim, eps=eps)
        self.active_dim = dim

    def set_active(self, dim: int) -> None:
        self.active_dim = dim
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        return {"weight": leading(self.weight, self.active_dim), "bias": leading(self.bias, self.active_dim)}

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.active_dim,), **self.forward_params(), eps=self.eps)


class ElasticConv2d(nn.Conv2d, ElasticModule):
    """A convolution that uses its first `active_out` output channels (all input channels)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int) -> None:
        super().__init__(in_chans, out_chans, kernel_size, stride=stride)
        self.active_out = out_chans

    def set_active(self, out_chans: int) -> None:
        self.active_out = out_chans
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        return {"weight": leading(self.weight, self.active_out), "bias": leading(self.bias, self.active_out)}

    def forward(self, x: Tensor) -> Tensor:
        p = self.forward_params()
        return F.conv2d(x, p["weight"], p["bias"], self.stride)


class ElasticAttention(ElasticModule):
    """Attention with a fixed head dim: h active heads use Q/K/V width q = h·head_dim.

    Relative positions (iRPE `irpe`, or AutoFormer's when `rel_pos`; `cream.nn.relpos`) are head_dim
    wide, so their tables are used whole when shared by all heads; per-head tables use their
    first h heads.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int = 64, rel_pos: bool = True,
                 max_relative_position: int = 14, legacy_qkv: bool = False, irpe: IRPEConfig | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim
        width = num_heads * head_dim
        self.qkv = ElasticQKV(dim, width, legacy=legacy_qkv)
        self.proj = ElasticLinear(width, dim)
        self.irpe = attention_irpe(head_dim, num_heads, rel_pos, max_relative_position, irpe)
        self._register_load_state_dict_pre_hook(load_legacy_tables)
        self.active_heads = num_heads

    def set_active(self, dim: int, num_heads: int) -> None:
        width = num_heads * self.head_dim
        self.active_heads = num_heads
        self.qkv.set_active(dim, width)
        self.proj.set_active(width, dim)

    def active_params(self) -> dict[str, Tensor]:
        if self.irpe is None:
            return {}
        return {f"irpe.{name}": t for name, t in self.irpe.active_tables(self.active_heads).items()}

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        return self.proj(attend(self.qkv(x), self.active_heads, self.head_dim, self.irpe, grid))


class ElasticStage(nn.Module):
    """A downsample then the first `depth` of its blocks: elastic depth for hierarchical supernets (Swin,
    EfficientViT), whose blocks past `depth` keep their weights for deeper archs."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        self.depth = len(blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        for blk in islice(self.blocks, self.depth):
            x = blk(x)
        return x


def active_state_dict(module: nn.Module, prefix: str = "") -> dict[str, Tensor]:
    """The active slices of every elastic op under `module`, keyed like a static state dict."""
    state = {}
    for name, m in module.named_modules(prefix=prefix):
        if isinstance(m, ElasticModule):
            state.update({f"{name}.{k}" if name else k: t for k, t in m.active_params().items()})
    return state
