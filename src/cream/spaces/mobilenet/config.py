"""The config of a MobileNet-style space: stem, stages of candidate-op layers, head; parsed from YAML."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cream.errors import ConfigError
from cream.spaces.mobilenet.ops import SKIP, parse_op

ACTIVATIONS = ("swish", "relu", "hard_swish", "relu6")
GATES = ("hard_sigmoid", "sigmoid")
#: "mobilenetv3": pool -> 1x1 conv (bias) -> act -> linear; "mobilenetv2": 1x1 conv -> BN -> act -> pool -> linear
HEAD_STYLES = ("mobilenetv3", "mobilenetv2")
#: an IR op's expanded width: "divisible" = make_divisible(cin * e) (timm, Cream); "exact" = round(cin * e)
EXPAND_ROUNDINGS = ("divisible", "exact")


@dataclass(frozen=True)
class StageConfig:
    """A stage: output width, stride of its first layer, and the candidate ops of each layer."""

    channels: int
    stride: int
    ops: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class MobileNetConfig:
    """Everything that defines a MobileNet-style space (and therefore its supernet and children)."""

    stages: tuple[StageConfig, ...]
    stem_channels: int = 16
    stem_stride: int = 2
    head_channels: int = 1280
    num_classes: int = 1000
    input_size: int = 224
    act: str = "swish"
    se_ratio: float = 0.25
    se_gate: str = "hard_sigmoid"
    dropout: float = 0.0
    mutate_prob: float = 0.1
    head_style: str = "mobilenetv3"
    expand_round: str = "divisible"
    name: str = "mobilenet"

    def __post_init__(self) -> None:
        check = _config_check
        check("act", self.act, ACTIVATIONS)
        check("se_gate", self.se_gate, GATES)
        check("head_style", self.head_style, HEAD_STYLES)
        check("expand_round", self.expand_round, EXPAND_ROUNDINGS)
        for key in ("stem_channels", "head_channels", "num_classes", "input_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"space.{key} = {getattr(self, key)!r} must be a positive integer")
        check("stem_stride", self.stem_stride, (1, 2))
        if not 0 < self.se_ratio <= 1:
            raise ConfigError(f"space.se_ratio = {self.se_ratio!r} must be in (0, 1]")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"space.dropout = {self.dropout!r} must be in [0, 1)")
        if not 0 < self.mutate_prob <= 1:
            raise ConfigError(f"space.mutate_prob = {self.mutate_prob!r} must be in (0, 1]")
        if not self.stages:
            raise ConfigError("space.stages is empty; give at least one stage")
        for s, st in enumerate(self.stages):
            check(f"stages[{s}].stride", st.stride, (1, 2))
            if not isinstance(st.channels, int) or st.channels < 1:
                raise ConfigError(f"space.stages[{s}].channels = {st.channels!r} must be a positive integer")
            if not st.ops or any(not layer for layer in st.ops):
                raise ConfigError(f"space.stages[{s}].ops must list at least one op for each layer")
            for i, layer in enumerate(st.ops):
                for name in layer:
                    if parse_op(name).se and self.head_style == "mobilenetv2":
                        raise ConfigError(f"space.stages[{s}].ops[{i}] has the SE op {name!r}, which the "
                                          "'mobilenetv2' head style does not support; use ops without '_se'")
                if len(set(layer)) != len(layer):
                    raise ConfigError(f"space.stages[{s}].ops[{i}] = {list(layer)} repeats an op")
        if all(SKIP in layer for st in self.stages for layer in st.ops) and not any(self.projects()):
            raise ConfigError("space.stages: every layer allows 'skip'; at least one layer must be an op")

    def projects(self) -> list[bool]:
        """Per layer (in order): does it change stride or width, so that its `skip` is a 1x1 strided
        projection + BN (no activation) rather than an identity?"""
        out, cin = [], self.stem_channels
        for st in self.stages:
            for i in range(len(st.ops)):
                out.append(cin != st.channels or (i == 0 and st.stride != 1))
                cin = st.channels
        return out


def _config_check(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"space.{key} = {value!r} is not allowed; choose one of {list(allowed)}")


_CONFIG_KEYS = {f for f in MobileNetConfig.__dataclass_fields__ if f not in ("stages",)}


def config_from_dict(d: dict[str, Any]) -> MobileNetConfig:
    """Parse a config mapping (YAML); nested `stem: {channels, stride}` and `head: {channels}` allowed."""
    d = dict(d)
    stem, head = d.pop("stem", {}) or {}, d.pop("head", {}) or {}
    if not isinstance(stem, dict) or set(stem) - {"channels", "stride"}:
        raise ConfigError(f"space.stem = {stem!r} must be a mapping with keys 'channels' and 'stride'")
    if not isinstance(head, dict) or set(head) - {"channels", "dropout", "style"}:
        raise ConfigError(f"space.head = {head!r} must be a mapping with keys 'channels', 'dropout' and 'style'")
    for src, dst in (("channels", "stem_channels"), ("stride", "stem_stride")):
        if src in stem:
            d[dst] = stem[src]
    if "channels" in head:
        d["head_channels"] = head["channels"]
    if "dropout" in head:
        d["dropout"] = head["dropout"]
    if "style" in head:
        d["head_style"] = head["style"]
    stages_raw = d.pop("stages", None)
    unknown = sorted(set(d) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"space has unknown keys {unknown}; allowed: {sorted(_CONFIG_KEYS | {'stem', 'head', 'stages'})}"
        )
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError("space.stages must be a non-empty list of {channels, stride, layers, ops}")
    return MobileNetConfig(stages=tuple(_stage_from_dict(i, s) for i, s in enumerate(stages_raw)), **d)


def _stage_from_dict(i: int, d: Any) -> StageConfig:
    where = f"space.stages[{i}]"
    if not isinstance(d, dict) or set(d) - {"channels", "stride", "layers", "ops"} or "ops" not in d:
        raise ConfigError(f"{where} = {d!r} must be a mapping with keys channels, stride, ops (and layers)")
    ops = d["ops"]
    if isinstance(ops, list) and ops and all(isinstance(o, str) for o in ops):
        layers = d.get("layers", 1)
        if not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"{where}.layers = {layers!r} must be a positive integer")
        per_layer = [ops] * layers
    elif isinstance(ops, list) and ops and all(isinstance(o, list) for o in ops):
        if "layers" in d and d["layers"] != len(ops):
            raise ConfigError(f"{where}.layers = {d['layers']!r} does not match the {len(ops)} lists in ops")
        per_layer = ops
    else:
        raise ConfigError(f"{where}.ops = {ops!r} must be a list of op names or a list of such lists")
    ops = tuple(tuple(str(o) for o in c) for c in per_layer)
    return StageConfig(d.get("channels"), d.get("stride", 1), ops)
