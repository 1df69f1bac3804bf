"""Analytic params and multiply-adds of MobileNet-style layers, in two conventions.

"plain" counts conv and linear multiply-adds (the convention of `cream.cost.measure_macs`, the
default); "ptflops" follows the rules the original Cream code counted with (spec §4: also BN, SE
pooling/ReLU and biases); "ptflops-search" is the original's per-path estimator (no stem BN, no
classifier).
"""

from __future__ import annotations

from cream.spaces.mobilenet.config import MobileNetConfig
from cream.spaces.mobilenet.geometry import LayerGeom, conv_out
from cream.spaces.mobilenet.ops import SKIP, Op, expanded_width, make_divisible

CONVENTIONS = ("plain", "ptflops", "ptflops-search")


def projects(g: LayerGeom) -> bool:
    """Whether the layer changes stride or width (its `skip` is then a 1x1 projection + BN)."""
    return g.stride != 1 or g.cin != g.cout


def op_cost(op: Op, g: LayerGeom, se_ratio: float, convention: str, relu: bool = False,
            rounding: str = "divisible") -> tuple[int, int]:
    """(params, macs) of one op at one layer. `convention` "plain" counts conv multiply-adds only;
    the ptflops conventions add 2 per BN element, the SE pool and ReLU, and conv biases (spec §4.2),
    and one per activation output when the space's activation is a ReLU (`relu`; ptflops counts
    ReLU/ReLU6 modules but not Swish or hard-swish). `rounding` is the space's `expand_round`."""
    pt = convention != "plain"
    bn = 2 if pt else 0  # per element of a BN without activation
    bn_act = bn + (1 if pt and relu else 0)  # ... and of a BN followed by the activation
    a_in, a_out = g.h_in**2, g.h_out**2
    if op.kind == SKIP:
        if not projects(g):
            return 0, 0
        return g.cin * g.cout + 2 * g.cout, a_out * g.cout * (g.cin + bn)
    if op.kind == "cn":
        return op.kernel**2 * g.cin * g.cout + 2 * g.cout, a_out * g.cout * (op.kernel**2 * g.cin + bn_act)
    mid = expanded_width(g.cin, op.expand, rounding) if op.kind == "ir" else g.cin
    params = macs = 0
    if op.kind == "ir":
        params += g.cin * mid + 2 * mid
        macs += a_in * mid * (g.cin + bn_act)
    params += mid * op.kernel**2 + 2 * mid
    macs += a_out * mid * (op.kernel**2 + bn_act)
    if op.se:
        r = make_divisible(mid * se_ratio)
        params += 2 * mid * r + r + mid
        macs += 2 * mid * r + ((a_out * mid + r + r + mid) if pt else 0)  # pool, biases, ReLU
    params += mid * g.cout + 2 * g.cout
    macs += a_out * g.cout * (mid + bn)
    return params, macs


def uses_relu(cfg: MobileNetConfig) -> bool:
    return cfg.act in ("relu", "relu6")


def fixed_params(cfg: MobileNetConfig) -> int:
    last = cfg.stages[-1].channels
    stem = 9 * 3 * cfg.stem_channels + 2 * cfg.stem_channels
    head = last * cfg.head_channels + cfg.head_channels * (1 if cfg.head_style == "mobilenetv3" else 2)  # bias; BN
    return stem + head + cfg.head_channels * cfg.num_classes + cfg.num_classes


def fixed_macs(cfg: MobileNetConfig, geometry: list[LayerGeom], convention: str) -> int:
    h_stem = conv_out(cfg.input_size, 3, cfg.stem_stride) ** 2
    last, h_last = cfg.stages[-1].channels, geometry[-1].h_out ** 2
    head, v3 = cfg.head_channels, cfg.head_style == "mobilenetv3"
    h_head = 1 if v3 else h_last  # the map size the head conv runs at: after the pool, or before it
    macs = h_stem * 27 * cfg.stem_channels + h_head * last * head
    if convention == "plain":
        return macs + head * cfg.num_classes
    # global pool; conv_head bias (v3) or its BN (v2)
    macs += h_last * last + head if v3 else h_last * head * 3
    if uses_relu(cfg):  # activations after the stem BN and the head conv
        macs += h_stem * cfg.stem_channels + h_head * head
    if convention == "ptflops":
        macs += 2 * h_stem * cfg.stem_channels + cfg.head_channels * cfg.num_classes
    return macs
