"""Searching the search space (AutoFormerV2/S3, spec autoformer_v2_s3.md §4): E-T error, trends, moved ranges.

The original's space-evolution code is unreleased; this is our reimplementation from the paper's description,
and every constant is a `space_search` config key (docs/space_search.md):

* E of a space: the mean error (1 - top-1) of `random_archs` random archs; T: the mean error of the `top_k`
  best archs of a short evolution (`evolution_budget` archs); E-T = `et_weight`·E + (1 - `et_weight`)·T.
* A dimension's trend: E-T of each choice c, measured on the space restricted to c (`Space.restrict`), and
  the least-squares line through those points, over the choice's position or value (`trend_over`).
* The move: where the line falls towards one end, `step_size` choices are added beyond that end (spaced
  as the two end choices are) and, with update "shift", as many dropped at the other end.

Scores come from a `score_many` callback (top-1 in [0, 1] per arch, e.g. inherited weights); an arch is
scored once per measurement however often it is drawn.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from cream.config import SpaceSearchConfig
from cream.cost.limits import Feasible
from cream.errors import ConfigError
from cream.search import search
from cream.search.base import ScoreMany
from cream.spaces.base import Arch, EvolvableSpace, Space, arch_key


def evolvable(space: Space, dimensions: Sequence[str] = ()) -> EvolvableSpace:
    """`space` if a space search can move it (and it has every dimension named), else a one-line `ConfigError`."""
    if not isinstance(space, EvolvableSpace):
        raise ConfigError(f"space '{space.name}' (family {space.family!r}) has no dimensions() / with_dimensions(); "
                          "a space search needs both")
    unknown = [d for d in dimensions if d not in space.dimensions()]
    if unknown:
        raise ConfigError(f"config key 'space_search.dimensions' = {list(dimensions)} names {unknown}, which space "
                          f"'{space.name}' lacks; allowed: {list(space.dimensions())}")
    return space


class SpaceMeasure:
    """E, T and E-T of spaces whose archs `score_many` scores, with each arch's error scored once."""

    def __init__(self, score_many: ScoreMany, cfg: SpaceSearchConfig, feasible: Feasible | None, seed: int) -> None:
        self.score_many, self.cfg, self.seed = score_many, cfg, seed
        self.feasible = feasible if cfg.constrained else None
        self._scores: dict[Any, float] = {}

    def scores(self, archs: list[Arch]) -> list[float]:
        new = list({arch_key(a): a for a in archs if arch_key(a) not in self._scores}.values())
        for arch, score in zip(new, self.score_many(new) if new else [], strict=True):
            self._scores[arch_key(arch)] = float(score)
        return [self._scores[arch_key(a)] for a in archs]

    def random_archs(self, space: Space) -> list[Arch]:
        """`random_archs` draws (repeats allowed) inside the limits; fewer, maybe none, if they are rare."""
        rng, out = random.Random(self.seed), []
        for _ in range(100 * self.cfg.random_archs):
            if len(out) == self.cfg.random_archs:
                break
            arch = space.sample(rng)
            if self.feasible is None or self.feasible(arch):
                out.append(arch)
        return out

    def __call__(self, space: Space) -> dict[str, float]:
        """E, T and E-T of `space`; a space without an arch inside the limits gets error 1 for all three."""
        c = self.cfg
        archs = self.random_archs(space)
        if not archs:
            return {"E": 1.0, "T": 1.0, "ET": 1.0, "archs": 0}
        E = sum(1.0 - s for s in self.scores(archs)) / len(archs)
        found = search("evolution", space, None, score_many=self.scores, budget=c.evolution_budget, seed=self.seed,
                       feasible=self.feasible, **{"generations": None, **c.evolution})
        top = found.top(c.top_k)
        T = sum(1.0 - r["score"] for r in top) / len(top)
        return {"E": E, "T": T, "ET": c.et_weight * E + (1.0 - c.et_weight) * T, "archs": len(self._scores)}


def linear_trend(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through the points (slope 0 for a single point)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def moved_range(choices: Sequence[Any], slope: float, cfg: SpaceSearchConfig,
                bounds: Sequence[float | None] = (None, None)) -> tuple[list[Any], str]:
    """The choices after one step against the trend, and what was done ("keep", "up", "down", "grow up", ...).

    A falling line (larger is better) adds choices above the largest, a rising one below the smallest, spaced
    as the two end choices; values that are not positive or leave `bounds` are not added.
    """
    values = list(choices)
    if len(values) < 2 or abs(slope) <= cfg.min_slope:
        return values, "keep"
    up = slope < 0
    lo, hi = (b if b else None for b in bounds)  # null or 0: open end
    integer = all(isinstance(v, int) for v in values)
    end, gap = (values[-1], values[-1] - values[-2]) if up else (values[0], values[0] - values[1])
    added = []
    for i in range(1, cfg.step_size + 1):
        v = end + i * gap
        v = int(v) if integer else round(float(v), 6)
        if v <= 0 or (lo is not None and v < lo) or (hi is not None and v > hi):
            break
        added.append(v)
    if not added:
        return values, "keep"
    if cfg.update == "grow":
        return (values + added if up else added[::-1] + values), "grow up" if up else "grow down"
    kept = values[len(added):] if up else values[: len(values) - len(added)]
    return (kept + added if up else added[::-1] + kept), "up" if up else "down"


def evolve_step(space: EvolvableSpace, measure: SpaceMeasure, cfg: SpaceSearchConfig) -> dict[str, Any]:
    """Measure `space` and each moving dimension's choices; return the figures, trends and the next space."""
    record: dict[str, Any] = {"space": space.to_config(), **measure(space), "dimensions": {}}
    moves = {}
    for dim, choices in space.dimensions().items():
        if cfg.dimensions and dim not in cfg.dimensions:
            continue
        figures = [measure(space.restrict({dim: [c]})) for c in choices]
        xs = list(range(len(choices))) if cfg.trend_over == "index" else [float(c) for c in choices]
        ets = [f["ET"] for f in figures]
        slope, intercept = linear_trend(xs, ets)
        new, action = moved_range(choices, slope, cfg, cfg.bounds.get(dim, (None, None)))
        record["dimensions"][dim] = {"choices": choices, "x": xs, "E": [f["E"] for f in figures],
                                     "T": [f["T"] for f in figures], "ET": ets, "slope": slope,
                                     "intercept": intercept, "action": action, "next": new}
        if new != choices:
            moves[dim] = new
    record["next_space"] = space.with_dimensions(moves).to_config() if moves else space.to_config()
    return record
