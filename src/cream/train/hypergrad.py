"""One-step look-ahead hypergradients: differentiate a loss after a virtual SGD step of some weights.

Cream's meta-matching update uses it (spec §5.5), and so do second-order differentiable searches
(DARTS, CDARTS): the gradient with respect to other parameters (a matching network, architecture
weights) flows through the virtual step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class _HardSigmoid(nn.Module):
    """relu6(x + 3) / 6 from ops with second derivatives (`nn.Hardsigmoid`'s backward has none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 3).clamp(0, 6) / 6


@contextmanager
def twice_differentiable(model: nn.Module) -> Iterator[None]:
    """Swap modules without a double backward for equivalents that have one (for the hypergradient)."""
    swapped = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, nn.Hardsigmoid)]
    for parent, name, _ in swapped:
        setattr(parent, name, _HardSigmoid())
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def lookahead(inner_loss: torch.Tensor, weights: dict[str, nn.Parameter], lr: float,
              outer_loss: Callable[[dict[str, torch.Tensor]], torch.Tensor], wrt: Sequence[torch.Tensor],
              first_only: bool = False) -> list[torch.Tensor | None]:
    """d outer(w - lr · d inner / dw) / d wrt, for the named weights w (a model's, by parameter name).

    `inner_loss` must have been computed with a graph that reaches `wrt` (e.g. weighted by them);
    `outer_loss(stepped)` evaluates the model on the stepped weights (`torch.func.functional_call`).
    `first_only` differentiates through the first weight tensor only (Cream's original, spec §8 #3).
    """
    grads = torch.autograd.grad(inner_loss, list(weights.values()), create_graph=True, allow_unused=True)
    stepped = {name: p if g is None else p - lr * g for (name, p), g in zip(weights.items(), grads, strict=True)}
    loss = outer_loss(stepped)
    if first_only:
        first = next(iter(stepped.values()))
        (v,) = torch.autograd.grad(loss, [first])
        return list(torch.autograd.grad(first, list(wrt), grad_outputs=v, allow_unused=True))
    return list(torch.autograd.grad(loss, list(wrt), allow_unused=True))
