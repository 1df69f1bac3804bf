"""Elastic ops of the EfficientViT-MSRA supernet, named like timm's `efficientvit_msra` modules.

Each keeps super weights and uses a slice of them (`cream.nn.elastic`'s contract, with BN running
statistics among the active tensors so that extraction carries them): Conv+BN pairs with leading
input/output channels (depth-wise ones with the active channel count as groups) and a query kernel
cut from the centre of the super kernel; cascaded group attention with h of the super heads, each
head's per-head projections cut to the active value width C/h and the output projection reading,
for each active head, the leading C/h columns of that head's block of the super input.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cream.nn.elastic import ElasticModule, leading
from cream.spaces.efficientvit import se_width


class ElasticBatchNorm(nn.BatchNorm2d, ElasticModule):
    """BN over the leading `active` channels (2d maps or (N, C) vectors); the running statistics it
    updates are views of the super buffers, so recalibrating one path leaves the other channels alone."""

    def __init__(self, channels: int, weight_init: float = 1.0) -> None:
        super().__init__(channels)
        nn.init.constant_(self.weight, weight_init)
        self.active = channels

    def set_active(self, channels: int) -> None:
        self.active = channels
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        c = self.active
        return {"weight": leading(self.weight, c), "bias": leading(self.bias, c),
                "running_mean": leading(self.running_mean, c), "running_var": leading(self.running_var, c),
                "num_batches_tracked": self.num_batches_tracked}

    def forward(self, x: Tensor) -> Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        c, p = self.active, self.forward_params()
        stats = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean[:c] if stats else None, self.running_var[:c] if stats else None,
                            p["weight"], p["bias"], self.training, factor, self.eps)


class ElasticConv(nn.Conv2d, ElasticModule):
    """A square convolution (padding k//2) on leading input/output channels and a centred k×k of its
    super kernel; `depthwise` convs take one input channel per group, as many groups as active channels."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int, stride: int = 1, depthwise: bool = False,
                 bias: bool = False) -> None:
        super().__init__(in_chans, out_chans, kernel, stride, kernel // 2, groups=out_chans if depthwise else 1,
                         bias=bias)
        self.depthwise = depthwise
        self.active_in, self.active_out, self.active_kernel = in_chans, out_chans, kernel

    def set_active(self, in_chans: int, out_chans: int, kernel: int | None = None) -> None:
        self.active_in, self.active_out = in_chans, out_chans
        self.active_kernel = self.kernel_size[0] if kernel is None else kernel
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        K, k = self.kernel_size[0], self.active_kernel
        weight = leading(self.weight, self.active_out, 1 if self.depthwise else self.active_in)
        if k != K:
            cut = (K - k) // 2
            weight = weight[:, :, cut:cut + k, cut:cut + k]
        p = {"weight": weight}
        if self.bias is not None:
            p["bias"] = leading(self.bias, self.active_out)
        return p

    def forward(self, x: Tensor) -> Tensor:
        p = self.forward_params()
        return F.conv2d(x, p["weight"], p.get("bias"), self.stride, self.active_kernel // 2,
                        groups=self.active_out if self.depthwise else 1)


class ElasticConvNorm(nn.Module):
    """timm's `ConvNorm` (conv without bias, then BN) on super weights."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, depthwise: bool = False,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.conv = ElasticConv(in_chans, out_chans, kernel, stride, depthwise)
        self.bn = ElasticBatchNorm(out_chans, bn_weight_init)

    def set_active(self, in_chans: int, out_chans: int, kernel: int | None = None) -> None:
        self.conv.set_active(in_chans, out_chans, kernel)
        self.bn.set_active(out_chans)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class Residual(nn.Module):
    """`x + m(x)` (timm's `ResidualDrop` without drop: the published models use none)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return x + self.m(x)


def depthwise(dim: int, bn_weight_init: float = 1.0) -> ElasticConvNorm:
    return ElasticConvNorm(dim, dim, 3, depthwise=True, bn_weight_init=bn_weight_init)


class ElasticConvMlp(nn.Module):
    """timm's `ConvMlp`: 1×1 to 2C + BN, ReLU, 1×1 back to C + BN (γ initialised to 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pw1 = ElasticConvNorm(dim, 2 * dim)
        self.pw2 = ElasticConvNorm(2 * dim, dim, bn_weight_init=0.0)

    def set_active(self, dim: int) -> None:
        self.pw1.set_active(dim, 2 * dim)
        self.pw2.set_active(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw2(F.relu(self.pw1(x)))


class ElasticResidualPair(nn.Sequential):
    """Res(DW3×3 + BN) then Res(FFN): the token interaction and FFN around a stage's patch merging."""

    def __init__(self, dim: int) -> None:
        super().__init__(Residual(depthwise(dim)), Residual(ElasticConvMlp(dim)))

    def set_active(self, dim: int) -> None:
        self[0].m.set_active(dim, dim)
        self[1].m.set_active(dim)


class ElasticSqueezeExcite(nn.Module):
    """timm's `SqueezeExcite` (mean, 1×1 to `se_width`, ReLU, 1×1 back, sigmoid gate) on super weights."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = ElasticConv(channels, reduced, 1, bias=True)
        self.fc2 = ElasticConv(reduced, channels, 1, bias=True)

    def set_active(self, channels: int, reduced: int) -> None:
        self.fc1.set_active(channels, reduced)
        self.fc2.set_active(reduced, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))).sigmoid()


class ElasticPatchMerging(nn.Module):
    """timm's `PatchMerging`: 1×1 to 4C + BN, ReLU, DW3×3 s2 + BN, ReLU, SE, 1×1 to C' + BN."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        hidden = 4 * dim
        self.conv1 = ElasticConvNorm(dim, hidden)
        self.conv2 = ElasticConvNorm(hidden, hidden, 3, 2, depthwise=True)
        self.se = ElasticSqueezeExcite(hidden, se_width(dim))
        self.conv3 = ElasticConvNorm(hidden, out_dim)

    def set_active(self, dim: int, out_dim: int) -> None:
        hidden = 4 * dim
        self.conv1.set_active(dim, hidden)
        self.conv2.set_active(hidden, hidden)
        self.se.set_active(hidden, se_width(dim))
        self.conv3.set_active(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.se(F.relu(self.conv2(F.relu(self.conv1(x))))))


class ElasticDownsample(nn.Module):
    """timm's subsample of a stage: Res pair at C, patch merging to C', Res pair at C'."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.res1 = ElasticResidualPair(dim)
        self.patchmerge = ElasticPatchMerging(dim, out_dim)
        self.res2 = ElasticResidualPair(out_dim)

    def set_active(self, dim: int, out_dim: int) -> None:
        self.res1.set_active(dim)
        self.patchmerge.set_active(dim, out_dim)
        self.res2.set_active(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.res2(self.patchmerge(self.res1(x)))


@lru_cache(maxsize=32)
def bias_index(window: int, device: torch.device) -> Tensor:
    """LeViT's attention-bias index of a window: token pair -> its (|Δy|, |Δx|) offset, numbered in
    order of first appearance as timm numbers them (which, for a square window, is |Δy|·w + |Δx|)."""
    with torch.inference_mode(False):
        points = list(itertools.product(range(window), range(window)))
        index = [abs(a[0] - b[0]) * window + abs(a[1] - b[1]) for a in points for b in points]
        return torch.tensor(index, device=device).view(len(points), len(points))


class ElasticHeadProjection(ElasticConv):
    """The 1×1 output projection of cascaded group attention. Its super input is `heads` blocks of
    `head_dim` columns, one per head's values; with h heads of value width C/h active, head i reads the
    leading C/h columns of block i, so a head keeps its columns whatever the head count."""

    def __init__(self, heads: int, head_dim: int, out_chans: int) -> None:
        super().__init__(heads * head_dim, out_chans, 1)
        self.heads, self.head_dim, self.active_heads = heads, head_dim, heads

    def set_heads(self, heads: int, dim: int) -> None:
        self.active_heads = heads
        self.set_active(dim, dim)

    def active_params(self) -> dict[str, Tensor]:
        h, d, out = self.active_heads, self.active_in // self.active_heads, self.active_out
        weight = self.weight[:out]
        if d != self.head_dim or h != self.heads:
            weight = weight.view(out, self.heads, self.head_dim, 1, 1)[:, :h, :d].reshape(out, h * d, 1, 1)
        return {"weight": weight}


class ElasticCascadedGroupAttention(ElasticModule):
    """timm's `CascadedGroupAttention` with h of the super heads, value width C/h, a query kernel per head.

    The super shape has `num_heads` heads of value width `head_dim`; every super head has its own
    query kernel (largest `kernel`), and the output projection reads `num_heads` blocks of `head_dim`.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, key_dim: int, window: int, kernel: int) -> None:
        super().__init__()
        self.key_dim, self.head_dim, self.window = key_dim, head_dim, window
        self.scale = key_dim**-0.5
        self.qkvs = nn.ModuleList(ElasticConvNorm(head_dim, 2 * key_dim + head_dim) for _ in range(num_heads))
        self.dws = nn.ModuleList(ElasticConvNorm(key_dim, key_dim, kernel, depthwise=True) for _ in range(num_heads))
        self.proj = nn.Sequential(nn.ReLU(), ElasticConvNorm(num_heads * head_dim, dim, bn_weight_init=0.0))
        self.proj[1].conv = ElasticHeadProjection(num_heads, head_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.active_heads, self.active_dim = num_heads, dim

    def set_active(self, dim: int, num_heads: int, kernels: list[int]) -> None:
        d = dim // num_heads
        self.active_heads, self.active_dim = num_heads, dim
        for i in range(num_heads):
            self.qkvs[i].set_active(d, 2 * self.key_dim + d)
            self.dws[i].set_active(self.key_dim, self.key_dim, kernels[i])
        self.proj[1].conv.set_heads(num_heads, dim)
        self.proj[1].bn.set_active(dim)
        self._inference = None

    def active_params(self) -> dict[str, Tensor]:
        return {"attention_biases": leading(self.attention_biases, self.active_heads)}

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h, kd = self.active_heads, self.key_dim
        chunks = x.chunk(h, dim=1)
        biases = self.forward_params()["attention_biases"][:, bias_index(self.window, x.device)]
        outs, feat = [], chunks[0]
        for i in range(h):
            if i:
                feat = feat + chunks[i]
            q, k, v = self.qkvs[i](feat).split([kd, kd, C // h], dim=1)
            q = self.dws[i](q).flatten(2) * self.scale
            attn = (q.transpose(-2, -1) @ k.flatten(2) + biases[i]).softmax(dim=-1)
            feat = (v.flatten(2) @ attn.transpose(-2, -1)).view(B, C // h, H, W)
            outs.append(feat)
        return self.proj(torch.cat(outs, 1))


class ElasticLocalWindowAttention(nn.Module):
    """timm's `LocalWindowAttention`: the whole map when it is the window, else padded windows (no shift)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, key_dim: int, window: int, kernel: int) -> None:
        super().__init__()
        self.attn = ElasticCascadedGroupAttention(dim, num_heads, head_dim, key_dim, window, kernel)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        w = self.attn.window
        if H == w and W == w:
            return self.attn(x)
        pad_b, pad_r = (w - H % w) % w, (w - W % w) % w
        x = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, pad_r, 0, pad_b))
        pH, pW = H + pad_b, W + pad_r
        nH, nW = pH // w, pW // w
        x = x.view(B, nH, w, nW, w, C).transpose(2, 3).reshape(B * nH * nW, w, w, C).permute(0, 3, 1, 2)
        x = self.attn(x).permute(0, 2, 3, 1).view(B, nH, nW, w, w, C)
        x = x.transpose(2, 3).reshape(B, pH, pW, C)[:, :H, :W]
        return x.permute(0, 3, 1, 2).contiguous()
