"""Child networks of MobileNet-style spaces, built as timm `MobileNetV3` models.

Every layer's op becomes a timm block string (e.g. ``ir_r1_k5_s2_e6_c40_se0.25``), so a child is
exactly what timm's own builder makes of it: the state-dict layout of the original Cream child
networks (``conv_stem``, ``bn1``, ``blocks.i.j.*``, ``conv_head``, ``classifier``), timm's
feature extraction, `forward_features`/`forward_head`, `reset_classifier` and so on. The supernet
builds each candidate block with the same builder, so extraction is a state-dict copy.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import get_act_layer
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import EfficientNetBuilder, decode_arch_def, round_channels
from timm.models.mobilenetv3 import MobileNetV3
from torch import nn

from cream.errors import ArchError
from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.mobilenet import SKIP, LayerGeom, MobileNetConfig, MobileNetSpace, parse_op


def _keep_channels(channels: float) -> int:
    """Widths in our configs are exact; timm would otherwise round them to multiples of 8."""
    return int(channels)


def block_string(op_name: str, geom: LayerGeom, se_ratio: float) -> str:
    """The timm block string of one op at one layer (`skip` has none)."""
    op = parse_op(op_name)
    s = f"{op.kind}_r1_k{op.kernel}_s{geom.stride}"
    if op.kind == "ir":
        s += f"_e{op.expand}"
    s += f"_c{geom.cout}"
    return s + (f"_se{se_ratio:g}" if op.se else "")


def timm_kwargs(cfg: MobileNetConfig) -> dict[str, Any]:
    """Arguments shared by `MobileNetV3` and `EfficientNetBuilder` for a space config."""
    se_layer = partial(
        SqueezeExcite, gate_layer=cfg.se_gate, force_act_layer=nn.ReLU, rd_round_fn=round_channels
    )
    return dict(
        act_layer=get_act_layer(cfg.act), norm_layer=nn.BatchNorm2d, se_layer=se_layer,
        se_from_exp=True, round_chs_fn=_keep_channels, pad_type="",
    )


def make_block(cfg: MobileNetConfig, op_name: str, geom: LayerGeom) -> nn.Module:
    """One candidate block, built by timm's builder exactly as it is built inside a child."""
    if op_name == SKIP:
        return nn.Identity()
    builder = EfficientNetBuilder(output_stride=32, **timm_kwargs(cfg))
    stages = builder(geom.cin, decode_arch_def([[block_string(op_name, geom, cfg.se_ratio)]]))
    return stages[0][0]


def arch_block_strings(space: MobileNetSpace, arch: Arch) -> list[list[str]]:
    """timm `arch_def` of a child: one list of block strings per stage, skipped layers left out."""
    ops = space.validate(arch)["ops"]
    stages: list[list[str]] = [[] for _ in space.config.stages]
    for g in space.geometry:
        op = ops[g.stage][g.index]
        if op != SKIP:
            stages[g.stage].append(block_string(op, g, space.config.se_ratio))
    stages = [s for s in stages if s]
    if not stages:
        raise ArchError("arch skips every layer; at least one layer must be an op")
    return stages


def pretrained_cfg(cfg: MobileNetConfig, **extra: Any) -> dict[str, Any]:
    """A timm-style pretrained_cfg (ImageNet normalisation, bicubic, crop 0.875)."""
    size = cfg.input_size
    return {
        "url": "", "num_classes": cfg.num_classes, "input_size": (3, size, size), "pool_size": (1, 1),
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "first_conv": "conv_stem", "classifier": "classifier", **extra,
    }


def child_kwargs(space: MobileNetSpace, arch: Arch, **overrides: Any) -> dict[str, Any]:
    """`MobileNetV3(**kwargs)` arguments of the child of `arch` (overrides: num_classes, drop_rate, ...)."""
    cfg = space.config
    return {
        **timm_kwargs(cfg),
        "block_args": decode_arch_def(arch_block_strings(space, arch)),
        "num_classes": cfg.num_classes, "stem_size": cfg.stem_channels, "fix_stem": True,
        "num_features": cfg.head_channels, "head_bias": True, "drop_rate": cfg.dropout,
        **overrides,
    }


def build_child(space: MobileNetSpace, arch: Arch, **overrides: Any) -> MobileNetV3:
    """The standalone network of `arch` (freshly initialised; the supernet's `extract` copies weights)."""
    model = MobileNetV3(**child_kwargs(space, arch, **overrides))
    if space.config.stem_stride == 1:
        # timm's stem always has stride 2; its 3x3 conv has padding 1 either way, so this is exact.
        model.conv_stem.stride = (1, 1)
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(space.config, num_classes=model.num_classes)
    return model


register_model_builder("mobilenet", build_child)
