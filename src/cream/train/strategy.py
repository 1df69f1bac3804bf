"""Strategies: how one training step computes its loss.

The engine owns everything generic (autocast, backward, optimizer, EMA, checkpoints, DDP,
logging). A strategy owns what differs between methods: which path a supernet takes this
step, which loss is used (plain CE, distillation, ...), extra state that must be
checkpointed (a prioritized-path board, a meta-network). The base `Strategy` trains a plain model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from cream.spaces.base import Space
    from cream.train.engine import Engine


class Strategy:
    """Base strategy: a plain supervised step. Subclasses override the hooks they need."""

    #: DDP must look for parameters unused in a step (true for single-path supernets).
    find_unused_parameters: bool = False
    #: The space a supernet strategy samples from (None for a plain model). A strategy that narrows
    #: it replaces it (and checkpoints it); the run saves the final one as space.json.
    space: Space | None = None

    def setup(self, engine: Engine) -> None:
        """Called once after the engine has built model, optimizer and data."""
        self.engine = engine

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        """Forward `images` through `model` (possibly DDP-wrapped) and return the loss to minimise."""
        return self.engine.criterion(model(images), targets)

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        """Called after each optimizer step (global step index, 0-based)."""

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
