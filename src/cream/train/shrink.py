"""Shrinking the space while training its supernet: uniform single paths, and each epoch every
searchable decision loses its worst value.

Progressive space shrinking is an old idea (PC-NAS, ABS, "Angle-based search space shrinking");
this is its simplest, cheapest form: the statistic is the training loss the engine computes anyway.
"""

from __future__ import annotations

import math
from typing import Any

from cream.errors import ConfigError
from cream.spaces import get_space
from cream.spaces.base import Space
from cream.train.distributed import all_sum
from cream.train.uniform import Uniform


class Shrink(Uniform):
    """Single-path uniform sampling (`Uniform`) from a space that narrows at the end of every epoch.

    Score. For every decision of the space (a MobileNet layer, an NB201 edge, a ViT gene: the keys of
    `space.choices()`) and every value it allows, the mean training loss of the paths that took that
    value during the epoch (summed over ranks; non-finite losses are left out). Under uniform sampling
    every value of a decision meets the same mix of the other decisions and the same part of the
    learning-rate schedule, so the mean is a fair, free estimate of how much that value costs.

    Rule. At the end of each epoch from `warmup_epochs` on, each decision that still allows more
    than `min_ops` values drops the one with the highest mean loss (ties: the first in the space's
    order). Values no path took in the epoch have no score and are kept; a decision is never left
    with fewer than `min_ops` (>= 1) values. The statistics start afresh each epoch. The narrowed
    space (`self.space`), the epoch's statistics and the drops so far are checkpointed, and the run
    ends with the final space in space.json (and the drops in shrink.json).
    """

    def __init__(self, space: Space, seed: int = 0, warmup_epochs: int = 0, min_ops: int = 1) -> None:
        for key, value, lo in (("warmup_epochs", warmup_epochs, 0), ("min_ops", min_ops, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"config key 'strategy.kwargs.{key}' = {value!r} must be an integer >= {lo}")
        super().__init__(space, seed)
        self.warmup_epochs, self.min_ops = warmup_epochs, min_ops
        self.dropped: list[dict[str, Any]] = []
        self._reset_stats()

    def _reset_stats(self) -> None:
        """Fresh `stats`: decision -> [loss sum, paths] per allowed value, for decisions that still have a
        choice; and `_slots`: decision -> value -> its index there (the space changes once an epoch, a step
        only looks values up)."""
        self._slots = {d: {v: i for i, v in enumerate(values)} for d, values in self.space.choices().items()
                       if len(values) > 1}
        self.stats = {d: [[0.0, 0] for _ in slots] for d, slots in self._slots.items()}

    def after_step(self, step: int, loss: float | None) -> None:
        if loss is None or not math.isfinite(loss):  # a skipped non-finite step
            return
        for d, taken in self.space.arch_choices(self.step_arch).items():  # the arch `loss` trained this step
            if d in self._slots:
                for v in taken:
                    pair = self.stats[d][self._slots[d][v]]
                    pair[0] += loss
                    pair[1] += 1

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        flat = all_sum([x for pairs in self.stats.values() for pair in pairs for x in pair],
                       self.engine.device, self.engine.dist)
        choices, keep, it = self.space.choices(), {}, iter(flat)
        for d, pairs in self.stats.items():
            means = [s / n if n else None for s, n in ((next(it), next(it)) for _ in pairs)]
            if epoch < self.warmup_epochs or len(choices[d]) <= self.min_ops or all(m is None for m in means):
                continue
            worst = max((i for i, m in enumerate(means) if m is not None), key=lambda i: means[i])
            keep[d] = [v for i, v in enumerate(choices[d]) if i != worst]
            self.dropped.append({"epoch": epoch, "decision": d, "value": choices[d][worst], "mean_loss": means[worst]})
        if keep:
            self.space = self.space.restrict(keep)
        self._reset_stats()
        return {"shrink_dropped": len(keep), "space_archs": self.space.num_archs()}

    def artifacts(self) -> dict[str, Any]:
        return {"shrink.json": {"dropped": self.dropped, "space": self.space.to_config()}}

    def state_dict(self) -> dict[str, Any]:
        return {"space": self.space.to_config(), "stats": self.stats, "dropped": self.dropped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.space = get_space(state["space"])
        self._reset_stats()
        self.stats, self.dropped = state["stats"], state["dropped"]
