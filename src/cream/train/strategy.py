"""Strategies: what one training step of a method does.

The engine owns everything generic (autocast, backward, optimizer, EMA, checkpoints, DDP,
logging). A strategy owns what differs between methods: which path a supernet takes this
step, which loss is used (plain CE, distillation, ...), extra state that must be
checkpointed (a prioritized-path board, a meta-network). The base `Strategy` trains a plain model.

Most strategies only define `loss`. One that needs more may own optimizers (`optimizers`: the
engine checkpoints and schedules them), take the whole step (`train_step`, built from the
engine's `optimize` / `apply_gradients`), and draw held-out batches (`engine.next_batch("val")`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cream.errors import ConfigError
from cream.registry import SINGLE_PATH

if TYPE_CHECKING:
    from cream.spaces.base import Space
    from cream.train.engine import Engine

SCHEDULES = ("constant", "follow")


@dataclass
class OwnedOptimizer:
    """An optimizer a strategy owns (for architecture parameters, a meta-network): the engine saves it in
    its checkpoints, restores it on resume, and sets its lr by `schedule` before every step:
    "constant" keeps the lr it was created with; "follow" scales it as the weights' scheduler scales
    theirs (created lr x current weights lr / optim.lr)."""

    optimizer: torch.optim.Optimizer
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is unknown; choose one of {list(SCHEDULES)}")


class Strategy:
    """Base strategy: a plain supervised step. Subclasses override the hooks they need."""

    #: DDP must look for parameters unused in a step (true for single-path supernets).
    find_unused_parameters: bool = False
    #: the kind of supernet the strategy trains (`cream.registry.KINDS`).
    supernet_kind: str = SINGLE_PATH
    #: The space a supernet strategy samples from (None for a plain model). A strategy that narrows
    #: it replaces it (and checkpoints it); the run saves the final one as space.json.
    space: Space | None = None

    def setup(self, engine: Engine) -> None:
        """Called once after the engine has built model, optimizer and data."""
        self.engine = engine

    def optimizers(self) -> dict[str, OwnedOptimizer]:
        """The strategy's own optimizers by name (asked once, after `setup`); step one with
        `engine.optimize(loss, name)` or `engine.apply_gradients(name)`."""
        return {}

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> float | None:
        """One whole step on a training batch (on the device, mixup applied); returns the loss value, or
        None where a non-finite loss was skipped. Default: `loss`, then a step of the weights' optimizer."""
        e = self.engine
        with e.autocast():
            loss = self.loss(e.forward_model, images, targets, step)
        return e.optimize(loss)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        """Forward `images` through `model` (possibly DDP-wrapped) and return the loss to minimise (with the
        auxiliary head's, weighted by `model.aux_weight`, where the model has one)."""
        loss = self.engine.criterion(model(images), targets)
        aux, weight = getattr(self.engine.model, "aux_logits", None), self.engine.cfg.model.aux_weight
        return loss + weight * self.engine.criterion(aux, targets) if aux is not None and weight > 0 else loss

    def after_step(self, step: int, loss: float | None) -> None:
        """Called after each training step (global step index, 0-based; loss None if it was skipped)."""

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Called after each epoch; returns extra metrics to log."""
        return {}

    def eval_archs(self) -> list[tuple[str, Any]]:
        """(name, arch) pairs evaluated after each epoch; arch None means the model as it is."""
        return [("model", None)]

    def artifacts(self) -> dict[str, Any]:
        """JSON files (name → content) written into the run directory at the end of training."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Strategy state saved in checkpoints (tensors, numbers, strings, lists, dicts only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def is_int(value: Any) -> bool:
    """An int but not a bool (YAML's `true` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_kwarg(key: str, value: Any, ok: bool, allowed: str) -> None:
    """One-line `ConfigError` for a strategy parameter `key` = `value` unless `ok`."""
    if not ok:
        raise ConfigError(f"config key 'strategy.kwargs.{key}' = {value!r} is not allowed; use {allowed}")
