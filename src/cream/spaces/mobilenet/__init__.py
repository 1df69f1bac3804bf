"""MobileNet-style choice-block spaces (SPOS, Cream): op grammar, config, geometry, costs, the Cream preset."""

from cream.spaces.mobilenet.config import (
    ACTIVATIONS,
    EXPAND_ROUNDINGS,
    GATES,
    HEAD_STYLES,
    MobileNetConfig,
    StageConfig,
    config_from_dict,
)
from cream.spaces.mobilenet.cost import CONVENTIONS, op_cost
from cream.spaces.mobilenet.cream import (
    CREAM_OPS,
    CREAM_STAGES,
    arch_from_cream_encoding,
    cream_flops_table,
    cream_space,
    search_for_layer,
)
from cream.spaces.mobilenet.geometry import LayerGeom, layer_geometry
from cream.spaces.mobilenet.ops import SKIP, Op, expanded_width, make_divisible, parse_op
from cream.spaces.mobilenet.space import MobileNetSpace, from_config

__all__ = ["ACTIVATIONS", "CONVENTIONS", "CREAM_OPS", "CREAM_STAGES", "EXPAND_ROUNDINGS", "GATES", "HEAD_STYLES",
           "SKIP", "LayerGeom", "MobileNetConfig", "MobileNetSpace", "Op", "StageConfig", "arch_from_cream_encoding",
           "config_from_dict", "cream_flops_table", "cream_space", "expanded_width", "from_config", "layer_geometry",
           "make_divisible", "op_cost", "parse_op", "search_for_layer"]
