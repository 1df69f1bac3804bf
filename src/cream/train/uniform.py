"""Single-path uniform sampling (SPOS), and the per-step randomness every path strategy shares."""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from cream.spaces.base import Arch, Space
from cream.train.strategy import Strategy


def step_rng(seed: int, step: int) -> random.Random:
    """A generator that depends only on (seed, step): the same on every rank and after a resume."""
    return random.Random(f"cream:{seed}:{step}")


def reference_archs(space: Space, seed: int, count: int = 2) -> list[tuple[str, Arch]]:
    """Fixed archs to follow during supernet training (not one random subnet, which is a noisy signal).

    The space's smallest and largest archs where it defines them, plus `count` seeded samples.
    """
    refs = [(name, getattr(space, name)()) for name in ("smallest", "largest") if callable(getattr(space, name, None))]
    rng = random.Random(f"cream-reference:{seed}")
    return refs + [(f"sample{i}", space.sample(rng)) for i in range(count)]


class Uniform(Strategy):
    """Single-path one-shot training (SPOS): a new random arch every step, the same on every rank.

    `sample_kwargs` go to `space.sample`, e.g. `probs={op: weight}` on MobileNet-style spaces to
    draw ops with fixed probabilities (Cream's `pre_prob`) instead of uniformly.
    """

    find_unused_parameters = True

    def __init__(self, space: Space, seed: int = 0, **sample_kwargs: Any) -> None:
        self.space, self.seed, self.sample_kwargs = space, seed, sample_kwargs
        #: the arch of the latest step (set by `loss`), for `after_step` hooks that need it. Drawn here
        #: too, so that bad sampling parameters fail while the config is being read.
        self.step_arch: Arch = self.arch_for_step(0)

    def arch_for_step(self, step: int) -> Arch:
        return self.space.sample(step_rng(self.seed, step), **self.sample_kwargs)

    def use_step_arch(self, step: int) -> None:
        """Draw the arch of `step` into `step_arch` and select it in the supernet."""
        self.step_arch = self.arch_for_step(step)
        self.engine.model.set_arch(self.step_arch)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        self.use_step_arch(step)
        return super().loss(model, images, targets, step)

    def eval_archs(self) -> list[tuple[str, Any]]:
        return reference_archs(self.space, self.seed)
