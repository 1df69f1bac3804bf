"""MobileNet-style choice-block spaces, defined purely by config.

A space is a stem, a list of stages and a head. Each stage has an output width, a stride
(carried by its first layer only) and a list of layers; each layer lists the ops it may choose.
A layer with a single candidate is fixed. The arch names the op of every layer:

    {"ops": [["ds_k3_se"], ["ir_k3_e4_se", "ir_k5_e6_se"], ..., ["cn_k1"]]}

Op names (all with batch norm, the space's activation and "same"-size symmetric padding):

* ``ir_k{k}_e{e}[_se]`` inverted residual: 1x1 expand to ``make_divisible(cin * e)``,
  k x k depthwise, optional squeeze-excite on the expanded width, 1x1 project (no activation);
* ``ds_k{k}[_se]``      depthwise-separable: k x k depthwise, optional SE, 1x1 pointwise;
* ``cn_k{k}``           plain conv-BN-activation;
* ``skip``              identity (only where the layer keeps stride 1 and width).

Blocks with stride 1 and equal widths (ir, ds) add a residual. Costs are analytic in two
conventions: "plain" (conv and linear multiply-adds, the convention of
`cream.cost.measure_macs`, the default) and "ptflops" (the rules the original Cream code
counted with, spec §4: also BN, SE pooling/ReLU and biases). "ptflops-search" is the
original's per-path estimator (no stem BN, no classifier).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cream.errors import ArchError, ConfigError
from cream.registry import register_family, register_space
from cream.spaces.base import Arch, check_choice, check_keys

SKIP = "skip"
ACTIVATIONS = ("swish", "relu", "hard_swish", "relu6")
GATES = ("hard_sigmoid", "sigmoid")
CONVENTIONS = ("plain", "ptflops", "ptflops-search")
_OP_RE = re.compile(r"^(?P<kind>ir|ds|cn)_k(?P<k>\d+)(?:_e(?P<e>\d+(?:\.\d+)?))?(?P<se>_se)?$")


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a width to a multiple of `divisor`, never dropping more than 10 % (timm/MobileNet rule)."""
    n = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if n < 0.9 * v:
        n += divisor
    return n


@dataclass(frozen=True)
class Op:
    """One candidate operation, parsed from its name."""

    name: str
    kind: str  # "ir", "ds", "cn" or "skip"
    kernel: int = 0
    expand: float = 1.0
    se: bool = False


def parse_op(name: str) -> Op:
    """Parse an op name (see the module docstring); raise `ConfigError` for anything else."""
    if name == SKIP:
        return Op(SKIP, SKIP)
    m = _OP_RE.match(str(name))
    bad = (
        m is None
        or (m["kind"] == "ir") != (m["e"] is not None)
        or (m["kind"] == "cn" and m["se"] is not None)
        or int(m["k"]) % 2 == 0
    )
    if bad:
        raise ConfigError(
            f"op name {name!r} is not valid; use 'ir_k<odd k>_e<expansion>[_se]', 'ds_k<odd k>[_se]', "
            "'cn_k<odd k>' or 'skip'"
        )
    e = float(m["e"]) if m["e"] else 1.0
    return Op(name, m["kind"], int(m["k"]), int(e) if e.is_integer() else e, m["se"] is not None)


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
    name: str = "mobilenet"

    def __post_init__(self) -> None:
        check = _config_check
        check("act", self.act, ACTIVATIONS)
        check("se_gate", self.se_gate, GATES)
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
        cin = self.stem_channels
        for s, st in enumerate(self.stages):
            check(f"stages[{s}].stride", st.stride, (1, 2))
            if not isinstance(st.channels, int) or st.channels < 1:
                raise ConfigError(f"space.stages[{s}].channels = {st.channels!r} must be a positive integer")
            if not st.ops or any(not layer for layer in st.ops):
                raise ConfigError(f"space.stages[{s}].ops must list at least one op for each layer")
            for i, layer in enumerate(st.ops):
                for name in layer:
                    op = parse_op(name)
                    if op.kind == SKIP and (cin != st.channels or (i == 0 and st.stride != 1)):
                        raise ConfigError(
                            f"space.stages[{s}].ops[{i}] allows 'skip', but that layer changes the "
                            f"stride or width ({cin}->{st.channels}); remove 'skip' there"
                        )
                if len(set(layer)) != len(layer):
                    raise ConfigError(f"space.stages[{s}].ops[{i}] = {list(layer)} repeats an op")
                cin = st.channels
        if all(SKIP in layer for st in self.stages for layer in st.ops):
            raise ConfigError("space.stages: every layer allows 'skip'; at least one layer must be an op")


def _config_check(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"space.{key} = {value!r} is not allowed; choose one of {list(allowed)}")


@dataclass(frozen=True)
class LayerGeom:
    """Where one layer sits: input/output width, stride, input/output map size."""

    stage: int
    index: int
    cin: int
    cout: int
    stride: int
    h_in: int
    h_out: int


@dataclass
class MobileNetSpace:
    """A MobileNet-style choice-block space (see the module docstring for names and arch format)."""

    config: MobileNetConfig
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. the FLOPs range a preset was built from
    # per convention: fixed params, fixed MACs, and (params, MACs) of each candidate op of each layer
    _costs: dict[str, tuple[int, int, list[dict[str, tuple[int, int]]]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.name = self.config.name
        self.geometry = layer_geometry(self.config)

    # --- protocol -------------------------------------------------------------------------
    def sample(self, rng: random.Random, probs: dict[str, float] | None = None) -> Arch:
        """A random arch: each layer's op uniformly, or drawn with relative weights `probs`.

        `probs` maps op names to non-negative weights (Cream's `pre_prob`); each searchable layer
        normalises the weights of its own candidates, and an op not named gets weight 0 (so
        `skip` is never drawn unless it is listed). Fixed layers keep their single op.
        """
        if probs is None:
            return {"ops": [[rng.choice(layer) for layer in st.ops] for st in self.config.stages]}
        self._check_probs(probs)
        return {"ops": [[layer[0] if len(layer) == 1 else rng.choices(layer, [probs.get(o, 0.0) for o in layer])[0]
                         for layer in st.ops] for st in self.config.stages]}

    def _check_probs(self, probs: dict[str, float]) -> None:
        ops = {o for st in self.config.stages for layer in st.ops for o in layer}
        if not isinstance(probs, dict) or any(
                k not in ops or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                for k, v in probs.items()):
            raise ConfigError(f"op probabilities {probs!r} must map op names of the space ({sorted(ops)}) "
                              "to non-negative weights")
        for s, st in enumerate(self.config.stages):
            for i, layer in enumerate(st.ops):
                if len(layer) > 1 and not sum(probs.get(o, 0.0) for o in layer) > 0:
                    raise ConfigError(f"op probabilities give every candidate of layer ops[{s}][{i}] "
                                      f"({list(layer)}) weight 0; give at least one a positive weight")

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """SPOS mutation: each searchable layer is re-drawn (to a different op) with prob `mutate_prob`.

        If no layer was drawn, one searchable layer is, so the child always differs from its parent.
        """
        ops = [list(layer) for layer in self.validate(arch)["ops"]]
        free = [(s, i) for s, st in enumerate(self.config.stages) for i, c in enumerate(st.ops) if len(c) > 1]
        if not free:
            return {"ops": ops}
        picked = [si for si in free if rng.random() < self.config.mutate_prob] or [rng.choice(free)]
        for s, i in picked:
            ops[s][i] = rng.choice([o for o in self.config.stages[s].ops[i] if o != ops[s][i]])
        return {"ops": ops}

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch | None:
        a, b = self.validate(a), self.validate(b)
        pairs = zip(a["ops"], b["ops"], strict=True)
        return {"ops": [[rng.choice(pair) for pair in zip(la, lb, strict=True)] for la, lb in pairs]}

    def validate(self, arch: Arch) -> Arch:
        check_keys(arch, ["ops"])
        ops = arch["ops"]
        stages = self.config.stages
        if not isinstance(ops, list) or len(ops) != len(stages):
            raise ArchError(f"arch field 'ops' must be a list of {len(stages)} stage lists, got {ops!r}")
        out = []
        for s, (layers, st) in enumerate(zip(ops, stages, strict=True)):
            if not isinstance(layers, list) or len(layers) != len(st.ops):
                raise ArchError(
                    f"arch field 'ops[{s}]' must be a list of {len(st.ops)} op names, got {layers!r}"
                )
            out.append([check_choice(f"ops[{s}][{i}]", op, st.ops[i]) for i, op in enumerate(layers)])
        return {"ops": out}

    def cost(self, arch: Arch, convention: str = "plain") -> dict[str, int]:
        """`{"params", "macs"}` of the child network; see the module docstring for conventions."""
        if convention not in CONVENTIONS:
            raise ConfigError(f"cost convention {convention!r} is unknown; choose one of {list(CONVENTIONS)}")
        ops = self.validate(arch)["ops"]
        params, macs, layers = self._cost_table(convention)
        for g, costs in zip(self.geometry, layers, strict=True):
            p, m = costs[ops[g.stage][g.index]]
            params, macs = params + p, macs + m
        return {"params": params, "macs": macs}

    def _cost_table(self, convention: str) -> tuple[int, int, list[dict[str, tuple[int, int]]]]:
        """The parts of `cost`, computed once per convention: search costs every candidate per step."""
        table = self._costs.get(convention)
        if table is None:
            cfg = self.config
            layers = [{o: op_cost(parse_op(o), g, cfg.se_ratio, convention, _relu(cfg))
                       for o in cfg.stages[g.stage].ops[g.index]} for g in self.geometry]
            table = self._costs[convention] = (_fixed_params(cfg), _fixed_macs(cfg, self.geometry, convention), layers)
        return table

    def size(self) -> int:
        """Number of distinct archs."""
        return math.prod(len(c) for st in self.config.stages for c in st.ops)


# --- geometry and analytic cost ----------------------------------------------------------
def _conv_out(h: int, k: int, s: int) -> int:
    return (h + 2 * (((s - 1) + (k - 1)) // 2) - k) // s + 1


def layer_geometry(cfg: MobileNetConfig) -> list[LayerGeom]:
    """Widths, strides and map sizes of every layer (the same for every op of a layer)."""
    h = _conv_out(cfg.input_size, 3, cfg.stem_stride)
    cin, out = cfg.stem_channels, []
    for s, st in enumerate(cfg.stages):
        for i in range(len(st.ops)):
            stride = st.stride if i == 0 else 1
            h_out = _conv_out(h, 3, stride)
            out.append(LayerGeom(s, i, cin, st.channels, stride, h, h_out))
            cin, h = st.channels, h_out
    return out


def op_cost(op: Op, g: LayerGeom, se_ratio: float, convention: str, relu: bool = False) -> tuple[int, int]:
    """(params, macs) of one op at one layer. `convention` "plain" counts conv multiply-adds only;
    the ptflops conventions add 2 per BN element, the SE pool and ReLU, and conv biases (spec §4.2),
    and one per activation output when the space's activation is a ReLU (`relu`; ptflops counts
    ReLU/ReLU6 modules but not Swish or hard-swish)."""
    pt = convention != "plain"
    bn = 2 if pt else 0  # per element of a BN without activation
    bn_act = bn + (1 if pt and relu else 0)  # ... and of a BN followed by the activation
    a_in, a_out = g.h_in**2, g.h_out**2
    if op.kind == SKIP:
        return 0, 0
    if op.kind == "cn":
        return op.kernel**2 * g.cin * g.cout + 2 * g.cout, a_out * g.cout * (op.kernel**2 * g.cin + bn_act)
    mid = make_divisible(g.cin * op.expand) if op.kind == "ir" else g.cin
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


def _relu(cfg: MobileNetConfig) -> bool:
    return cfg.act in ("relu", "relu6")


def _fixed_params(cfg: MobileNetConfig) -> int:
    last = cfg.stages[-1].channels
    stem = 9 * 3 * cfg.stem_channels + 2 * cfg.stem_channels
    head = last * cfg.head_channels + cfg.head_channels
    return stem + head + cfg.head_channels * cfg.num_classes + cfg.num_classes


def _fixed_macs(cfg: MobileNetConfig, geometry: list[LayerGeom], convention: str) -> int:
    h_stem = _conv_out(cfg.input_size, 3, cfg.stem_stride) ** 2
    last, h_last = cfg.stages[-1].channels, geometry[-1].h_out ** 2
    macs = h_stem * 27 * cfg.stem_channels + last * cfg.head_channels
    if convention == "plain":
        return macs + cfg.head_channels * cfg.num_classes
    macs += h_last * last + cfg.head_channels  # global pool, conv_head bias
    if _relu(cfg):  # activations after the stem BN and the head conv
        macs += h_stem * cfg.stem_channels + cfg.head_channels
    if convention == "ptflops":
        macs += 2 * h_stem * cfg.stem_channels + cfg.head_channels * cfg.num_classes
    return macs


# --- building from a config mapping ------------------------------------------------------
_CONFIG_KEYS = {f for f in MobileNetConfig.__dataclass_fields__ if f not in ("stages",)}


def config_from_dict(d: dict[str, Any]) -> MobileNetConfig:
    """Parse a config mapping (YAML); nested `stem: {channels, stride}` and `head: {channels}` allowed."""
    d = dict(d)
    stem, head = d.pop("stem", {}) or {}, d.pop("head", {}) or {}
    if not isinstance(stem, dict) or set(stem) - {"channels", "stride"}:
        raise ConfigError(f"space.stem = {stem!r} must be a mapping with keys 'channels' and 'stride'")
    if not isinstance(head, dict) or set(head) - {"channels", "dropout"}:
        raise ConfigError(f"space.head = {head!r} must be a mapping with keys 'channels' and 'dropout'")
    for src, dst in (("channels", "stem_channels"), ("stride", "stem_stride")):
        if src in stem:
            d[dst] = stem[src]
    if "channels" in head:
        d["head_channels"] = head["channels"]
    if "dropout" in head:
        d["dropout"] = head["dropout"]
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


def from_config(**cfg: Any) -> MobileNetSpace:
    """The `mobilenet` family: a space from a config mapping (see `configs/spos/cifar-8layer.yaml`)."""
    return MobileNetSpace(config_from_dict(cfg))


# --- the Cream space (spec §1, §3) -------------------------------------------------------
CREAM_OPS = tuple(f"ir_k{k}_e{e}_se" for k in (3, 5, 7) for e in (4, 6))  # op ids 0..5 of the paper
CREAM_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2))  # searchable stages 1..5: width, stride


def _cream_config(layers: Sequence[int], input_size: int, num_classes: int, allow_skip: bool,
                  dropout: float) -> MobileNetConfig:
    later = (*CREAM_OPS, SKIP) if allow_skip else CREAM_OPS
    stages = [StageConfig(16, 1, (("ds_k3_se",),))]
    for (c, s), n in zip(CREAM_STAGES, layers, strict=True):
        stages.append(StageConfig(c, s, (CREAM_OPS,) + (later,) * (n - 1)))
    stages.append(StageConfig(320, 1, (("cn_k1",),)))
    return MobileNetConfig(
        stages=tuple(stages), stem_channels=16, stem_stride=2, head_channels=1280, num_classes=num_classes,
        input_size=input_size, act="swish", se_ratio=0.25, se_gate="hard_sigmoid", dropout=dropout,
        name="cream",
    )


def cream_flops_table() -> tuple[list[list[float]], list[list[float]]]:
    """Spec §4.4: ptflops MFLOPs at 224 of each op as the (first, each later) layer of stages 1..5."""
    cfg = _cream_config([2] * 5, 224, 1000, False, 0.0)
    geo = layer_geometry(cfg)
    first, later = [], []
    for s in range(1, 6):
        g0, g1 = (g for g in geo if g.stage == s)
        first.append([op_cost(parse_op(o), g0, 0.25, "ptflops")[1] / 1e6 for o in CREAM_OPS])
        later.append([op_cost(parse_op(o), g1, 0.25, "ptflops")[1] / 1e6 for o in CREAM_OPS])
    return first, later


def search_for_layer(first: Sequence[Sequence[float]], later: Sequence[Sequence[float]],
                     fmin: float, fmax: float) -> tuple[list[int], int] | None:
    """The original's rule (spec §3) from a FLOPs range [fmin, fmax] (MFLOPs) to (layers per stage
    1..5, input resolution); None where no supernet fits. Reproduced exactly, defects included (§8.12)."""
    sta = [1, 1, 1, 1, 1]
    order = [2, 3, 4, 1, 0, 2, 3, 4, 1, 0]
    limits = [3, 3, 3, 2, 2, 4, 4, 4, 4, 4]
    sf = 7
    lo = sum(first[s][0] for s in range(5))
    hi = sum(first[s][5] for s in range(5))
    if lo > fmax:
        while lo > fmax and sf >= 2:
            sf -= 1
            fmin *= 7 / sf
            fmax *= 7 / sf
        if sf < 2:
            return None
    elif hi < fmin:
        t = 0
        while hi < fmin and t <= 9:
            if sta[order[t]] >= limits[t]:
                t += 1
                continue
            hi += later[order[t]][5]
            sta[order[t]] += 1
        if t > 7 and hi < fmin:
            return None
    t = 0
    while t <= 9:
        if sta[order[t]] >= limits[t]:
            t += 1
            continue
        hi += later[order[t]][5]
        if hi <= fmax:
            sta[order[t]] += 1
        else:
            break
    return sta, 32 * sf


def cream_space(flops_min: float = 0, flops_max: float = 600, num_classes: int = 1000,
                layers: Sequence[int] | None = None, input_size: int | None = None,
                allow_skip: bool = False, dropout: float = 0.0) -> MobileNetSpace:
    """Cream's space (spec §1): depth per stage and input size from the FLOPs range (MFLOPs, ptflops
    convention) by `search_for_layer`, unless `layers` (5 stage depths, 1..6) / `input_size` are given.
    `allow_skip` adds 'skip' to every non-first layer (the original's -1; the paper never samples it)."""
    size = 224
    if layers is None:
        found = search_for_layer(*cream_flops_table(), float(flops_min), float(flops_max))
        if found is None:
            raise ConfigError(
                f"space.flops range [{flops_min}, {flops_max}] MFLOPs fits no Cream supernet; "
                "widen it (the smallest range that fits is about [0, 3])"
            )
        layers, size = found
    if len(layers) != 5 or any(not isinstance(n, int) or not 1 <= n <= 6 for n in layers):
        raise ConfigError(f"space.layers = {list(layers)!r} must be 5 stage depths, each in 1..6")
    cfg = _cream_config(list(layers), input_size or size, num_classes, allow_skip, dropout)
    return MobileNetSpace(cfg, meta={"flops_range": [flops_min, flops_max], "layers": list(layers)})


def arch_from_cream_encoding(encoding: Sequence[Sequence[int]]) -> Arch:
    """Arch from the original's 7 lists of op ids (§2; -1 = skip), e.g. [[0],[3],[3,3],...,[0]]."""
    if len(encoding) != 7 or list(encoding[0]) != [0] or list(encoding[6]) != [0]:
        raise ArchError(f"Cream encoding {encoding!r} must be 7 lists, the first and last being [0]")
    names = {i: o for i, o in enumerate(CREAM_OPS)} | {-1: SKIP}
    mid = [[check_choice(f"encoding[{s + 1}][{i}]", o, list(names)) for i, o in enumerate(st)]
           for s, st in enumerate(encoding[1:6])]
    return {"ops": [["ds_k3_se"], *[[names[o] for o in st] for st in mid], ["cn_k1"]]}


register_family("mobilenet", from_config)
register_space("cream", cream_space)
