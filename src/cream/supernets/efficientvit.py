"""The single-path supernet of the EfficientViT-MSRA space.

One network at the space's super shape, laid out and named exactly like timm's `EfficientVitMsra`
(`patch_embed.conv<i>`, `stages.<s>.downsample.{res1, patchmerge, res2}`, `stages.<s>.blocks.<i>.{dw0,
ffn0, mixer.m.attn, dw1, ffn1}`, `head.{bn, linear}`). A subnet uses, per stage, the first `depth`
blocks and leading slices of every weight and BN (AutoFormer-style entanglement): width C, the
first h attention heads with value width C/h (`cream.nn.elastic_effvit`), and each head's query
kernel cut from the centre of its super kernel. `extract(arch)` copies the active slices, BN
running statistics included, into timm's `EfficientVitMsra` of the arch (a strict load).
"""

from __future__ import annotations

from itertools import islice

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.efficientvit_msra import EfficientVitMsra
from torch import Tensor, nn

from cream.models.efficientvit import build_efficientvit, pretrained_cfg
from cream.nn.elastic import ElasticLinear, ElasticStage, active_state_dict
from cream.nn.elastic_effvit import (
    ElasticBatchNorm,
    ElasticConvMlp,
    ElasticConvNorm,
    ElasticDownsample,
    ElasticLocalWindowAttention,
    Residual,
    depthwise,
)
from cream.registry import SINGLE_PATH, register_supernet
from cream.spaces.base import Arch
from cream.spaces.efficientvit import EfficientVitSpace
from cream.supernets.base import arch_selected


class ElasticPatchEmbed(nn.Module):
    """timm's `PatchEmbedding`: four Conv3×3 s2 + BN, 3 → C/8 → C/4 → C/2 → C, ReLU between them."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        chans = (in_chans, dim // 8, dim // 4, dim // 2, dim)
        for i in range(4):
            self.add_module(f"conv{i + 1}", ElasticConvNorm(chans[i], chans[i + 1], 3, 2))
        self.in_chans = in_chans

    def set_active(self, dim: int) -> None:
        chans = (self.in_chans, dim // 8, dim // 4, dim // 2, dim)
        for i in range(4):
            getattr(self, f"conv{i + 1}").set_active(chans[i], chans[i + 1])

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.conv4(x)


class ElasticEfficientVitBlock(nn.Module):
    """timm's sandwich block: Res(DW) → Res(FFN) → Res(cascaded group attention) → Res(DW) → Res(FFN)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, key_dim: int, window: int, kernel: int) -> None:
        super().__init__()
        self.dw0 = Residual(depthwise(dim, bn_weight_init=0.0))
        self.ffn0 = Residual(ElasticConvMlp(dim))
        self.mixer = Residual(ElasticLocalWindowAttention(dim, num_heads, head_dim, key_dim, window, kernel))
        self.dw1 = Residual(depthwise(dim, bn_weight_init=0.0))
        self.ffn1 = Residual(ElasticConvMlp(dim))

    def set_active(self, dim: int, num_heads: int, kernels: list[int]) -> None:
        self.dw0.m.set_active(dim, dim)
        self.ffn0.m.set_active(dim)
        self.mixer.m.attn.set_active(dim, num_heads, kernels)
        self.dw1.m.set_active(dim, dim)
        self.ffn1.m.set_active(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


class ElasticNormLinear(nn.Module):
    """timm's `NormLinear` head (BN1d, Linear) on super weights."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = ElasticBatchNorm(dim)
        self.linear = ElasticLinear(dim, num_classes)
        trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def set_active(self, dim: int) -> None:
        self.bn.set_active(dim)
        self.linear.set_active(dim, self.linear.out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.bn(x))


class EfficientVitSupernet(nn.Module):
    """Shared weights of an `EfficientVitSpace` (its super shape); one arch's slices run per forward.

    Initialised as timm initialises `EfficientVitMsra` (PyTorch's conv defaults, BN γ 1 or 0 where timm
    zeroes the residual branches' last BN, zero attention biases, head trunc_normal(0.02)). Single-path
    training leaves BN statistics mixed over paths: score candidates with BN recalibration (the search's
    `bn_recal_images`), as for any BN supernet.
    """

    kind = SINGLE_PATH

    def __init__(self, space: EfficientVitSpace) -> None:
        super().__init__()
        self.space = space
        self.num_classes = space.num_classes
        dims, depths = space.super_embed_dims, space.super_depths
        self.num_features = self.head_hidden_size = dims[-1]
        self.patch_embed = ElasticPatchEmbed(space.in_chans, dims[0])
        stages = []
        for s in range(space.num_stages):
            blocks = [ElasticEfficientVitBlock(dims[s], space.super_num_heads[s], space.super_head_dims[s],
                                               space.key_dim, space.stage_window(s), space.super_kernel)
                      for _ in range(depths[s])]
            stages.append(ElasticStage(ElasticDownsample(dims[s - 1], dims[s]) if s else nn.Identity(), blocks))
        self.stages = nn.Sequential(*stages)
        self.head = ElasticNormLinear(dims[-1], self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.pretrained_cfg = self.default_cfg = pretrained_cfg(space, self.num_classes)
        self.set_arch(space.largest())

    @property
    def arch(self) -> Arch:
        return self._arch

    def set_arch(self, arch: Arch) -> None:
        """Select the path of `arch` (validated) for the next forwards."""
        arch = self.space.validate(arch)
        self._arch = arch
        dims = arch["embed_dim"]
        self.patch_embed.set_active(dims[0])
        for s, stage in enumerate(self.stages):
            if s:
                stage.downsample.set_active(dims[s - 1], dims[s])
            stage.depth = arch["depth"][s]
            for blk in islice(stage.blocks, stage.depth):
                blk.set_active(dims[s], arch["num_heads"][s], arch["kernels"])
        if isinstance(self.head, ElasticNormLinear):
            self.head.set_active(dims[-1])

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        """The super tensors whose slices `arch` uses: all but the blocks past each stage's depth and the
        per-head projections of heads past each stage's head count."""
        arch = self._arch if arch is None else self.space.validate(arch)
        unused = set()
        for stage, d, h in zip(self.stages, arch["depth"], arch["num_heads"], strict=True):
            unused |= {id(p) for blk in stage.blocks[d:] for p in blk.parameters()}
            for blk in stage.blocks[:d]:
                attn = blk.mixer.m.attn
                unused |= {id(p) for m in (*attn.qkvs[h:], *attn.dws[h:]) for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in unused]

    # --- timm face --------------------------------------------------------------------------
    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.patch_embed(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor, arch: Arch | None = None) -> Tensor:
        """Run the selected arch, or `arch` if given (without changing the selection)."""
        with arch_selected(self, arch):
            return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.linear if isinstance(self.head, ElasticNormLinear) else self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new super-width head (the analytic cost counts `space.num_classes`)."""
        self.num_classes = num_classes
        self.head = ElasticNormLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self.head.set_active(self._arch["embed_dim"][-1])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The attention biases are not decayed (as timm's EfficientViT-MSRA)."""
        return {n for n, _ in self.named_parameters() if "attention_biases" in n}

    # --- extraction -------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> EfficientVitMsra:
        """timm's `EfficientVitMsra` of `arch` holding copies of the active weights and BN statistics."""
        with arch_selected(self, arch):
            model = build_efficientvit(self.space, self._arch, num_classes=self.num_classes)
            state = {}
            for name in ("patch_embed", "head"):
                state.update(active_state_dict(getattr(self, name), name))
            for s, stage in enumerate(self.stages):
                state.update(active_state_dict(stage.downsample, f"stages.{s}.downsample"))
                heads = self._arch["num_heads"][s]
                for i in range(stage.depth):
                    block = active_state_dict(stage.blocks[i], f"stages.{s}.blocks.{i}")
                    state.update({k: v for k, v in block.items() if _head_of(k) < heads})
            model.load_state_dict(state, strict=True)
        return model.train(self.training).to(self.patch_embed.conv1.conv.weight.device)


def _head_of(key: str) -> int:
    """The head index of a per-head attention tensor's key (`...attn.qkvs.<i>.` / `...attn.dws.<i>.`), else -1."""
    for part in (".attn.qkvs.", ".attn.dws."):
        if part in key:
            return int(key.split(part, 1)[1].split(".", 1)[0])
    return -1


register_supernet("efficientvit", SINGLE_PATH, EfficientVitSupernet)
