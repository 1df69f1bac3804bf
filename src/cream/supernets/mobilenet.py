"""Single-path choice-block supernet of a MobileNet-style space (SPOS, Cream).

Each layer is an `nn.ModuleDict` holding one block per candidate op (`skip` is an identity, or a
1x1 projection where the layer changes stride or width), built by timm's builder exactly as in a
child network, so `extract(arch)` is a plain state-dict copy into a timm `MobileNetV3` (the class
of the published Cream models; `EfficientNet` for the MobileNetV2-style head) and its eval outputs
equal the supernet's. Stem, stage-0/-6 style fixed layers and head are shared by all paths.

Training strategies pick a path per step with `set_arch(arch)`, or pass `arch=` to `forward`
to run another path (a teacher) without changing the selected one.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d, create_conv2d, get_norm_act_layer
from timm.models._efficientnet_builder import efficientnet_init_weights
from torch import nn

from cream.models.mobilenet import build_child, make_block, pretrained_cfg, timm_kwargs
from cream.registry import SINGLE_PATH, register_supernet
from cream.spaces.base import Arch, arch_key
from cream.spaces.mobilenet import MobileNetSpace


class MobileNetSupernet(nn.Module):
    """Weights of every path of a `MobileNetSpace`; one path runs per forward."""

    kind = SINGLE_PATH

    def __init__(self, space: MobileNetSpace, num_classes: int | None = None, drop_rate: float | None = None):
        super().__init__()
        cfg = space.config
        self.space = space
        self.num_classes = cfg.num_classes if num_classes is None else num_classes
        self.drop_rate = cfg.dropout if drop_rate is None else drop_rate
        kw = timm_kwargs(cfg)
        self.conv_stem = create_conv2d(3, cfg.stem_channels, 3, stride=cfg.stem_stride, padding="")
        self.bn1 = get_norm_act_layer(kw["norm_layer"], kw["act_layer"])(cfg.stem_channels, inplace=True)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleDict({op: make_block(cfg, op, g) for op in st.ops[g.index]})
                for g in space.geometry if g.stage == s
            )
            for s, st in enumerate(cfg.stages)
        )
        self.head_style = cfg.head_style
        last = cfg.stages[-1].channels
        self.head_hidden_size = cfg.head_channels
        if self.head_style == "mobilenetv3":  # pool -> conv (bias) -> act -> linear
            self.num_features = last
            self.conv_head = create_conv2d(last, cfg.head_channels, 1, padding="", bias=True)
            self.act2 = kw["act_layer"](inplace=True)
        else:  # conv -> BN -> act -> pool -> linear
            self.num_features = cfg.head_channels
            self.conv_head = create_conv2d(last, cfg.head_channels, 1, padding="")
            self.bn2 = get_norm_act_layer(kw["norm_layer"], kw["act_layer"])(cfg.head_channels, inplace=True)
        self.flatten = nn.Flatten(1)
        self.reset_classifier(self.num_classes)  # global_pool, classifier
        self.pretrained_cfg = self.default_cfg = pretrained_cfg(cfg, num_classes=self.num_classes)
        efficientnet_init_weights(self)
        self._cache: dict[Any, list[tuple[nn.ModuleDict, str]]] = {}
        self.set_arch({"ops": [[c[0] for c in st] for st in space.allowed]})  # until a strategy sets one

    # --- paths ------------------------------------------------------------------------------
    def _path_of(self, arch: Arch, validated: bool = False) -> list[tuple[nn.ModuleDict, str]]:
        """The (layer, op) blocks of `arch`, cached by arch; `validated` skips a second validation."""
        key = arch_key(arch)
        path = self._cache.get(key)
        if path is None:
            ops = (arch if validated else self.space.validate(arch))["ops"]
            path = [
                (layer, ops[s][i])
                for s, stage in enumerate(self.blocks)
                for i, layer in enumerate(stage)
                if not isinstance(layer[ops[s][i]], nn.Identity)
            ]
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = path
        return path

    def set_arch(self, arch: Arch) -> None:
        """Select the path that following forwards run."""
        self.arch = self.space.validate(arch)
        self._path = self._path_of(self.arch, validated=True)

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]:
        """Parameters used by a path (shared stem/head plus the chosen blocks): a strategy's θ."""
        path = self._path if arch is None else self._path_of(arch)
        chosen = {id(p) for layer, op in path for p in layer[op].parameters()}
        return [p for n, p in self.named_parameters() if not n.startswith("blocks.") or id(p) in chosen]

    # --- timm face --------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        for layer, op in self._path if arch is None else self._path_of(arch):
            x = layer[op](x)
        return x if self.head_style == "mobilenetv3" else self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head_style == "mobilenetv3":
            x = self.flatten(self.act2(self.conv_head(self.global_pool(x))))
        else:
            x = self.flatten(self.global_pool(x))
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        """Run the selected path, or `arch` if given (without changing the selection)."""
        return self.forward_head(self.forward_features(x, arch))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool)
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()

    # --- extraction -------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """The timm `MobileNetV3` (`EfficientNet`) of `arch`, with this supernet's weights and BN statistics."""
        child = build_child(self.space, arch, num_classes=self.num_classes, drop_rate=self.drop_rate)
        shared = ("conv_stem", "bn1", "conv_head", "classifier", *(("bn2",) if hasattr(self, "bn2") else ()))
        for name in shared:
            getattr(child, name).load_state_dict(getattr(self, name).state_dict())
        child_blocks = [b for stage in child.blocks for b in stage]
        path = self._path_of(arch)
        for dst, (layer, op) in zip(child_blocks, path, strict=True):
            dst.load_state_dict(layer[op].state_dict())
        child.pretrained_cfg = child.default_cfg = dict(self.pretrained_cfg)
        return child.to(next(self.parameters()).device).train(self.training)


register_supernet("mobilenet", SINGLE_PATH, MobileNetSupernet)
