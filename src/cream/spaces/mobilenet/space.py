"""MobileNet-style choice-block spaces, defined purely by config.

A space is a stem, a list of stages and a head. Each stage has an output width, a stride
(carried by its first layer only) and a list of layers; each layer lists the ops it may choose
(`cream.spaces.mobilenet.ops`). A layer with a single candidate is fixed. The arch names the op
of every layer:

    {"ops": [["ds_k3_se"], ["ir_k3_e4_se", "ir_k5_e6_se"], ..., ["cn_k1"]]}

`allowed` narrows the ops each layer may choose to a subset of the config's (`restrict`); the
supernet is built from the config, so a narrowed space keeps the wide space's weights.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cream.errors import ArchError, ConfigError
from cream.registry import register_family
from cream.spaces.base import Arch, check_choice, check_keys, narrowed, plain
from cream.spaces.mobilenet.config import MobileNetConfig, config_from_dict
from cream.spaces.mobilenet.cost import CONVENTIONS, fixed_macs, fixed_params, op_cost, uses_relu
from cream.spaces.mobilenet.geometry import layer_geometry
from cream.spaces.mobilenet.ops import parse_op


@dataclass
class MobileNetSpace:
    """A MobileNet-style choice-block space (see the module docstring for names and arch format)."""

    config: MobileNetConfig
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. the FLOPs range a preset was built from
    # the ops each layer may choose, per stage (None: all of the config's); normalised to the config's order
    allowed: Any = None
    # per convention: fixed params, fixed MACs, and (params, MACs) of each candidate op of each layer
    _costs: dict[str, tuple[int, int, list[dict[str, tuple[int, int]]]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    family = "mobilenet"
    conventions = CONVENTIONS  # the MACs conventions `cost` counts in

    def __post_init__(self) -> None:
        self.name = self.config.name
        self.geometry = layer_geometry(self.config)
        wide = tuple(st.ops for st in self.config.stages)
        given, self.allowed = self.allowed, wide
        if given is not None:
            shape = [len(st) for st in wide]
            if not isinstance(given, Sequence) or [len(st) if isinstance(st, Sequence) else -1 for st in given] \
                    != shape:
                raise ConfigError(f"space.allowed = {given!r} must list the allowed ops of every layer, "
                                  f"stage by stage ({shape} layers)")
            self.allowed = self._nest(narrowed(self.choices(), self._flat(given), where="space.allowed"))

    def _flat(self, per_stage: Sequence[Sequence[Any]]) -> dict[str, Any]:
        return {f"ops[{s}][{i}]": layer for s, st in enumerate(per_stage) for i, layer in enumerate(st)}

    def _nest(self, flat: dict[str, Any]) -> tuple[tuple[tuple[str, ...], ...], ...]:
        stages = self.config.stages
        return tuple(tuple(flat[f"ops[{s}][{i}]"] for i in range(len(st.ops))) for s, st in enumerate(stages))

    # --- narrowing and serialising --------------------------------------------------------
    def choices(self) -> dict[str, tuple[str, ...]]:
        """`ops[s][i]` -> the ops layer i of stage s may choose (a single op: a fixed layer)."""
        return self._flat(self.allowed)

    def arch_choices(self, arch: Arch) -> dict[str, tuple[str, ...]]:
        return {k: (op,) for k, op in self._flat(arch["ops"]).items()}

    def restrict(self, choices: Mapping[str, Sequence[str]]) -> MobileNetSpace:
        """This space with layer `ops[s][i]` allowing only `choices["ops[s][i]"]` (others keep theirs)."""
        return dataclasses.replace(self, allowed=self._nest(narrowed(self.choices(), choices)))

    def to_config(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.config)
        out = {"family": self.family, **plain(cfg)}
        if self.allowed != tuple(st.ops for st in self.config.stages):
            out["allowed"] = plain(self.allowed)
        if self.meta:
            out["meta"] = plain(self.meta)
        return out

    # --- protocol -------------------------------------------------------------------------
    def sample(self, rng: random.Random, probs: dict[str, float] | None = None) -> Arch:
        """A random arch: each layer's op uniformly, or drawn with relative weights `probs`.

        `probs` maps op names to non-negative weights (Cream's `pre_prob`); each searchable layer
        normalises the weights of its own candidates, and an op not named gets weight 0 (so
        `skip` is never drawn unless it is listed). Fixed layers keep their single op.
        """
        if probs is None:
            return {"ops": [[rng.choice(layer) for layer in st] for st in self.allowed]}
        self._check_probs(probs)
        return {"ops": [[layer[0] if len(layer) == 1 else rng.choices(layer, [probs.get(o, 0.0) for o in layer])[0]
                         for layer in st] for st in self.allowed]}

    def _check_probs(self, probs: dict[str, float]) -> None:
        ops = {o for st in self.config.stages for layer in st.ops for o in layer}  # a narrowed space's too
        if not isinstance(probs, dict) or any(
                k not in ops or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                for k, v in probs.items()):
            raise ConfigError(f"op probabilities {probs!r} must map op names of the space ({sorted(ops)}) "
                              "to non-negative weights")
        for s, st in enumerate(self.allowed):
            for i, layer in enumerate(st):
                if len(layer) > 1 and not sum(probs.get(o, 0.0) for o in layer) > 0:
                    raise ConfigError(f"op probabilities give every candidate of layer ops[{s}][{i}] "
                                      f"({list(layer)}) weight 0; give at least one a positive weight")

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """SPOS mutation: each searchable layer is re-drawn (to a different op) with prob `mutate_prob`.

        If no layer was drawn, one searchable layer is, so the child always differs from its parent.
        """
        ops = [list(layer) for layer in self.validate(arch)["ops"]]
        free = [(s, i) for s, st in enumerate(self.allowed) for i, c in enumerate(st) if len(c) > 1]
        if not free:
            return {"ops": ops}
        picked = [si for si in free if rng.random() < self.config.mutate_prob] or [rng.choice(free)]
        for s, i in picked:
            ops[s][i] = rng.choice([o for o in self.allowed[s][i] if o != ops[s][i]])
        return {"ops": ops}

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch | None:
        a, b = self.validate(a), self.validate(b)
        pairs = zip(a["ops"], b["ops"], strict=True)
        return {"ops": [[rng.choice(pair) for pair in zip(la, lb, strict=True)] for la, lb in pairs]}

    def validate(self, arch: Arch) -> Arch:
        check_keys(arch, ["ops"])
        ops = arch["ops"]
        stages = self.allowed
        if not isinstance(ops, list) or len(ops) != len(stages):
            raise ArchError(f"arch field 'ops' must be a list of {len(stages)} stage lists, got {ops!r}")
        out = []
        for s, (layers, st) in enumerate(zip(ops, stages, strict=True)):
            if not isinstance(layers, list) or len(layers) != len(st):
                raise ArchError(
                    f"arch field 'ops[{s}]' must be a list of {len(st)} op names, got {layers!r}"
                )
            out.append([check_choice(f"ops[{s}][{i}]", op, st[i]) for i, op in enumerate(layers)])
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
            layers = [{o: op_cost(parse_op(o), g, cfg.se_ratio, convention, uses_relu(cfg), cfg.expand_round)
                       for o in cfg.stages[g.stage].ops[g.index]} for g in self.geometry]
            table = self._costs[convention] = (fixed_params(cfg), fixed_macs(cfg, self.geometry, convention), layers)
        return table

    def num_archs(self) -> int:
        """Number of distinct archs."""
        return math.prod(len(c) for st in self.allowed for c in st)


def from_config(**cfg: Any) -> MobileNetSpace:
    """The `mobilenet` family: a space from a config mapping (see `configs/spos/cifar-8layer.yaml`).

    Besides the config, `allowed` (per stage, per layer, the ops it may choose) narrows it and
    `meta` carries what a preset was built from; `MobileNetSpace.to_config` writes both.
    """
    meta, allowed = cfg.pop("meta", {}), cfg.pop("allowed", None)
    if not isinstance(meta, dict):
        raise ConfigError(f"space.meta = {meta!r} must be a mapping")
    return MobileNetSpace(config_from_dict(cfg), meta=meta, allowed=allowed)



register_family("mobilenet", from_config)
