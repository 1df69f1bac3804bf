"""`clip.inherit.mode: auto`: the settings and the training step of the mask phase (spec §5.3).

A stage of automatic inheritance trains the student under sampled L0 masks with the Lagrangian
added to the distillation loss until `prune_step`; the workflow then prunes it to a dense model
and distils on. `sparsity` may be a list: one stage per entry, each relative to the teacher's
size and starting from the stage before (the 100 -> 75 -> 50 % schedule is [0.25, 0.5]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cream.clip.l0 import INIT_LOG_ALPHA, L0Masks
from cream.clip.prune import TOWERS
from cream.clip.strategy import ClipDistill
from cream.errors import ConfigError
from cream.train.strategy import OwnedOptimizer, is_int, is_number

KEYS = ("sparsity", "prune_step", "warmup_steps", "lr", "lambda_lr", "towers", "pooled", "init_log_alpha",
        "two_sided")


@dataclass(frozen=True)
class AutoSettings:
    sparsity: tuple[float, ...]
    prune_step: int
    warmup_steps: int
    lr: float = 0.02
    lambda_lr: float = 0.02
    towers: tuple[str, ...] = TOWERS
    pooled: bool = True
    init_log_alpha: float = INIT_LOG_ALPHA
    two_sided: bool = False


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config key 'clip.inherit.kwargs.{key}' = {value!r} is not allowed; use {allowed}")


def auto_settings(kwargs: dict) -> AutoSettings:
    """Validated `clip.inherit.kwargs` of the auto mode."""
    unknown = sorted(set(kwargs) - set(KEYS))
    if unknown:
        raise _bad(unknown[0], kwargs[unknown[0]], f"one of {', '.join(KEYS)}")
    sparsity = kwargs.get("sparsity")
    stages = sparsity if isinstance(sparsity, list) else [sparsity]
    if not stages or not all(is_number(s) and 0 < s < 1 for s in stages) or stages != sorted(set(stages)):
        raise _bad("sparsity", sparsity, "a number in (0, 1) or an increasing list of them, e.g. [0.25, 0.5]")
    prune_step = kwargs.get("prune_step")
    if not is_int(prune_step) or prune_step < 1:
        raise _bad("prune_step", prune_step, "an integer >= 1 (the mask phase's steps per stage)")
    warmup = kwargs.get("warmup_steps", prune_step // 2)
    if not is_int(warmup) or not 0 <= warmup <= prune_step:
        raise _bad("warmup_steps", warmup, f"an integer in [0, prune_step = {prune_step}]")
    for key in ("lr", "lambda_lr"):
        if key in kwargs and not (is_number(kwargs[key]) and kwargs[key] > 0):
            raise _bad(key, kwargs[key], "a number > 0 (the multipliers are ascended with maximize=True)")
    towers = kwargs.get("towers", list(TOWERS))
    if not isinstance(towers, list) or not towers or not set(towers) <= set(TOWERS) or len(set(towers)) < len(towers):
        raise _bad("towers", towers, "a non-empty list from [image, text]")
    if not isinstance(kwargs.get("pooled", True), bool):
        raise _bad("pooled", kwargs["pooled"], "true (one sparsity for both towers) or false")
    if not isinstance(kwargs.get("two_sided", False), bool):
        raise _bad("two_sided", kwargs["two_sided"], "false (the spec's one-sided Lagrangian) or true (CoFi's)")
    init = kwargs.get("init_log_alpha", INIT_LOG_ALPHA)
    if not is_number(init):
        raise _bad("init_log_alpha", init, f"a number (default {INIT_LOG_ALPHA}: every gate starts open)")
    return AutoSettings(tuple(float(s) for s in stages), prune_step, warmup,
                        float(kwargs.get("lr", 0.02)), float(kwargs.get("lambda_lr", 0.02)),
                        tuple(towers), kwargs.get("pooled", True), float(init), kwargs.get("two_sided", False))


class L0Distill(ClipDistill):
    """Distillation of a student under sampled L0 masks, plus the Lagrangian; the masks and multipliers
    have their own optimizer ("l0": log_alpha descends, the multipliers ascend) and are checkpointed."""

    def __init__(self, teacher, loss, l0: L0Masks, settings: AutoSettings) -> None:
        super().__init__(teacher, loss)
        self.l0, self.settings = l0, settings

    def setup(self, engine: Any) -> None:
        if engine.dist.enabled:
            raise ConfigError("config key 'clip.inherit.mode' = 'auto': the mask phase runs in one process; "
                              "start it without torchrun")
        super().setup(engine)
        self.l0.to(engine.device)

    def optimizers(self) -> dict[str, OwnedOptimizer]:
        groups = self.l0.param_groups(self.settings.lr, self.settings.lambda_lr)
        return {"l0": OwnedOptimizer(torch.optim.AdamW(groups))}

    def loss(self, model: nn.Module, images: Tensor, tokens: Tensor, step: int) -> Tensor:
        masks = self.l0.sample()
        student = self.engine.model

        def masked(im: Tensor, tok: Tensor):
            return self.l0.call(student, masks, lambda m: m(im, tok))

        return super().loss(masked, images, tokens, step) + self.l0.lagrangian(step)

    def train_step(self, images: Tensor, tokens: Tensor, step: int) -> float | None:
        value = super().train_step(images, tokens, step)  # the weights' step; log_alpha and lambdas got grads too
        self.engine.apply_gradients("l0")
        return value

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {"expected_sparsity": [round(s.item(), 4) for s in self.l0.expected_sparsity()],
                "lambdas": [[round(v, 3) for v in row] for row in self.l0.lambdas.tolist()]}

    def state_dict(self) -> dict[str, Any]:
        return {"l0": self.l0.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.l0.load_state_dict(state["l0"])
