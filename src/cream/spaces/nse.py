"""The NSE space (Ci et al., "Evolving Search Space for Neural Architecture Search", ICCV 2021).

A network is a chain of cells. A cell's architecture is a *set* of ops (its branches); the cell
outputs the mean of its branches, and a residual ("N") cell averages the identity in too:
`(x + Σ b(x)) / (n + 1)`. An empty set skips an N cell; transition cells ("R": stride 2, new
width; "E": stride 1, new width) need at least one op.

The macro layout `NER` is `N×a0 R N×a1 R N×a2 R N×a3 E N×a4 R N×a5 E` (`NR`: an R between every
two runs of N cells). Widths after the stem's are scaled by `scale` and rounded to multiples of 8.

The space evolves: each cell has an *active* subset (the ops the supernet trains), a *pending*
queue (ops still to come) and `keep` (the ops the latest Pareto front uses there, which pruning
never removes). `prune` drops active ops whose gate logit fell below a threshold; `evolve` refills
the active subsets from the pending queues after a round. `built` are the ops the round's supernet
holds (its active ops when the round began): pruning and `restrict` narrow `active` only, so the
supernet keeps its shape and a pruned space.json still loads the round's weights. The state is part of `to_config`, so a
space.json rebuilds the evolved space exactly.

An arch is `{"cells": [[op ids], ...]}`: per cell the sorted codes (positions in the op list) of
its branches. Op lists (`OP_LISTS`): the original's 27 (`nse27`), 72 (`nse72`) and 19 (`nse19`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cream.errors import ArchError, ConfigError
from cream.registry import register_family, register_space
from cream.spaces.base import Arch, check_keys, narrowed, plain
from cream.spaces.mobilenet.ops import make_divisible

RESIDUAL, REDUCE, EXTEND = "N", "R", "E"
#: layout -> (its transition cells, in order; its number of runs of N cells). NER: each run is followed by a
#: transition; NR: a transition between every two runs.
LAYOUTS = {"NER": ("RRRERE", 6), "NR": ("RRRR", 5)}
_OP_RE = re.compile(r"^(?P<kind>lb|rec|conv|dual)_k(?P<k>\d+)_t(?P<t>\d+)(?:_d(?P<d>\d+))?(?:_g(?P<ge>\d)(?P<gp>\d))?$")


@dataclass(frozen=True)
class NseOp:
    """One branch: 1×1 expand to `cin·t` → spatial part → 1×1 project, BN after every conv.

    Spatial part: `lb` a depthwise k×k (dilation d); `rec` a full 1×k conv (stride (1,s)) then a full
    k×1 conv (stride (s,1)); `conv` one full k×k conv; `dual` two full k×k convs (the first strided).
    `groups` are the (expand, project) 1×1 convs' groups (the 72-op list's grouped LBs)."""

    name: str
    kind: str
    kernel: int
    expand: int
    dilation: int = 1
    groups: tuple[int, int] = (1, 1)


def parse_op(name: str) -> NseOp:
    m = _OP_RE.match(str(name))
    if m is None or int(m["k"]) % 2 == 0 or int(m["t"]) < 1 or (m["d"] and m["kind"] != "lb"):
        raise ConfigError(f"NSE op name {name!r} is not valid; use 'lb_k<odd>_t<t>[_d<d>][_g<e><p>]', "
                          "'rec_k<odd>_t<t>', 'conv_k<odd>_t<t>' or 'dual_k<odd>_t<t>'")
    groups = (int(m["ge"]), int(m["gp"])) if m["ge"] else (1, 1)
    return NseOp(name, m["kind"], int(m["k"]), int(m["t"]), int(m["d"] or 1), groups)


def _lb(k: int, t: int, d: int = 1, g: tuple[int, int] = (1, 1)) -> str:
    return f"lb_k{k}_t{t}" + (f"_d{d}" if d > 1 else "") + (f"_g{g[0]}{g[1]}" if g != (1, 1) else "")


def _op_lists() -> dict[str, tuple[str, ...]]:
    """The original's three op lists; an op's position is its code."""
    kt = [(k, t) for k in (3, 5, 7, 9, 11) for t in (1, 3, 6)]
    lb27 = [_lb(k, t, d) for k, t in kt for d in ((1, 2, 3) if k == 3 else (1,))]
    rec = [f"rec_k{k}_t{t}" for k in (5, 7) for t in (1, 2, 4)]
    grouped = [_lb(k, t, 1, g) for k, t in kt for g in ((1, 2), (2, 1), (2, 2))]
    gpu = [_lb(k, t) for k in (3, 5, 7) for t in (1, 3, 6)] + ["conv_k3_t1", "conv_k3_t2", "dual_k3_t1", "dual_k3_t2"]
    return {"nse27": (*lb27, *rec), "nse72": (*lb27, *rec, *grouped), "nse19": (*gpu, *rec)}


OP_LISTS = _op_lists()


def num_rounds(num_ops: int, active_size: int) -> int:
    """Rounds needed to bring every op of the list in once: ⌊(M−1)/(K−1)⌋."""
    return (num_ops - 1) // (active_size - 1)


@dataclass(frozen=True)
class CellGeom:
    kind: str  # N, R or E
    cin: int
    cout: int
    stride: int
    h_in: int
    h_out: int


def _out(h: int, s: int) -> int:
    return (h - 1) // s + 1  # every op pads "same", so only the stride matters


def op_cost(op: NseOp, g: CellGeom) -> tuple[int, int]:
    """(params, MACs) of one branch at one cell: conv and linear multiply-adds, BN γ/β as params."""
    mid, (ge, gp) = g.cin * op.expand, op.groups
    a_in, a_out = g.h_in**2, g.h_out**2
    params = g.cin * mid // ge + mid * g.cout // gp + 4 * mid + 2 * g.cout
    macs = a_in * g.cin * mid // ge + a_out * mid * g.cout // gp
    k2 = op.kernel**2
    if op.kind == "lb":
        params, macs = params + mid * k2, macs + a_out * mid * k2
    elif op.kind == "rec":  # 1×k strided along the width only, then k×1 strided along the height
        params += 2 * mid * mid * op.kernel + 2 * mid
        macs += (g.h_in * g.h_out + a_out) * mid * mid * op.kernel
    elif op.kind == "conv":
        params, macs = params + mid * mid * k2, macs + a_out * mid * mid * k2
    else:  # dual
        params += 2 * mid * mid * k2 + 2 * mid
        macs += 2 * a_out * mid * mid * k2
    return params, macs


class NseSpace:
    """A chain of multi-branch cells whose candidate subsets evolve (see the module docstring)."""

    family = "nse"

    def __init__(self, ops: str | Sequence[str] = "nse27", layout: str = "NER",
                 depths: Sequence[int] = (1, 3, 3, 3, 3, 3), widths: Sequence[int] = (16, 24, 40, 80, 96, 192, 320),
                 scale: float = 1.0, tail_channels: int = 1024, num_classes: int = 1000, input_size: int = 224,
                 active_size: int = 5, seed: int = 0, active: Sequence[Sequence[int]] | None = None,
                 pending: Sequence[Sequence[int]] | None = None, keep: Sequence[Sequence[int]] | None = None,
                 built: Sequence[Sequence[int]] | None = None,
                 name: str = "nse") -> None:
        if isinstance(ops, str):
            if ops not in OP_LISTS:
                raise ConfigError(f"space.ops = {ops!r} is unknown; choose one of {sorted(OP_LISTS)} or list op names")
            self.op_list_name: str | None = ops
            ops = OP_LISTS[ops]
        else:
            self.op_list_name = None
        self.op_names = tuple(str(o) for o in ops)
        self.ops = tuple(parse_op(o) for o in self.op_names)
        if len(set(self.op_names)) != len(self.op_names) or not self.op_names:
            raise ConfigError(f"space.ops = {list(self.op_names)} must be a non-empty list without repeats")
        if layout not in LAYOUTS:
            raise ConfigError(f"space.layout = {layout!r} is not allowed; choose one of {sorted(LAYOUTS)}")
        transitions, runs = LAYOUTS[layout]
        if len(depths) != runs or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in depths):
            raise ConfigError(f"space.depths = {list(depths)!r} must be {runs} integers >= 0 for layout {layout}")
        if len(widths) != len(transitions) + 1 or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ConfigError(f"space.widths = {list(widths)!r} must be {len(transitions) + 1} positive integers "
                              f"for layout {layout}")
        for key, value in (("tail_channels", tail_channels), ("num_classes", num_classes),
                           ("input_size", input_size), ("active_size", active_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"space.{key} = {value!r} must be a positive integer")
        if not 2 <= active_size <= len(self.ops):
            raise ConfigError(f"space.active_size = {active_size} must be in [2, {len(self.ops)}] (the op list)")
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise ConfigError(f"space.scale = {scale!r} must be a number > 0")
        self.layout, self.depths, self.widths = layout, tuple(depths), tuple(widths)
        self.scale, self.tail_channels, self.num_classes = float(scale), tail_channels, num_classes
        self.input_size, self.active_size, self.seed, self.name = input_size, active_size, seed, name
        self.kinds = self._kinds()
        n = len(self.kinds)
        if active is None:
            perms = [random.Random(f"nse-space:{seed}:{c}").sample(range(len(self.ops)), len(self.ops))
                     for c in range(n)]
            active, pending = [p[:active_size] for p in perms], [p[active_size:] for p in perms]
        self.active = self._state("active", active, n)
        self.pending = self._state("pending", pending or [[] for _ in range(n)], n)
        self.keep = self._state("keep", keep or [[] for _ in range(n)], n)
        self.built = self._state("built", self.active if built is None else built, n)
        for c in range(n):
            if self.kinds[c] != RESIDUAL and not self.active[c]:
                raise ConfigError(f"space.active[{c}] is empty; a {self.kinds[c]} cell needs at least one op")
            if set(self.active[c]) & set(self.pending[c]) or not set(self.keep[c]) <= set(self.active[c]) \
                    or not set(self.active[c]) <= set(self.built[c]):
                raise ConfigError(f"space state of cell {c}: pending must not repeat active ops, keep must be a part "
                                  f"of active and active of built (active {list(self.active[c])}, pending "
                                  f"{list(self.pending[c])}, keep {list(self.keep[c])}, built {list(self.built[c])})")

    def _kinds(self) -> tuple[str, ...]:
        kinds: list[str] = []
        transitions = LAYOUTS[self.layout][0]
        for i, d in enumerate(self.depths):
            kinds += [RESIDUAL] * d
            if i < len(transitions):
                kinds.append(transitions[i])
        return tuple(kinds)

    def _state(self, key: str, value: Any, n: int) -> tuple[tuple[int, ...], ...]:
        m = len(self.ops)
        ok = isinstance(value, (list, tuple)) and len(value) == n and all(
            isinstance(c, (list, tuple)) and len(set(c)) == len(c)
            and all(isinstance(o, int) and not isinstance(o, bool) and 0 <= o < m for o in c) for c in value)
        if not ok:
            raise ConfigError(f"space.{key} must list, for each of the {n} cells, distinct op codes in [0, {m})")
        return tuple(tuple(c) for c in value)

    # --- geometry and costs --------------------------------------------------------------------
    @cached_property
    def stage_widths(self) -> tuple[int, ...]:
        return (self.widths[0], *(make_divisible(w * self.scale, 8) for w in self.widths[1:]))

    @cached_property
    def geometry(self) -> tuple[CellGeom, ...]:
        h, width, stage, out = _out(self.input_size, 2), self.stage_widths[0], 0, []
        for kind in self.kinds:
            if kind == RESIDUAL:
                out.append(CellGeom(kind, width, width, 1, h, h))
                continue
            stage += 1
            stride = 2 if kind == REDUCE else 1
            new = self.stage_widths[stage]
            out.append(CellGeom(kind, width, new, stride, h, _out(h, stride)))
            width, h = new, _out(h, stride)
        return tuple(out)

    @cached_property
    def _op_costs(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        return tuple(tuple(op_cost(op, g) for op in self.ops) for g in self.geometry)

    def op_costs(self, cell: int) -> tuple[tuple[int, int], ...]:
        """(params, MACs) of every op of the list at `cell` (the resource of a gate in the penalty)."""
        return self._op_costs[cell]

    def fixed_cost(self) -> dict[str, int]:
        """Stem conv 3×3 s2 + BN, tail 1×1 conv (bias, no BN), classifier."""
        c0, last, h0 = self.stage_widths[0], self.geometry[-1].cout, _out(self.input_size, 2)
        h_last, tail, k = self.geometry[-1].h_out, self.tail_channels, self.num_classes
        params = 27 * c0 + 2 * c0 + last * tail + tail + tail * k + k
        return {"params": params, "macs": h0 * h0 * 27 * c0 + h_last * h_last * last * tail + tail * k}

    def cost(self, arch: Arch) -> dict[str, int]:
        arch = self.validate(arch)
        out = self.fixed_cost()
        for c, ops in enumerate(arch["cells"]):
            for o in ops:
                p, m = self._op_costs[c][o]
                out = {"params": out["params"] + p, "macs": out["macs"] + m}
        return out

    # --- the Space protocol ----------------------------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        check_keys(arch, ["cells"])
        cells = arch["cells"]
        if not isinstance(cells, (list, tuple)) or len(cells) != len(self.kinds):
            raise ArchError(f"arch field 'cells' must list {len(self.kinds)} cells, got {cells!r}")
        out = []
        for c, ops in enumerate(cells):
            if not isinstance(ops, (list, tuple)) or len(set(ops)) != len(ops) \
                    or any(o not in self.active[c] or isinstance(o, bool) for o in ops):
                raise ArchError(f"arch field 'cells[{c}]' = {ops!r} is not allowed; choose distinct ops of "
                                f"{list(self.active[c])}")
            if not ops and self.kinds[c] != RESIDUAL:
                raise ArchError(f"arch field 'cells[{c}]' is empty; a {self.kinds[c]} cell needs at least one op")
            out.append(sorted(ops))
        return {"cells": out}

    def sample(self, rng: random.Random, probs: Sequence[Sequence[float]] | None = None) -> Arch:
        """Each active op of each cell independently with its probability (default 1/2), drawn again
        where a transition cell came out empty."""
        cells = []
        for c, active in enumerate(self.active):
            p = probs[c] if probs is not None else [0.5] * len(active)
            while True:
                ops = sorted(o for o, q in zip(active, p, strict=True) if rng.random() < q)
                if ops or self.kinds[c] == RESIDUAL or not active:
                    break
            cells.append(ops)
        return {"cells": cells}

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """Flip one active op in one cell (never emptying a transition cell)."""
        cells = [list(c) for c in self.validate(arch)["cells"]]
        for _ in range(100):
            c = rng.randrange(len(cells))
            if not self.active[c]:
                continue
            o = rng.choice(self.active[c])
            new = sorted(set(cells[c]) ^ {o})
            if new or self.kinds[c] == RESIDUAL:
                cells[c] = new
                return {"cells": cells}
        return {"cells": cells}

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        return {"cells": [list(x if rng.random() < 0.5 else y)
                          for x, y in zip(self.validate(a)["cells"], self.validate(b)["cells"], strict=True)]}

    def num_archs(self) -> int:
        n = 1
        for kind, active in zip(self.kinds, self.active, strict=True):
            n *= 2 ** len(active) - (kind != RESIDUAL)
        return n

    def choices(self) -> dict[str, tuple[Any, ...]]:
        return {f"cells[{c}]": tuple(a) for c, a in enumerate(self.active)}

    def arch_choices(self, arch: Arch) -> dict[str, tuple[Any, ...]]:
        return {f"cells[{c}]": tuple(ops) for c, ops in enumerate(self.validate(arch)["cells"])}

    def restrict(self, choices: Mapping[str, Sequence[Any]]) -> NseSpace:
        kept = narrowed(self.choices(), choices)
        active = [list(kept[f"cells[{c}]"]) for c in range(len(self.kinds))]
        keep = [[o for o in k if o in a] for k, a in zip(self.keep, active, strict=True)]
        return self._with(active=active, pending=self.pending, keep=keep)

    # --- evolution ---------------------------------------------------------------------------
    def prune(self, alpha: Sequence[Sequence[float]], threshold: float = -2.0) -> NseSpace:
        """Drop active ops whose gate logit (`alpha[c][i]` for `active[c][i]`) is below `threshold`, except
        ops in `keep`; a transition cell keeps at least two ops (its worst ones go first)."""
        active = []
        for c, ops in enumerate(self.active):
            low = sorted((a, i) for i, a in enumerate(alpha[c]) if a < threshold and ops[i] not in self.keep[c])
            floor = 2 if self.kinds[c] != RESIDUAL else 0
            drop = {ops[i] for _, i in low[:max(0, len(ops) - floor)]}
            active.append([o for o in ops if o not in drop])
        return self._with(active=active, pending=self.pending, keep=self.keep)

    def evolve(self, front: Sequence[Arch]) -> NseSpace:
        """The next round's space: each cell keeps the ops the Pareto `front` uses there and fills up to
        `active_size` from its pending queue. A transition cell left with nothing (an empty front and an
        empty queue) keeps its current ops, where the original would fail."""
        used = [sorted({o for arch in front for o in self.validate(arch)["cells"][c]}) for c in range(len(self.kinds))]
        active, pending = [], []
        for c, keep in enumerate(used):
            take = max(0, self.active_size - len(keep))
            active.append(keep + list(self.pending[c][:take]))
            pending.append(list(self.pending[c][take:]))
            if not active[c] and self.kinds[c] != RESIDUAL:
                active[c] = list(self.active[c])
        return self._with(active=active, pending=pending, keep=used, built=active)

    def _with(self, **state: Any) -> NseSpace:
        cfg = {**self.to_config(), **plain(state)}
        cfg.pop("family")
        return NseSpace(**cfg)

    def to_config(self) -> dict[str, Any]:
        return plain({"family": self.family, "name": self.name,
                      "ops": self.op_list_name or list(self.op_names), "layout": self.layout,
                      "depths": self.depths, "widths": self.widths, "scale": self.scale,
                      "tail_channels": self.tail_channels, "num_classes": self.num_classes,
                      "input_size": self.input_size, "active_size": self.active_size, "seed": self.seed,
                      "active": self.active, "pending": self.pending, "keep": self.keep,
                      "built": self.built})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NseSpace) and self.to_config() == other.to_config()

    def __repr__(self) -> str:
        return f"NseSpace({self.name!r}, {len(self.kinds)} cells, {len(self.ops)} ops, K={self.active_size})"


def compact(space: NseSpace, arch: Arch) -> tuple[list[int], list[list[int]]]:
    """(depths, cells) of `arch` with its empty (skipped) N cells removed: the same network, fewer cells."""
    cells = space.validate(arch)["cells"]
    depths, run, out = [], 0, []
    for kind, ops in zip(space.kinds, cells, strict=True):
        if kind == RESIDUAL:
            run += bool(ops)
        else:
            depths.append(run)
            run = 0
        if ops:
            out.append(ops)
    if len(depths) < LAYOUTS[space.layout][1]:  # NR: the last run follows the last transition
        depths.append(run)
    return depths, out


def from_config(**cfg: Any) -> NseSpace:
    try:
        return NseSpace(**cfg)
    except TypeError as e:
        raise ConfigError(f"space config for family 'nse' is invalid: {e}") from None


def _preset(ops: str, **defaults: Any) -> Any:
    return lambda **kw: NseSpace(**{"ops": ops, "name": ops, **defaults, **kw})


register_family("nse", from_config)
register_space("nse27", _preset("nse27"))
register_space("nse72", _preset("nse72"))
register_space("nse19", _preset("nse19", layout="NR", depths=[1, 3, 3, 7, 3], widths=[16, 32, 64, 128, 256],
                                active_size=6))
