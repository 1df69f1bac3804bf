"""DARTS (Liu, Simonyan & Yang, ICLR 2019) as a supernet-training strategy, first or second order.

The supernet is a mixed one: every layer the softmax(α)-weighted sum of its candidates. Each step
first moves the architecture parameters α on a held-out batch (the engine's second stream over
`splits.val`), then the weights on the training batch with the run's optimizer. First order takes
the held-out gradient at the weights as they are; second order (`second_order: true`) at the
weights after a virtual SGD step on the training batch, differentiated through that step exactly
(`cream.train.hypergrad.lookahead`, the one-step hypergradient Cream's meta-update uses) rather
than by DARTS's finite-difference approximation. α has its own Adam, owned through
`optimizers`, so the engine checkpoints it. The proposed arch is the argmax of α per layer
(`derive`), logged every epoch and written as arch.json at the end, as `cream search` writes it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cream.config import with_space_classes
from cream.errors import ConfigError
from cream.nn.batchnorm import frozen_bn_stats
from cream.registry import MIXED
from cream.spaces.base import Arch, Space
from cream.train.hypergrad import lookahead, twice_differentiable
from cream.train.strategy import OwnedOptimizer, Strategy, check_kwarg, is_number


class Darts(Strategy):
    """DARTS on a mixed supernet.

    Parameters (`strategy.kwargs`; defaults are DARTS's): arch_lr (3e-4), arch_betas ([0.5, 0.999]) and
    arch_weight_decay (1e-3): the Adam of the architecture parameters; second_order (false): differentiate
    the held-out loss through a virtual SGD step of the weights at their current lr (no momentum, no weight
    decay; BN normalises with batch statistics and leaves its running ones alone). The held-out loss
    that moves α is plain cross-entropy on unaugmented images (no mixup, no label smoothing).
    """

    supernet_kind = MIXED

    def __init__(self, space: Space, seed: int = 0, arch_lr: float = 3e-4,
                 arch_betas: tuple[float, float] | list[float] = (0.5, 0.999), arch_weight_decay: float = 1e-3,
                 second_order: bool = False) -> None:
        check_kwarg("arch_lr", arch_lr, is_number(arch_lr) and arch_lr > 0, "a number > 0")
        check_kwarg("arch_betas", arch_betas, isinstance(arch_betas, (list, tuple)) and len(arch_betas) == 2
                    and all(is_number(b) and 0 <= b < 1 for b in arch_betas), "two numbers in [0, 1)")
        check_kwarg("arch_weight_decay", arch_weight_decay, is_number(arch_weight_decay) and arch_weight_decay >= 0,
                    "a number >= 0")
        check_kwarg("second_order", second_order, isinstance(second_order, bool), "true or false")
        self.second_order = second_order
        self.space = space  # `seed` is every strategy's parameter (make_strategy); DARTS draws nothing with it
        self.arch_lr, self.arch_betas, self.arch_weight_decay = float(arch_lr), tuple(arch_betas), arch_weight_decay

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        net = engine.model
        if getattr(net, "kind", None) != MIXED:
            raise ConfigError(f"strategy 'darts' needs a {MIXED} supernet, got {type(net).__name__}")
        self.arch_optimizer = torch.optim.Adam(net.arch_parameters(), lr=self.arch_lr, betas=self.arch_betas,
                                               weight_decay=self.arch_weight_decay)

    def optimizers(self) -> dict[str, OwnedOptimizer]:
        return {"arch": OwnedOptimizer(self.arch_optimizer)}

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> float | None:
        e = self.engine
        e.model.set_arch(None)  # the mixture (an evaluation may have selected one path)
        held_images, held_targets = e.next_batch("val")
        if self.second_order:
            self.second_order_step(images, targets, held_images, held_targets)
        else:
            with e.autocast():  # α lives outside DDP's reduction: the engine averages its gradient over ranks
                arch_loss = nn.functional.cross_entropy(e.model(held_images), held_targets)
            e.optimize(arch_loss, "arch")
        return super().train_step(images, targets, step)

    def second_order_step(self, images: torch.Tensor, targets: torch.Tensor, held_images: torch.Tensor,
                          held_targets: torch.Tensor) -> None:
        """α ← Adam(d L_val(w - lr · d L_train(w, α)/dw, α) / dα): the direct and the through-the-step terms."""
        e, net = self.engine, self.engine.model
        alphas = net.arch_parameters()
        weights = {name: p for name, p in net.named_parameters() if all(p is not a for a in alphas)}
        lr = e.optimizer.param_groups[0]["lr"]
        with torch.autocast(e.device.type, enabled=False), frozen_bn_stats(net), twice_differentiable(net):
            inner = e.criterion(net(images.float()), targets)

            def held_out_loss(stepped: dict[str, torch.Tensor]) -> torch.Tensor:
                out = torch.func.functional_call(net, stepped, (held_images.float(),))
                return nn.functional.cross_entropy(out, held_targets)

            grads = lookahead(inner, weights, lr, held_out_loss, alphas)
        for a, grad in zip(alphas, grads, strict=True):
            a.grad = torch.zeros_like(a) if grad is None else grad.detach()
        e.apply_gradients("arch")

    # --- reporting ---------------------------------------------------------------------------
    def alpha_entropy(self) -> float:
        """Mean entropy (nats) of softmax(α) over the layers: log(#ops) at the start, 0 once decided."""
        with torch.no_grad():
            probs = torch.cat([a.detach().float().softmax(-1) for a in self.engine.model.arch_parameters()])
            return float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {"alpha_entropy": self.alpha_entropy(), "derived_arch": self.engine.model.derive()}

    def eval_archs(self) -> list[tuple[str, Any]]:
        return [("model", None), ("derived", self.engine.model.derive())]

    def proposal(self) -> tuple[Arch, float | None]:
        """The arch the search proposes and its score: the derived arch, scored by the last validation of
        its path where that was on the final weights."""
        e = self.engine
        last = e.last_eval[1].get("derived") if e.last_eval is not None and e.last_eval[0] == e.step else None
        return e.model.derive(), last["top1"] if last else None

    def artifacts(self) -> dict[str, Any]:
        """arch.json with the proposed arch, in `cream search`'s format."""
        e = self.engine
        arch, score = self.proposal()
        space = with_space_classes(e.cfg, e.splits.num_classes).space  # as config.yaml has it, so resumed runs agree
        return {"arch.json": {"arch": arch, "space": space, "score": score, "cost": self.space.cost(arch),
                              "test_top1": None}}
