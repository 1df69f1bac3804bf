"""NSE (Ci et al., "Evolving Search Space for Neural Architecture Search", ICCV 2021): one round's training.

Every step (spec §4.1):
* prune: active ops whose gate logit fell below `drop_threshold` leave the space (`NseSpace.prune`);
* weight step on the training batch: each active op joins independently with `include_prob`
  (a transition cell is drawn again when empty); the run's loss and optimizer;
* every `arch_every`-th step, an α step on a held-out batch (`engine.next_batch("val")`): per cell
  two distinct gate configurations are drawn from the gates, weighted `q_s = P_s / (P_s + P_u)`,
  and the supernet's `forward_pair` gives α the two-sample gradient; the loss adds the resource
  penalty `weight · (R − target)^power` with `R = fixed + Σ_c (r_s q_s + r_u q_u)` (MACs or params,
  in millions). α has its own Adam, owned through `optimizers` (checkpointed by the engine).

The rounds around this (band sampling, Pareto front, evolution, re-initialisation) are the
`cream nse` workflow's; its parameters are validated here so a bad config fails at once.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cream.errors import ConfigError
from cream.registry import MIXED
from cream.spaces import get_space
from cream.spaces.nse import RESIDUAL, NseSpace, num_rounds
from cream.train.strategy import OwnedOptimizer, Strategy, check_kwarg, is_int, is_number
from cream.train.uniform import step_rng

RESOURCES = ("macs", "params")
UNIT = 1e6  # penalty targets and sampling bands are in millions


def gate_probs(alpha: torch.Tensor) -> torch.Tensor:
    """Gate probabilities `0.999 σ(α) + 5e-4` (never exactly 0 or 1)."""
    return 0.999 * torch.sigmoid(alpha) + 5e-4


def config_prob(p: torch.Tensor, g: Sequence[int]) -> torch.Tensor:
    """P(g) = Π p_i^g_i (1 − p_i)^(1 − g_i) of one gate configuration."""
    on = torch.tensor([bool(x) for x in g], device=p.device)
    return torch.where(on, p, 1 - p).prod()


def pair_weights(p: torch.Tensor, g_s: Sequence[int], g_u: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(q_s, q_u): the two configurations' probabilities normalised over the pair."""
    ps, pu = config_prob(p, g_s), config_prob(p, g_u)
    return ps / (ps + pu), pu / (ps + pu)


def draw_pair(p: Sequence[float], residual: bool, rng: random.Random) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two distinct gate configurations drawn from independent gates `p` (a transition cell: never all off).
    Up to 5 gates, by weight without replacement among all configurations; more, by rejection."""
    n = len(p)

    def weight(g: tuple[int, ...]) -> float:
        w = 1.0
        for gi, pi in zip(g, p, strict=True):
            w *= pi if gi else 1 - pi
        return w

    if n <= 5:
        configs = [g for g in itertools.product((0, 1), repeat=n) if residual or any(g)]
        first = rng.choices(configs, [weight(g) for g in configs])[0]
        rest = [g for g in configs if g != first]
        return first, rng.choices(rest, [weight(g) for g in rest])[0]
    drawn: list[tuple[int, ...]] = []
    while len(drawn) < 2:
        g = tuple(int(rng.random() < pi) for pi in p)
        if (residual or any(g)) and g not in drawn:
            drawn.append(g)
    return drawn[0], drawn[1]


def has_choice(space: NseSpace, cell: int) -> bool:
    n = len(space.active[cell])
    return n >= 1 if space.kinds[cell] == RESIDUAL else n >= 2


def _check_resource_map(key: str, value: Any, fields: Mapping[str, str]) -> None:
    ok = isinstance(value, Mapping) and set(value) <= set(RESOURCES) and all(
        isinstance(v, Mapping) and set(v) == set(fields) and all(is_number(x) for x in v.values())
        for v in value.values())
    check_kwarg(key, value, ok, f"a mapping of {list(RESOURCES)} to {{{', '.join(fields)}}} numbers")


class Nse(Strategy):
    """One NSE round on an `NseSpace` (spec §4.1 step 1), with the parameters of the rounds around it.

    Parameters (`strategy.kwargs`; defaults are the original's NSE27 run):
    * arch_lr (5e-3), arch_betas ([0, 0.999]), arch_every (2): α's Adam and how often it steps;
    * include_prob (0.5): chance of each active op in a weight step; drop_threshold (−2);
    * penalty ({macs: {weight: 1e-5, power: 2, target: 300}}): resource penalties, targets in millions;
    * band ({drift: required, target: the penalty's, cost: macs, extra_drift: 10}): after a round,
      `sample_num` (2000) distinct archs are drawn from the gates with cost in (target ± drift) and
      `extra` (100) in (target − drift − extra_drift, target − drift] (they join the Pareto test but
      are never kept). The original's MAC configs omit `mac_drift`, so there is no default;
    * rounds (⌊(M−1)/(K−1)⌋ of the space); max_tries (100): draws per wanted sample before giving up.
    """

    supernet_kind = MIXED
    find_unused_parameters = True

    def __init__(self, space: NseSpace, seed: int = 0, arch_lr: float = 5e-3,
                 arch_betas: Sequence[float] = (0.0, 0.999), arch_every: int = 2, include_prob: float = 0.5,
                 drop_threshold: float = -2.0, penalty: Mapping[str, Mapping[str, float]] | None = None,
                 band: Mapping[str, Any] | None = None, sample_num: int = 2000, extra: int = 100,
                 rounds: int | None = None, max_tries: int = 100) -> None:
        if not isinstance(space, NseSpace):
            raise ConfigError(f"strategy 'nse' needs an NSE space (family nse), got {space.name!r}")
        check_kwarg("arch_lr", arch_lr, is_number(arch_lr) and arch_lr > 0, "a number > 0")
        check_kwarg("arch_betas", arch_betas, isinstance(arch_betas, (list, tuple)) and len(arch_betas) == 2
                    and all(is_number(b) and 0 <= b < 1 for b in arch_betas), "two numbers in [0, 1)")
        check_kwarg("arch_every", arch_every, is_int(arch_every) and arch_every >= 1, "an integer >= 1")
        check_kwarg("include_prob", include_prob, is_number(include_prob) and 0 < include_prob < 1,
                    "a number in (0, 1)")
        check_kwarg("drop_threshold", drop_threshold, is_number(drop_threshold), "a number")
        penalty = {"macs": {"weight": 1e-5, "power": 2, "target": 300}} if penalty is None else penalty
        _check_resource_map("penalty", penalty, {"weight": "", "power": "", "target": ""})
        band = dict(band or {})
        check_kwarg("band", band, "drift" in band and set(band) <= {"drift", "target", "cost", "extra_drift"},
                    "a mapping with 'drift' (required: the original's configs omit mac_drift) and optional "
                    "'target', 'cost' (macs or params), 'extra_drift'")
        band.setdefault("cost", "macs")
        check_kwarg("band.cost", band["cost"], band["cost"] in RESOURCES, f"one of {list(RESOURCES)}")
        if "target" not in band:
            check_kwarg("band.target", None, band["cost"] in penalty, "a number (or a penalty on band.cost)")
            band["target"] = penalty[band["cost"]]["target"]
        band.setdefault("extra_drift", 10)
        for key in ("drift", "target", "extra_drift"):
            check_kwarg(f"band.{key}", band[key], is_number(band[key]) and band[key] >= 0, "a number >= 0")
        for key, value, lo in (("sample_num", sample_num, 1), ("extra", extra, 0), ("max_tries", max_tries, 1)):
            check_kwarg(key, value, is_int(value) and value >= lo, f"an integer >= {lo}")
        rounds = num_rounds(len(space.ops), space.active_size) if rounds is None else rounds
        check_kwarg("rounds", rounds, is_int(rounds) and rounds >= 1, "an integer >= 1")
        self.space, self.seed = space, seed
        self.arch_lr, self.arch_betas, self.arch_every = float(arch_lr), tuple(arch_betas), arch_every
        self.include_prob, self.drop_threshold = include_prob, drop_threshold
        self.penalty, self.band = {k: dict(v) for k, v in penalty.items()}, band
        self.sample_num, self.extra, self.rounds, self.max_tries = sample_num, extra, rounds, max_tries

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        net = engine.model
        if not hasattr(net, "forward_pair"):
            raise ConfigError(f"strategy 'nse' needs the NSE supernet, got {type(net).__name__}")
        self.arch_optimizer = torch.optim.Adam(net.arch_parameters(), lr=self.arch_lr, betas=self.arch_betas)

    def optimizers(self) -> dict[str, OwnedOptimizer]:
        return {"arch": OwnedOptimizer(self.arch_optimizer)}

    # --- a step ------------------------------------------------------------------------------
    def active_alpha(self) -> list[list[float]]:
        alpha = self.engine.model.alpha.detach().cpu()
        return [[float(alpha[c, o]) for o in ops] for c, ops in enumerate(self.space.active)]

    def gate_sampling_probs(self) -> list[list[float]]:
        """Each active op's gate probability (what the round's samples are drawn with)."""
        p = gate_probs(self.engine.model.alpha.detach().cpu())
        return [[float(p[c, o]) for o in ops] for c, ops in enumerate(self.space.active)]

    def _prune(self) -> None:
        alpha, thr = self.active_alpha(), self.drop_threshold
        if any(a < thr and o not in keep for ops, keep, al in zip(self.space.active, self.space.keep, alpha,
                                                                    strict=True) for o, a in zip(ops, al, strict=True)):
            self.space = self.space.prune(alpha, thr)

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> float | None:
        e = self.engine
        if step % self.arch_every == 0:  # α moves only on the step before (alpha_step): prune after it
            self._prune()
        probs = [[self.include_prob] * len(ops) for ops in self.space.active]
        e.model.set_arch(self.space.sample(step_rng(self.seed, step), probs))
        with e.autocast():
            loss = e.criterion(e.forward_model(images), targets)
        value = e.optimize(loss)
        if step % self.arch_every == self.arch_every - 1:
            self.alpha_step(step)
        return value

    def alpha_step(self, step: int) -> float | None:
        e, net, space = self.engine, self.engine.model, self.space
        rng = random.Random(f"nse-gates:{self.seed}:{step}")
        p_all = gate_probs(net.alpha)
        fixed = space.fixed_cost()
        resource = {r: torch.tensor(float(fixed[r]), device=net.alpha.device) for r in self.penalty}
        sel, unsel, q_s, q_u = [], [], [], []
        for c, ops in enumerate(space.active):
            if has_choice(space, c):
                p = p_all[c, list(ops)]
                g_s, g_u = draw_pair(p.tolist(), space.kinds[c] == RESIDUAL, rng)
                qs, qu = pair_weights(p, g_s, g_u)
                s_ops = sorted(o for o, g in zip(ops, g_s, strict=True) if g)
                u_ops = sorted(o for o, g in zip(ops, g_u, strict=True) if g)
            else:  # one configuration only: it runs, and counts in full
                qs, qu, s_ops, u_ops = None, None, sorted(ops), sorted(ops)
            sel.append(s_ops)
            unsel.append(u_ops)
            q_s.append(qs)
            q_u.append(qu)
            costs = space.op_costs(c)
            for i, r in enumerate(RESOURCES):
                if r in resource:
                    r_s, r_u = sum(costs[o][i] for o in s_ops), sum(costs[o][i] for o in u_ops)
                    resource[r] = resource[r] + (r_s if qs is None else qs * r_s + qu * r_u)
        if all(q is None for q in q_s):  # no cell has a choice left: α has nothing to learn
            return None
        images, targets = e.next_batch("val")
        with e.autocast():
            logits = net.forward_pair(images, {"cells": sel}, {"cells": unsel}, q_s, q_u)
            loss = nn.functional.cross_entropy(logits, targets)
        for r, pen in self.penalty.items():
            loss = loss + pen["weight"] * (resource[r] / UNIT - pen["target"]) ** pen["power"]
        return e.optimize(loss, "arch")

    # --- reporting and state -------------------------------------------------------------------
    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {"space_archs": self.space.num_archs(), "active_ops": sum(map(len, self.space.active))}

    def eval_archs(self) -> list[tuple[str, Any]]:
        return [("derived", self.engine.model.derive(self.space.active))]

    def state_dict(self) -> dict[str, Any]:
        return {"space": self.space.to_config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.space = get_space(state["space"])
