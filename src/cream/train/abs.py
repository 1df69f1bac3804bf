"""ABS: angle-based search-space shrinking (specs/shrinking_ensembles.md §1).

While a single-path supernet trains uniformly (SPOS), every few epochs each candidate op is scored
by the mean *angle* of children containing it: the angle between the child's weight vector at the
base weights W0 and now. Ops whose children barely moved (small angle) are dropped; the kept space
is what search, export and retrain read (space.json).

The weight vector of a child (`vector`) is the concatenation of conv/linear weights on its path
(never BN or biases), in a fixed order:

* block-like spaces (MobileNet family, the CIFAR macro space): the shared stem/head convs and the
  classifier, then the convs of every layer's op; an identity `skip` adds nothing (a projecting
  `skip`, a 1x1 conv, adds its conv);
* NB201 cells, path by path (`NB201_PATHS`): a path through a `none` edge is deleted, `skip` adds
  nothing, a 3x3 pool adds a constant [C_out, 3, 3] tensor of 1/9 (the same in W0 and Wt), a conv
  its weight; an edge on several paths is repeated; every cell in turn, then the fixed convs.

The angle is over the whole vector (big tensors dominate), so it is a function of per-part sums:
dot(W0, Wt), |W0|^2 and |Wt|^2 of each part times how often the part occurs. Scoring thousands of
children costs one pass over the weights (`PartStats`), and `angle` on the concatenated vector is
the reference it is tested against.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cream.errors import ConfigError
from cream.spaces import get_space
from cream.spaces.base import Arch, Space
from cream.train.shrink import Shrink
from cream.train.strategy import check_kwarg, is_int, is_number

EPS = 1e-8
#: NB201's input->output paths as edge indices (`cream.spaces.nb201.EDGES` order: 1<-0 2<-0 2<-1 3<-0 3<-1 3<-2)
NB201_PATHS = ((3,), (1, 5), (0, 2, 5), (0, 4))
FIXED = ("fixed",)
#: the original's schedules (spec §1.2, §1.4); explicit strategy kwargs override them
SCHEDULES: dict[str, dict[str, Any]] = {
    "spos": {"first_epochs": 100, "later_epochs": 5, "drop_rule": "global", "drops_per_step": 7,
             "stop_size": 1_000_000, "rebase": True, "random_depth": True},
    "fairnas": {"first_epochs": 100, "later_epochs": 5, "drop_rule": "per_layer", "drops_per_step": None,
                "stop_size": 1_000_000, "rebase": True, "random_depth": False},
}
DROP_RULES = ("global", "per_layer")


def angle(base: Sequence[Tensor], current: Sequence[Tensor]) -> float:
    """arccos of the cosine between the concatenations of `base` and `current` (radians), as
    `acos(CosineSimilarity(dim=0, eps=1e-8))`, in float64."""
    v0 = torch.cat([t.detach().reshape(-1).double().cpu() for t in base])
    vt = torch.cat([t.detach().reshape(-1).double().cpu() for t in current])
    cos = nn.functional.cosine_similarity(v0, vt, dim=0, eps=EPS)
    return math.acos(max(-1.0, min(1.0, float(cos))))


def cell_parts(ops: Sequence[str]) -> list[tuple[int, str]]:
    """The (edge, op) pieces of an NB201 cell's path vector, path by path, repeated where an edge lies on
    several paths: paths through `none` are deleted, `skip_connect` adds nothing."""
    out = []
    for path in NB201_PATHS:
        if any(ops[e] == "none" for e in path):
            continue
        out += [(e, ops[e]) for e in path if ops[e] != "skip_connect"]
    return out


class PathVectors:
    """The weight vector of any child of a supernet's space, as parts (`parts`) and tensors (`tensors`).

    Parts are `FIXED`, `(decision, op)` for an op's weights (in every cell, for NB201) and
    `("pool", edge)` for NB201's constant pooling tensors.
    """

    def __init__(self, net: nn.Module) -> None:
        space = net.space
        self.family = space.family
        if self.family not in ("mobilenet", "nb201"):
            raise ConfigError(f"strategy 'abs' needs a mobilenet or nb201 space, not family {self.family!r}")
        self.params = {n: p for n, p in net.named_parameters() if p.ndim > 1 and n != "alphas"}
        self._names: dict[Hashable, list[str]] = {}
        chosen = set()
        for d, values in space.choices().items():
            for v in values:
                pattern = self._pattern(d, v)
                names = [n for n in self.params if pattern.match(n)]
                self._names[(d, v)] = names
                chosen.update(names)
        inner = re.compile(r"(blocks|cells\.\d+\.edges)\.")
        self._names[FIXED] = [n for n in self.params if n not in chosen and not inner.match(n)]
        self._pools: dict[Hashable, list[Tensor]] = {}
        if self.family == "nb201":
            # the constant of each cell's pool edge takes its shape from that edge's conv3x3 weight
            for e in range(6):
                self._pools[("pool", e)] = [torch.full((p.shape[0], 3, 3), 1 / 9, dtype=torch.float64)
                                            for n, p in self.params.items()
                                            if re.fullmatch(rf"cells\.\d+\.edges\.{e}\.nor_conv_3x3\.1\.weight", n)]
            self.identity: dict[str, str] = {}
        else:
            geo = {f"ops[{g.stage}][{g.index}]": g for g in space.geometry}
            self.identity = {d: "skip" for d, vs in space.choices().items()
                             if "skip" in vs and geo[d].stride == 1 and geo[d].cin == geo[d].cout}

    def _pattern(self, decision: str, op: str) -> re.Pattern[str]:
        idx = re.findall(r"\d+", decision)
        if self.family == "mobilenet":
            return re.compile(rf"blocks\.{idx[0]}\.{idx[1]}\.{re.escape(op)}\.")
        return re.compile(rf"cells\.\d+\.edges\.{idx[0]}\.{re.escape(op)}\.")

    def all_parts(self) -> list[Hashable]:
        """Every part any child of the space can hold."""
        return [*self._names, *self._pools]

    def parts(self, arch: Arch) -> Counter:
        """How often each part occurs in `arch`'s vector (insertion order = vector order)."""
        out: Counter = Counter({FIXED: 1})
        if self.family == "nb201":
            for e, op in cell_parts(arch["ops"]):
                out[("pool", e) if op == "avg_pool_3x3" else (f"ops[{e}]", op)] += 1
            return out
        for s, stage in enumerate(arch["ops"]):
            for i, op in enumerate(stage):
                d = f"ops[{s}][{i}]"
                if self.identity.get(d) != op:
                    out[(d, op)] += 1
        return out

    def tensors(self, part: Hashable, state: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        """The tensors of a part: from `state` (name -> tensor, e.g. the base weights) or the live parameters."""
        if part in self._pools:
            return self._pools[part]
        src = self.params if state is None else state
        return [src[n] for n in self._names[part]]

    def vector(self, arch: Arch, state: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        """`arch`'s weight vector as a list of tensors (the reference `angle` concatenates)."""
        return [t for part, n in self.parts(arch).items() for _ in range(n) for t in self.tensors(part, state)]

    def base_state(self) -> dict[str, Tensor]:
        """A CPU copy of the weights vectors are made of: the base W0."""
        return {n: p.detach().cpu().clone() for n, p in self.params.items()}


class PartStats:
    """dot(W0, Wt), |W0|^2, |Wt|^2 of every part, once; `angle(arch)` then sums them (float64)."""

    def __init__(self, vectors: PathVectors, base: Mapping[str, Tensor]) -> None:
        self.vectors, self.stats = vectors, {}
        with torch.no_grad():
            for part in vectors.all_parts():
                dot = n0 = nt = 0.0
                for w0, wt in zip(vectors.tensors(part, base), vectors.tensors(part), strict=True):
                    a, b = w0.double().reshape(-1), wt.detach().double().cpu().reshape(-1)
                    dot, n0, nt = dot + float(a @ b), n0 + float(a @ a), nt + float(b @ b)
                self.stats[part] = (dot, n0, nt)

    def angle(self, arch: Arch) -> float:
        dot = n0 = nt = 0.0
        for part, n in self.vectors.parts(arch).items():
            d, a, b = self.stats[part]
            dot, n0, nt = dot + n * d, n0 + n * a, nt + n * b
        cos = dot / math.sqrt(max(n0 * nt, EPS * EPS))
        return math.acos(max(-1.0, min(1.0, cos)))


def _assembler(template: Arch, decisions: Sequence[str]) -> Callable[[Mapping[str, str]], Arch]:
    """A function: values -> `template` (an arch of the space) with decision `ops[s][i]` / `ops[e]` set to
    `values[...]`."""
    where = {d: [int(i) for i in re.findall(r"\d+", d)] for d in decisions}

    def assemble(values: Mapping[str, str]) -> Arch:
        ops = [list(x) if isinstance(x, list) else x for x in template["ops"]]
        for d, v in values.items():
            idx = where[d]
            if len(idx) == 1:
                ops[idx[0]] = v
            else:
                ops[idx[0]][idx[1]] = v
        return {"ops": ops}

    return assemble


def score_ops(space: Space, angle_of: Callable[[Arch], float], rng: random.Random, *, sample_num: int = 1000,
              identity: Mapping[str, str] | None = None, random_depth: bool = True,
              max_macs: float | None = None, exhaustive_max: int = 20000) -> dict[tuple[str, str], float]:
    """Score every op of every decision with more than one value left: the mean angle of children that
    contain it (spec §1.2). A space of at most `exhaustive_max` archs is scored exhaustively; otherwise,
    op by op, new children containing the op are drawn until its pool holds `sample_num` (at most 100x as
    many tries): the op at its decision, every other decision uniform over its non-identity values, then
    (`random_depth`, SPOS) n ~ U{0..m} of the m other identity-capable decisions set to identity. A child
    already seen in this step, or over `max_macs`, is rejected; an accepted child joins the pool of every
    candidate op it contains. Scores average the first `sample_num` of each pool, in draw order."""
    identity = dict(identity or {})
    choices = space.choices()
    order = list(choices)
    cands = [(d, v) for d in order if len(choices[d]) > 1 for v in choices[d]]
    assemble = _assembler(space.sample(random.Random(0)), order)
    children: list[Arch] = []
    pools: dict[tuple[str, str], list[int]] = {c: [] for c in cands}

    def accept(values: dict[str, str]) -> None:
        children.append(assemble(values))
        for d in order:
            if (d, values[d]) in pools:
                pools[(d, values[d])].append(len(children) - 1)

    if space.num_archs() <= exhaustive_max:
        for combo in itertools.product(*(choices[d] for d in order)):
            values = dict(zip(order, combo, strict=True))
            if max_macs is None or space.cost(assemble(values))["macs"] <= max_macs:
                accept(values)
    else:
        seen: set[tuple[str, ...]] = set()
        for d0, v0 in cands:
            tries = 0
            while len(pools[(d0, v0)]) < sample_num and tries < 100 * sample_num:
                tries += 1
                values = {d: v0 if d == d0 else rng.choice([v for v in choices[d] if identity.get(d) != v]
                                                           or choices[d]) for d in order}
                if random_depth:
                    capable = [d for d in order if d != d0 and identity.get(d) in choices[d]]
                    for d in rng.sample(capable, rng.randint(0, len(capable))):
                        values[d] = identity[d]
                key = tuple(values[d] for d in order)
                if key in seen:
                    continue
                seen.add(key)
                if max_macs is not None and space.cost(assemble(values))["macs"] > max_macs:
                    continue
                accept(values)
    angles = [angle_of(a) for a in children]
    return {c: sum(angles[i] for i in pool[:sample_num]) / len(pool[:sample_num])
            for c, pool in pools.items() if pool}


def drop_ops(choices: Mapping[str, Sequence[str]], scores: Mapping[tuple[str, str], float], rule: str,
             k: int | None = None) -> list[tuple[str, str]]:
    """The ops to drop, smallest score first (spec §1.2 step 5). "global": walk the scores ascending and
    drop an op while its decision still has a later (better-scored) op in the list, at most `k` drops;
    "per_layer": the lowest op of every decision with more than one value. Ties keep the space's order."""
    ranked = sorted(scores, key=lambda c: scores[c])  # stable: the candidates' order breaks ties
    if rule == "per_layer":
        lowest: dict[str, tuple[str, str]] = {}
        for c in ranked:
            if len(choices[c[0]]) > 1:
                lowest.setdefault(c[0], c)
        return list(lowest.values())
    dropped: list[tuple[str, str]] = []
    for i, (d, v) in enumerate(ranked):
        if len(dropped) == k:
            break
        if any(d2 == d for d2, _ in ranked[i + 1:]):
            dropped.append((d, v))
    return dropped


class Abs(Shrink):
    """Uniform single-path training (`Uniform`) in a space that ABS narrows at stage ends.

    Stages: the first ends after `first_epochs`, each later one `later_epochs` after the previous; at a
    stage end with more than `stop_size` archs left, ops are scored (`score_ops`: `sample_num`,
    `random_depth`, `max_macs`, `exhaustive_max`) and dropped by `drop_rule` ("global": `drops_per_step`
    per step; "per_layer": one per decision). W0 is the supernet at the start of training; with
    `rebase`, it is replaced once by the current weights after the first step i with
    (i+1) x drops per step > `rebase_after_drops` (the original's reset; not in the paper).
    `schedule` ("spos" or "fairnas") sets the original's values; explicit kwargs override them.
    W0, the narrowed space, the step count and the drops are checkpointed; the run writes abs.json.
    """

    def __init__(self, space: Space, seed: int = 0, schedule: str = "spos", first_epochs: int | None = None,
                 later_epochs: int | None = None, drop_rule: str | None = None, drops_per_step: int | None = None,
                 stop_size: int | None = None, rebase: bool | None = None, rebase_after_drops: int = 50,
                 sample_num: int = 1000, random_depth: bool | None = None, max_macs: float | None = None,
                 exhaustive_max: int = 20000) -> None:
        check_kwarg("schedule", schedule, schedule in SCHEDULES, f"one of {sorted(SCHEDULES)}")
        given = {"first_epochs": first_epochs, "later_epochs": later_epochs, "drop_rule": drop_rule,
                 "drops_per_step": drops_per_step, "stop_size": stop_size, "rebase": rebase,
                 "random_depth": random_depth}
        cfg = {**SCHEDULES[schedule], **{k: v for k, v in given.items() if v is not None}}
        counts = {"first_epochs": cfg["first_epochs"], "later_epochs": cfg["later_epochs"],
                  "stop_size": cfg["stop_size"], "sample_num": sample_num, "rebase_after_drops": rebase_after_drops,
                  "exhaustive_max": exhaustive_max}
        for key, value in counts.items():
            check_kwarg(key, value, is_int(value) and value >= (0 if key == "exhaustive_max" else 1),
                        "a positive integer" if key != "exhaustive_max" else "an integer >= 0")
        check_kwarg("drop_rule", cfg["drop_rule"], cfg["drop_rule"] in DROP_RULES, f"one of {list(DROP_RULES)}")
        k = cfg["drops_per_step"]
        check_kwarg("drops_per_step", k, cfg["drop_rule"] == "per_layer" or (is_int(k) and k >= 1),
                    "a positive integer with drop_rule 'global'")
        for key in ("rebase", "random_depth"):
            check_kwarg(key, cfg[key], isinstance(cfg[key], bool), "true or false")
        check_kwarg("max_macs", max_macs, max_macs is None or (is_number(max_macs) and max_macs > 0),
                    "a positive number or null")
        super().__init__(space, seed)
        self.cfg = {**cfg, "rebase_after_drops": rebase_after_drops, "sample_num": sample_num,
                    "max_macs": max_macs, "exhaustive_max": exhaustive_max}
        searchable = sum(len(v) > 1 for v in space.choices().values())
        #: the nominal drops of one step, for the rebase rule (per_layer: every searchable decision)
        self.step_drops = searchable if cfg["drop_rule"] == "per_layer" else k
        self.steps = 0
        self.rebased_after: int | None = None
        self.base: dict[str, Tensor] = {}

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        self.vectors = PathVectors(engine.model)
        self.base = self.vectors.base_state()

    def after_step(self, step: int, loss: float | None) -> None:
        """ABS scores by angle at stage ends; no per-step statistics."""

    def stage_ends(self, epoch: int) -> bool:
        n, first, later = epoch + 1, self.cfg["first_epochs"], self.cfg["later_epochs"]
        return n == first or (n > first and (n - first) % later == 0)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        if not self.stage_ends(epoch) or self.space.num_archs() <= self.cfg["stop_size"]:
            return {"abs_dropped": 0, "space_archs": self.space.num_archs()}
        scores = self.score(random.Random(f"cream-abs:{self.seed}:{self.steps}"))
        dropped = drop_ops(self.space.choices(), scores, self.cfg["drop_rule"], self.cfg["drops_per_step"])
        choices = self.space.choices()
        keep = {d: [v for v in choices[d] if (d, v) not in dropped] for d in {d for d, _ in dropped}}
        self.space = self.space.restrict(keep)
        self.dropped += [{"epoch": epoch, "step": self.steps, "decision": d, "value": v, "score": scores[(d, v)]}
                         for d, v in dropped]
        if (self.cfg["rebase"] and self.rebased_after is None
                and (self.steps + 1) * self.step_drops > self.cfg["rebase_after_drops"]):
            self.base, self.rebased_after = self.vectors.base_state(), self.steps
        self.steps += 1
        return {"abs_dropped": len(dropped), "space_archs": self.space.num_archs()}

    def score(self, rng: random.Random) -> dict[tuple[str, str], float]:
        """Scores of every candidate op of the current space against W0 (`score_ops`)."""
        stats = PartStats(self.vectors, self.base)
        return score_ops(self.space, stats.angle, rng, sample_num=self.cfg["sample_num"],
                         identity=self.vectors.identity, random_depth=self.cfg["random_depth"],
                         max_macs=self.cfg["max_macs"], exhaustive_max=self.cfg["exhaustive_max"])

    def artifacts(self) -> dict[str, Any]:
        return {"abs.json": {"dropped": self.dropped, "steps": self.steps, "rebased_after": self.rebased_after,
                             "space": self.space.to_config()}}

    def state_dict(self) -> dict[str, Any]:
        return {"space": self.space.to_config(), "dropped": self.dropped, "steps": self.steps,
                "rebased_after": self.rebased_after, "base": self.base}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.space = get_space(state["space"])
        self.dropped, self.steps, self.rebased_after = state["dropped"], state["steps"], state["rebased_after"]
        self.base = dict(state["base"])
