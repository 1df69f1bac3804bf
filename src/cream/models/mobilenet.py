"""Child networks of MobileNet-style spaces, built as timm `MobileNetV3` (or, with the
MobileNetV2-style head, timm `EfficientNet`) models.

Every layer's op becomes a timm block string (e.g. ``ir_r1_k5_s2_e6_c40_se0.25``), so a child is
exactly what timm's own builder makes of it: the state-dict layout of the original Cream child
networks (``conv_stem``, ``bn1``, ``blocks.i.j.*``, ``conv_head``, ``classifier``), timm's
feature extraction, `forward_features`/`forward_head`, `reset_classifier` and so on. Two things
timm's block strings cannot say are applied to the built block by `finish_block`: a `skip` that
projects (a 1x1 strided conv + BN, whose activation is removed) and exact expansion widths. The
supernet builds each candidate block the same way, so extraction is a state-dict copy.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import create_conv2d, get_act_layer, get_norm_act_layer
from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite
from timm.models._efficientnet_builder import EfficientNetBuilder, decode_arch_def, round_channels
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from torch import nn

from cream.errors import ArchError
from cream.registry import register_model_builder
from cream.spaces.base import Arch
from cream.spaces.mobilenet import SKIP, LayerGeom, MobileNetConfig, MobileNetSpace, expanded_width, parse_op
from cream.spaces.mobilenet.cost import projects


def _keep_channels(channels: float) -> int:
    """Widths in our configs are exact; timm would otherwise round them to multiples of 8."""
    return int(channels)


def block_string(op_name: str, geom: LayerGeom, se_ratio: float) -> str:
    """The timm block string of one op at one layer (an identity `skip` has none; a projecting one is
    a 1x1 conv-BN whose activation `finish_block` removes)."""
    if op_name == SKIP:
        return f"cn_r1_k1_s{geom.stride}_c{geom.cout}"
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
    if op_name == SKIP and not projects(geom):
        return nn.Identity()
    builder = EfficientNetBuilder(output_stride=32, **timm_kwargs(cfg))
    stages = builder(geom.cin, decode_arch_def([[block_string(op_name, geom, cfg.se_ratio)]]))
    return finish_block(cfg, op_name, geom, stages[0][0])


def finish_block(cfg: MobileNetConfig, op_name: str, geom: LayerGeom, block: nn.Module) -> nn.Module:
    """What block strings cannot say: a projecting `skip` has no activation; an "exact" IR op
    expands to `round(cin * e)` channels instead of timm's multiple of 8 (its convs are rebuilt)."""
    if op_name == SKIP:
        block.bn1.act = nn.Identity()
        return block
    op = parse_op(op_name)
    mid = expanded_width(geom.cin, op.expand, cfg.expand_round)
    if isinstance(block, InvertedResidual) and block.conv_pw.out_channels != mid:
        kw = timm_kwargs(cfg)
        norm_act = get_norm_act_layer(kw["norm_layer"], kw["act_layer"])
        block.conv_pw = create_conv2d(geom.cin, mid, 1, padding="")
        block.bn1 = norm_act(mid, inplace=True)
        block.conv_dw = create_conv2d(mid, mid, op.kernel, stride=geom.stride, padding="", depthwise=True)
        block.bn2 = norm_act(mid, inplace=True)
        if op.se:
            block.se = kw["se_layer"](mid, rd_ratio=cfg.se_ratio, act_layer=kw["act_layer"])
        block.conv_pwl = create_conv2d(mid, geom.cout, 1, padding="")
    return block


def _finish_child(space: MobileNetSpace, arch: Arch, model: nn.Module) -> None:
    """`finish_block` on every block of a built child."""
    ops = arch["ops"]
    built = [g for g in space.geometry if ops[g.stage][g.index] != SKIP or projects(g)]
    for g, block in zip(built, (b for stage in model.blocks for b in stage), strict=True):
        finish_block(space.config, ops[g.stage][g.index], g, block)


def arch_block_strings(space: MobileNetSpace, arch: Arch) -> list[list[str]]:
    """timm `arch_def` of a child: one list of block strings per stage, identity skips left out."""
    ops = space.validate(arch)["ops"]
    stages: list[list[str]] = [[] for _ in space.config.stages]
    for g in space.geometry:
        op = ops[g.stage][g.index]
        if op != SKIP or projects(g):
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
    """`MobileNetV3(**kwargs)` (`EfficientNet` for the MobileNetV2-style head) arguments of the child of
    `arch` (overrides: num_classes, drop_rate, ...)."""
    cfg = space.config
    kwargs = {
        **timm_kwargs(cfg),
        "block_args": decode_arch_def(arch_block_strings(space, arch)),
        "num_classes": cfg.num_classes, "stem_size": cfg.stem_channels, "fix_stem": True,
        "num_features": cfg.head_channels, "drop_rate": cfg.dropout,
        **overrides,
    }
    if cfg.head_style == "mobilenetv3":
        kwargs.setdefault("head_bias", True)
    else:
        del kwargs["se_from_exp"]  # EfficientNet always takes SE widths from the expanded width
    return kwargs


def build_child(space: MobileNetSpace, arch: Arch, **overrides: Any) -> MobileNetV3 | EfficientNet:
    """The standalone network of `arch` (freshly initialised; the supernet's `extract` copies weights)."""
    cls = MobileNetV3 if space.config.head_style == "mobilenetv3" else EfficientNet
    model = cls(**child_kwargs(space, arch, **overrides))
    _finish_child(space, space.validate(arch), model)
    if space.config.stem_stride == 1:
        # timm's stem always has stride 2; its 3x3 conv has padding 1 either way, so this is exact.
        model.conv_stem.stride = (1, 1)
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(space.config, num_classes=model.num_classes)
    return model


register_model_builder("mobilenet", build_child)
