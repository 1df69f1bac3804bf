"""The single-path supernet of a hierarchical (Swin-style) space, and any timm Swin as a supernet.

One network at the space's super shape, laid out and named exactly like timm's
`SwinTransformer` (`patch_embed`, `layers.<s>.downsample`, `layers.<s>.blocks.<i>`, `norm`,
`head.fc`). A subnet uses, per stage, the first `depth` blocks and leading slices of every
weight (AutoFormer-style entanglement): embed dim C, heads h (Q/K/V width h·head_dim), MLP width
int(C·r), and the centre of the super window's relative-position table. `extract(arch)` copies
the active slices into timm's `SwinTransformer` of the arch; as the names match, a timm Swin's
state dict loads into the supernet of its own shape, which is how `swin_from_timm` works.
"""

from __future__ import annotations

import math
from itertools import islice
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.swin_transformer import SwinTransformer, window_partition, window_reverse
from torch import Tensor, nn

from cream.errors import ConfigError, CreamError
from cream.models.swin import build_swin, pretrained_cfg
from cream.nn.elastic import ElasticConv2d, ElasticLayerNorm, ElasticLinear, ElasticStage, active_state_dict
from cream.nn.elastic_swin import ElasticPatchMerging, ElasticWindowAttention, shift_mask
from cream.registry import SINGLE_PATH, register_supernet
from cream.spaces.base import Arch
from cream.spaces.swin import SwinSpace, swin_space
from cream.supernets.base import arch_selected
from cream.supernets.from_timm import register_from_timm
from cream.weights import load_weights


class ElasticMlp(nn.Module):
    """timm's `Mlp` (fc1, exact GELU, fc2) on super weights."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ElasticLinear(dim, hidden)
        self.fc2 = ElasticLinear(hidden, dim)

    def set_active(self, dim: int, hidden: int) -> None:
        self.fc1.set_active(dim, hidden)
        self.fc2.set_active(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ElasticSwinBlock(nn.Module):
    """timm's `SwinTransformerBlock` (pre-norm (shifted) window attention and MLP) on super weights."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, window: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = ElasticLayerNorm(dim)
        self.attn = ElasticWindowAttention(dim, num_heads, head_dim, window)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = ElasticLayerNorm(dim)
        self.mlp = ElasticMlp(dim, hidden)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.window = self.shift = 0

    def set_active(self, dim: int, num_heads: int, hidden: int, window: int, shift: int) -> None:
        self.norm1.set_active(dim)
        self.attn.set_active(dim, num_heads, window)
        self.norm2.set_active(dim)
        self.mlp.set_active(dim, hidden)
        self.window, self.shift = window, shift

    def _attn(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        w, s = self.window, self.shift
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, (w, w)).view(-1, w * w, C)
        mask = shift_mask(H, w, s, x.device) if s else None
        x = window_reverse(self.attn(windows, mask).view(-1, w, w, C), (w, w), H, W)
        return torch.roll(x, shifts=(s, s), dims=(1, 2)) if s else x

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = x.reshape(B, -1, C)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, H, W, C)


class ElasticPatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = ElasticConv2d(in_chans, dim, patch_size, patch_size)
        self.norm = ElasticLayerNorm(dim)

    def set_active(self, dim: int) -> None:
        self.proj.set_active(dim)
        self.norm.set_active(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ElasticHead(nn.Module):
    """timm's `ClassifierHead` with average pooling over the token map."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = ElasticLinear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((1, 2))
        return x if pre_logits else self.fc(x)


class SwinSupernet(nn.Module):
    """Shared weights of a `SwinSpace` (its super shape); one arch's slices run per forward.

    Stochastic depth of block i (counted over all super blocks) is linspace(0, drop_path_rate)[i]
    whatever the arch; an extracted model gets timm's rates for its own depths (eval is unaffected).
    """

    kind = SINGLE_PATH

    def __init__(self, space: SwinSpace, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.space = space
        self.drop_path_rate = drop_path_rate
        self.num_classes = space.num_classes
        sup = space.super_arch()
        dims = sup["embed_dim"]
        self.num_features = self.head_hidden_size = dims[-1]
        self.patch_embed = ElasticPatchEmbed(space.patch_size, space.in_chans, dims[0])
        dpr = torch.linspace(0, drop_path_rate, sum(sup["depth"]), device="cpu").tolist()
        stages, first = [], 0
        for s in range(space.num_stages):
            c = dims[s]
            blocks = [ElasticSwinBlock(c, sup["num_heads"][s], space.head_dim, sup["window_size"][s],
                                       int(c * sup["mlp_ratio"][s]), dpr[first + i]) for i in range(sup["depth"][s])]
            first += sup["depth"][s]
            stages.append(ElasticStage(ElasticPatchMerging(dims[s - 1], c) if s else nn.Identity(), blocks))
        self.layers = nn.Sequential(*stages)
        self.norm = ElasticLayerNorm(dims[-1])
        self.head = ElasticHead(dims[-1], self.num_classes)
        self.pretrained_cfg = self.default_cfg = pretrained_cfg(space, self.num_classes)
        self._init_weights()
        self.set_arch(space.largest())

    def _init_weights(self) -> None:
        """timm's Swin init: Linear trunc_normal(0.02) and zero bias; LayerNorm (1, 0); tables trunc_normal."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def arch(self) -> Arch:
        return self._arch

    def set_arch(self, arch: Arch) -> None:
        """Select the path of `arch` (validated) for the next forwards."""
        arch = self.space.validate(arch)
        self._arch = arch
        dims = arch["embed_dim"]
        self.patch_embed.set_active(dims[0])
        for s, stage in enumerate(self.layers):
            c, w = dims[s], arch["window_size"][s]
            if s:
                stage.downsample.set_active(dims[s - 1], c)
            stage.depth = arch["depth"][s]
            for i, blk in enumerate(islice(stage.blocks, stage.depth)):
                blk.set_active(c, arch["num_heads"][s], int(c * arch["mlp_ratio"][s]), w, self.space.shift(s, i, w))
        self.norm.set_active(dims[-1])
        if isinstance(self.head.fc, ElasticLinear):
            self.head.fc.set_active(dims[-1], self.num_classes)

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        """The super tensors whose slices `arch` uses: all but the blocks past each stage's depth."""
        depths = (self._arch if arch is None else self.space.validate(arch))["depth"]
        unused = {id(p) for stage, d in zip(self.layers, depths, strict=True)
                  for blk in stage.blocks[d:] for p in blk.parameters()}
        return [p for p in self.parameters() if id(p) not in unused]

    # --- timm face --------------------------------------------------------------------------
    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self.layers(self.patch_embed(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor, arch: Arch | None = None) -> Tensor:
        """Run the selected arch, or `arch` if given (without changing the selection)."""
        with arch_selected(self, arch):
            return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new super-width classifier (the analytic cost counts `space.num_classes`)."""
        self.num_classes = num_classes
        self.head = ElasticHead(self.num_features, num_classes)
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)
            self.head.fc.set_active(self._arch["embed_dim"][-1], num_classes)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The relative-position bias tables are not decayed (as timm's Swin)."""
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}

    # --- extraction -------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> SwinTransformer:
        """timm's `SwinTransformer` of `arch` holding copies of the active weights."""
        with arch_selected(self, arch):
            model = build_swin(self.space, self._arch, num_classes=self.num_classes,
                               drop_path_rate=self.drop_path_rate, weight_init="skip")  # weights come next
            state = {}
            for name in ("patch_embed", "norm", "head"):
                state.update(active_state_dict(getattr(self, name), name))
            for s, stage in enumerate(self.layers):
                state.update(active_state_dict(stage.downsample, f"layers.{s}.downsample"))
                for i in range(stage.depth):
                    state.update(active_state_dict(stage.blocks[i], f"layers.{s}.blocks.{i}"))
            model.load_state_dict(state, strict=True)
        return model.train(self.training).to(self.norm.weight.device)


register_supernet("swin", SINGLE_PATH, SwinSupernet)


# ---- any timm Swin as a supernet ----

def _fractions(value: float, fractions: tuple[float, ...], multiple: int) -> list[int]:
    """`value`·f for each fraction, rounded down to a positive multiple of `multiple`; `value` itself included."""
    return sorted({max(multiple, int(value * f) // multiple * multiple) for f in fractions} | {int(value)})


def swin_space_of(model: SwinTransformer, name: str = "timm-swin", depth_fractions: tuple[float, ...] = (0.5, 1.0),
                  width_fractions: tuple[float, ...] = (0.5, 0.75, 1.0),
                  mlp_fractions: tuple[float, ...] = (0.5, 0.75, 1.0), **choices: Any) -> SwinSpace:
    """The space whose largest arch is `model` (a timm `SwinTransformer`): per stage the depths
    ⌈d·f⌉ and d, embed dims C·f (multiples of 8), heads h·f and MLP ratios r·f, and the model's window.
    `choices` (depths, embed_dims, num_heads, mlp_ratios, window_sizes: one list per stage) replace
    those defaults; each stage's largest must stay the model's, or its weights would not fit.

    Refuses (one-line `CreamError`) what the supernet cannot reproduce: non-square inputs or windows,
    head dims that differ between stages, qkv without bias, a map the window does not tile.
    """
    if not isinstance(model, SwinTransformer):
        raise CreamError(f"swin_space_of needs a timm SwinTransformer, got {type(model).__name__}")
    stages, cfg = list(model.layers), {k: [] for k in ("depths", "embed_dims", "num_heads", "mlp_ratios",
                                                         "window_sizes")}
    head_dims, img = set(), model.patch_embed.img_size
    patch = model.patch_embed.patch_size
    if img is None or img[0] != img[1] or patch[0] != patch[1]:
        raise CreamError(f"a timm Swin becomes a supernet only with a fixed square input and patch; got img_size "
                         f"{img}, patch_size {patch}")
    for s, stage in enumerate(stages):
        blk = stage.blocks[0]
        attn, c = blk.attn, blk.norm1.normalized_shape[0]
        h = attn.num_heads
        if attn.qkv.bias is None or blk.window_size[0] != blk.window_size[1] or blk.always_partition:
            raise CreamError(f"stage {s + 1} of the timm Swin has no qkv bias, a non-square window or "
                             f"always_partition; the supernet reproduces only timm's default Swin blocks")
        head_dims.add(attn.qkv.out_features // 3 // h)
        d = len(stage.blocks)
        cfg["depths"].append(sorted({max(1, math.ceil(d * f)) for f in depth_fractions} | {d}))
        cfg["embed_dims"].append(_fractions(c, width_fractions, 8))
        cfg["num_heads"].append(_fractions(h, width_fractions, 1))
        ratio = blk.mlp.fc1.out_features / c
        cfg["mlp_ratios"].append(sorted({ratio * f for f in mlp_fractions} | {ratio}))
        cfg["window_sizes"].append([blk.window_size[0]])
    if len(head_dims) != 1:
        raise CreamError(f"the timm Swin's stages have head dims {sorted(head_dims)}; the supernet needs one")
    unknown = sorted(set(choices) - set(cfg))
    if unknown:
        raise ConfigError(f"supernet_from_timm: choices {unknown} are unknown for a Swin; allowed: {sorted(cfg)}")
    for key, per_stage in choices.items():
        largest = [max(c) for c in cfg[key]]
        if not isinstance(per_stage, (list, tuple)) or len(per_stage) != len(stages) or any(
                not isinstance(c, (list, tuple)) or not c or max(c) != top
                for c, top in zip(per_stage, largest, strict=True)):
            raise ConfigError(f"supernet_from_timm: {key} = {per_stage!r} needs one list per stage ({len(stages)}) "
                              f"whose largest is the model's {largest}")
        cfg[key] = per_stage
    return swin_space(name=name, **cfg, img_size=img[0], patch_size=patch[0], in_chans=model.in_chans,
                      num_classes=model.num_classes, head_dim=head_dims.pop())


def swin_from_timm(model: SwinTransformer | str, weights: str | Path | None = None,
                   **space_kwargs: Any) -> tuple[SwinSpace, SwinSupernet]:
    """`(space, supernet)` where the supernet's largest arch is `model`, weights included (outputs equal).

    `model` is a timm `SwinTransformer` or a timm model name (built by `timm.create_model`); `weights`,
    a safetensors or torch file in timm's layout, is loaded into it first. `space_kwargs` go to
    `swin_space_of` (the choice fractions).
    """
    if isinstance(model, str):
        try:
            model = timm.create_model(model, **({"weight_init": "skip"} if weights else {}))
        except RuntimeError as e:
            raise CreamError(f"timm model {model!r} cannot be built: {str(e).splitlines()[0]}") from None
    if weights is not None:
        if not isinstance(model, nn.Module):
            raise CreamError(f"swin_from_timm needs a timm SwinTransformer or its name, got {type(model).__name__}")
        load_weights(model, Path(weights))
    space = swin_space_of(model, **space_kwargs)
    with torch.device("meta"):  # no initialisation: every tensor comes from the model
        supernet = SwinSupernet(space)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        supernet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise CreamError(f"the timm Swin's weights do not fit its supernet: {str(e).splitlines()[0]}") from None
    return space, supernet.train(model.training).to(next(model.parameters()).device)


register_from_timm(SwinTransformer, swin_from_timm)
