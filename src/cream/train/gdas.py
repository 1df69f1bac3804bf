"""GDAS (Dong & Yang, CVPR 2019): differentiable search that runs one sampled op per edge.

Each edge draws a Gumbel-softmax sample of softmax(α) at temperature τ, runs only the op of its
largest entry and multiplies it by a straight-through weight: exactly 1 forward, the soft sample's
gradient backward, so α learns from a single-path forward. Each step moves the weights on the
training batch and then α on a held-out batch, each with its own sample; τ falls linearly from
`tau_max` to `tau_min` over the epochs. Samples come from generators seeded by (seed, step), so a
resumed run draws the same ones. The proposed arch is the argmax of α (`derive`), as DARTS's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cream.spaces.base import Space
from cream.train.darts import Darts
from cream.train.strategy import check_kwarg, is_number


def gumbel_hard(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, list[int]]:
    """(weights, chosen) of one Gumbel-softmax draw per row: `weights` equals the one-hot of `chosen`
    exactly in value and has the gradient of the soft sample softmax((log_softmax(logits) + g) / τ)."""
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    g = (-(-u.log()).log()).to(device=logits.device, dtype=logits.dtype)
    soft = ((logits.log_softmax(-1) + g) / tau).softmax(-1)
    index = soft.detach().argmax(-1)
    one_hot = nn.functional.one_hot(index, logits.shape[-1]).to(soft.dtype)
    return one_hot + (soft - soft.detach()), index.tolist()


class Gdas(Darts):
    """GDAS on a mixed supernet.

    Parameters (`strategy.kwargs`): tau_max (10) and tau_min (0.1), the temperature at the first and
    the last epoch; arch_lr, arch_betas, arch_weight_decay as DARTS's (GDAS's defaults are the same).
    """

    find_unused_parameters = True

    def __init__(self, space: Space, seed: int = 0, tau_max: float = 10.0, tau_min: float = 0.1,
                 **arch_kwargs: Any) -> None:
        check_kwarg("tau_min", tau_min, is_number(tau_min) and tau_min > 0, "a number > 0")
        check_kwarg("tau_max", tau_max, is_number(tau_max) and tau_max >= tau_min, f"a number >= tau_min ({tau_min})")
        check_kwarg("second_order", arch_kwargs.get("second_order", False), not arch_kwargs.get("second_order"),
                    "false (GDAS is first order)")
        super().__init__(space, seed, **arch_kwargs)
        self.seed, self.tau_max, self.tau_min = seed, float(tau_max), float(tau_min)

    def tau(self) -> float:
        """The temperature of the current epoch (GDAS's linear schedule)."""
        epochs = self.engine.cfg.train.epochs
        return self.tau_max - (self.tau_max - self.tau_min) * self.engine.epoch / max(epochs - 1, 1)

    def sample(self, step: int, draw: int) -> list[tuple[torch.Tensor, list[int]]]:
        """Draw `draw` (0: weights, 1: α) of `step`, one (weights, chosen) per architecture parameter of the
        supernet, in its order (NB201: one; DARTS: normal, reduce); the same on every rank and after a resume."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + 2 * step + draw)
        return [gumbel_hard(alphas, self.tau(), generator) for alphas in self.engine.model.arch_parameters()]

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> float | None:
        e, net = self.engine, self.engine.model
        net.set_arch(None)
        try:
            net.set_sampled(self.sample(step, 0))
            with e.autocast():
                loss = e.criterion(e.forward_model(images), targets)
            value = e.optimize(loss)
            held_images, held_targets = e.next_batch("val")
            net.set_sampled(self.sample(step, 1))
            with e.autocast():
                arch_loss = nn.functional.cross_entropy(net(held_images), held_targets)
            e.optimize(arch_loss, "arch")
        finally:
            net.set_sampled(None)
        return value

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {**super().end_epoch(epoch), "tau": self.tau()}

    def eval_archs(self) -> list[tuple[str, Any]]:
        return [("derived", self.engine.model.derive())]
