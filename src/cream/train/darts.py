"""First-order DARTS (Liu, Simonyan & Yang, ICLR 2019) as a supernet-training strategy.

The supernet is a mixed one: every layer the softmax(α)-weighted sum of its candidates. Each step
first moves the architecture parameters α on a held-out batch (the engine's second stream over
`splits.val`) with the weights as they are (first order: no look-ahead step of the weights), then
the weights on the training batch with the run's optimizer. α has its own Adam, owned through
`optimizers`, so the engine checkpoints it. The proposed arch is the argmax of α per layer
(`derive`), logged every epoch and written as arch.json at the end, as `cream search` writes it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cream.config import with_space_classes
from cream.errors import ConfigError
from cream.registry import MIXED
from cream.spaces.base import Space
from cream.train.strategy import OwnedOptimizer, Strategy, check_kwarg, is_number


class Darts(Strategy):
    """First-order DARTS on a mixed supernet.

    Parameters (`strategy.kwargs`; defaults are DARTS's): arch_lr (3e-4), arch_betas ([0.5, 0.999]) and
    arch_weight_decay (1e-3): the Adam of the architecture parameters. The held-out loss that moves
    them is plain cross-entropy on unaugmented images (no mixup, no label smoothing).
    """

    supernet_kind = MIXED

    def __init__(self, space: Space, seed: int = 0, arch_lr: float = 3e-4,
                 arch_betas: tuple[float, float] | list[float] = (0.5, 0.999), arch_weight_decay: float = 1e-3) -> None:
        check_kwarg("arch_lr", arch_lr, is_number(arch_lr) and arch_lr > 0, "a number > 0")
        check_kwarg("arch_betas", arch_betas, isinstance(arch_betas, (list, tuple)) and len(arch_betas) == 2
                    and all(is_number(b) and 0 <= b < 1 for b in arch_betas), "two numbers in [0, 1)")
        check_kwarg("arch_weight_decay", arch_weight_decay, is_number(arch_weight_decay) and arch_weight_decay >= 0,
                    "a number >= 0")
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
        with e.autocast():  # α lives outside DDP's reduction: the engine averages its gradient over ranks
            arch_loss = nn.functional.cross_entropy(e.model(held_images), held_targets)
        e.optimize(arch_loss, "arch")
        return super().train_step(images, targets, step)

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

    def artifacts(self) -> dict[str, Any]:
        """arch.json with the derived arch, in `cream search`'s format (its score: the last validation of
        the derived path, where it was evaluated on the final weights)."""
        e = self.engine
        arch = e.model.derive()
        last = e.last_eval[1].get("derived") if e.last_eval is not None and e.last_eval[0] == e.step else None
        space = with_space_classes(e.cfg, e.splits.num_classes).space  # as config.yaml has it, so resumed runs agree
        return {"arch.json": {"arch": arch, "space": space, "score": last["top1"] if last else None,
                              "cost": self.space.cost(arch), "test_top1": None}}
