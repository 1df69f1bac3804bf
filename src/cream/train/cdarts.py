"""CDARTS (Yu et al., TPAMI 2022): cyclic differentiable search, where a search network and an evaluation
network built from its current genotype teach each other (shared/specs/efficient_vit.md §6).

NAS-Bench-201 variant. The search network is the run's mixed supernet (`engine.model`); the evaluation
network is the discrete network of the current genotype, held as a single-path NB201 supernet fixed to
that genotype (its forward is `extract(genotype)`'s; a fixed parameter set lets one SGD serve every
genotype and checkpoint as it is). The two share the stem; NB201 has no auxiliary heads, so each
network's ensemble output is its classifier's logits, and each keeps its own cells, reduction blocks,
final BN and classifier. The cycle, by epoch:

1. `pretrain_epochs`: the search network's weights on the training batch with CE (α stays);
2. derive the genotype and build the evaluation network from the search network's weights; for
   `warmup_epochs` it trains alone with CE on held-out batches;
3. then each step: the joint step on a held-out batch (`joint_loss`, both networks, neither side detached)
   moves the evaluation weights (with the shared stem) and α; the gradients it would give the search
   network's own weights are never formed; then the search network's weights step on the training batch
   with CE (the run's optimizer);
4. after every search epoch the evaluation network's op weights go back into the search network, the
   genotype is derived again and the evaluation network takes the new genotype's op weights from it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cream.errors import ConfigError
from cream.spaces.base import Arch, Space
from cream.spaces.nb201 import OPS
from cream.supernets.nb201 import NB201Supernet
from cream.train.darts import Darts
from cream.train.strategy import OwnedOptimizer, check_kwarg, is_int, is_number

DISTANCES = ("kl", "cosine", "mse", "smoothl1")
#: NB201's parameter-free ops whose α the regulariser penalises (the spec's pools and skip; `none` is not one)
PARAM_FREE = ("skip_connect", "avg_pool_3x3")


def distance(em_eval: torch.Tensor, em_search: torch.Tensor, temperature: float, kind: str) -> torch.Tensor:
    """How far the search network's softened output is from the evaluation network's. kl: the original's
    `nn.KLDivLoss()(log_softmax(em_S/T), softmax(em_E/T))` (mean over every element); the others compare
    the two softmax(em/T) vectors: 1 − mean cosine similarity, MSE, SmoothL1."""
    p_eval = (em_eval / temperature).softmax(-1)
    if kind == "kl":
        log_search = (em_search / temperature).log_softmax(-1)
        return (torch.special.xlogy(p_eval, p_eval) - p_eval * log_search).mean()
    p_search = (em_search / temperature).softmax(-1)
    if kind == "cosine":
        return 1 - nn.functional.cosine_similarity(p_search, p_eval, dim=-1).mean()
    if kind == "mse":
        return nn.functional.mse_loss(p_search, p_eval)
    return nn.functional.smooth_l1_loss(p_search, p_eval)


def joint_loss(logits_search: torch.Tensor, logits_eval: torch.Tensor, targets: torch.Tensor, lam: float,
               temperature: float, kind: str, regular: torch.Tensor | float = 0.0,
               em_search: torch.Tensor | None = None, em_eval: torch.Tensor | None = None) -> torch.Tensor:
    """L = [CE(p_S, y) + CE(p_E, y)] / λ + λ · T² · D(em_E, em_S) + R(α): CE on the classifiers' logits, the
    distance on the ensemble outputs em (the logits themselves where a network has no auxiliary heads)."""
    ce = nn.functional.cross_entropy(logits_search, targets) + nn.functional.cross_entropy(logits_eval, targets)
    em_search = logits_search if em_search is None else em_search
    em_eval = logits_eval if em_eval is None else em_eval
    return ce / lam + lam * temperature ** 2 * distance(em_eval, em_search, temperature, kind) + regular


class Cdarts(Darts):
    """CDARTS on the mixed NB201 supernet.

    Parameters (`strategy.kwargs`): pretrain_epochs (1) and warmup_epochs (0), the first two phases (the
    spec's runs used 5 each; a CPU budget cannot); loss_alpha λ (1), loss_T T (2), distance (kl | cosine
    | mse | smoothl1); regular (false), regular_coeff (5), regular_ratio (1): R(α) = coeff · max(0, 1 −
    progress / ratio) · Σ softmax(α) over the parameter-free ops, progress the fraction of the search
    epochs done; eval_lr (0.1), eval_momentum (0.9), eval_weight_decay (3e-4): the evaluation network's
    SGD (its lr follows the weights' schedule); grad_clip (5): the norm the joint step's evaluation
    gradients are clipped to; arch_lr (6e-4), arch_betas, arch_weight_decay (1e-3): α's Adam.
    """

    find_unused_parameters = True

    def __init__(self, space: Space, seed: int = 0, pretrain_epochs: int = 1, warmup_epochs: int = 0,
                 loss_alpha: float = 1.0, loss_T: float = 2.0, distance: str = "kl",  # noqa: N803 (the spec's name)
                 regular: bool = False, regular_coeff: float = 5.0, regular_ratio: float = 1.0,
                 eval_lr: float = 0.1, eval_momentum: float = 0.9, eval_weight_decay: float = 3e-4,
                 grad_clip: float = 5.0, arch_lr: float = 6e-4, **arch_kwargs: Any) -> None:
        for key, value in (("pretrain_epochs", pretrain_epochs), ("warmup_epochs", warmup_epochs)):
            check_kwarg(key, value, is_int(value) and value >= 0, "an integer >= 0")
        for key, value in (("loss_alpha", loss_alpha), ("loss_T", loss_T), ("eval_lr", eval_lr),
                           ("regular_ratio", regular_ratio)):
            check_kwarg(key, value, is_number(value) and value > 0, "a number > 0")
        for key, value in (("regular_coeff", regular_coeff), ("eval_weight_decay", eval_weight_decay),
                           ("grad_clip", grad_clip)):
            check_kwarg(key, value, is_number(value) and value >= 0, "a number >= 0")
        check_kwarg("eval_momentum", eval_momentum, is_number(eval_momentum) and 0 <= eval_momentum < 1,
                    "a number in [0, 1)")
        check_kwarg("distance", distance, distance in DISTANCES, f"one of {list(DISTANCES)}")
        check_kwarg("regular", regular, isinstance(regular, bool), "true or false")
        check_kwarg("second_order", arch_kwargs.get("second_order", False), not arch_kwargs.get("second_order"),
                    "false (CDARTS is first order)")
        super().__init__(space, seed, arch_lr=arch_lr, **arch_kwargs)
        self.pretrain_epochs, self.warmup_epochs = pretrain_epochs, warmup_epochs
        self.lam, self.temperature, self.distance = float(loss_alpha), float(loss_T), distance
        self.regular, self.regular_coeff, self.regular_ratio = regular, float(regular_coeff), float(regular_ratio)
        self.eval_lr, self.eval_momentum, self.eval_weight_decay = eval_lr, eval_momentum, eval_weight_decay
        self.grad_clip = float(grad_clip)
        #: the evaluation network's genotype (None until it is built, after pretraining)
        self.genotype: Arch | None = None

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        epochs = engine.cfg.train.epochs
        if self.pretrain_epochs + self.warmup_epochs >= epochs:
            raise ConfigError(f"config key 'strategy.kwargs' pretrain_epochs + warmup_epochs = "
                              f"{self.pretrain_epochs + self.warmup_epochs} leaves no search epoch of "
                              f"train.epochs = {epochs}; make them < {epochs}")
        if engine.scaler is not None:
            raise ConfigError("strategy 'cdarts' steps two optimizers on one loss; use train.amp=bf16 or none")
        search = engine.model
        with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: draw nothing from the run
            self.eval_net = NB201Supernet(search.space).to(engine.device)
        self.eval_net.stem = search.stem  # shared: one module, stepped by both optimizers
        self.eval_optimizer = torch.optim.SGD(self.eval_net.parameters(), lr=self.eval_lr,
                                              momentum=self.eval_momentum, weight_decay=self.eval_weight_decay)
        if self.pretrain_epochs == 0:
            self.build()

    def optimizers(self) -> dict[str, OwnedOptimizer]:
        return {**super().optimizers(), "eval": OwnedOptimizer(self.eval_optimizer, schedule="follow")}

    # --- the two networks ------------------------------------------------------------------------
    def build(self) -> None:
        """The evaluation network of the derived genotype, every weight taken from the search network."""
        self.genotype = self.engine.model.derive()
        self.eval_net.load_state_dict({k: v for k, v in self.engine.model.state_dict().items() if k != "alphas"})
        self.eval_net.set_arch(self.genotype)
        self.eval_optimizer.state.clear()

    def op_weights(self, net: nn.Module, arch: Arch) -> dict[str, torch.Tensor]:
        """The state entries of the ops `arch` chooses on every cell edge of `net`."""
        chosen = {f".edges.{e}.{op}." for e, op in enumerate(arch["ops"])}
        return {k: v for k, v in net.state_dict().items()
                if k.startswith("cells.") and any(c in k for c in chosen)}

    def copy_ops(self, source: nn.Module, target: nn.Module, arch: Arch) -> None:
        """Copy the op weights (and BN statistics) of `arch` from `source` into `target`."""
        with torch.no_grad():
            target_state = target.state_dict()
            for key, value in self.op_weights(source, arch).items():
                target_state[key].copy_(value)

    def rederive(self) -> None:
        """The end of a search epoch: the evaluation ops go back into the search network; the new genotype's
        ops come from it (the SGD state of ops leaving the genotype is dropped, as a rebuild would)."""
        search = self.engine.model
        self.copy_ops(self.eval_net, search, self.genotype)
        old, self.genotype = self.genotype, search.derive()
        if old != self.genotype:
            self.copy_ops(search, self.eval_net, self.genotype)
            self.eval_net.set_arch(self.genotype)
            kept = {id(p) for p in self.eval_net.path_parameters()}
            for p in self.eval_net.parameters():
                if id(p) not in kept:
                    self.eval_optimizer.state.pop(p, None)

    def regulariser(self) -> torch.Tensor | float:
        """R(α): the decaying L1 penalty on the parameter-free ops' softmax(α) (0 unless `regular`)."""
        if not self.regular:
            return 0.0
        coeff = self.regular_coeff * max(0.0, 1 - self.search_progress() / self.regular_ratio)
        return coeff * self.param_free_mass()

    def search_progress(self) -> float:
        """The fraction of the search epochs done."""
        search_epochs = self.engine.cfg.train.epochs - self.pretrain_epochs - self.warmup_epochs
        return (self.engine.epoch - self.pretrain_epochs - self.warmup_epochs) / search_epochs

    def param_free_mass(self) -> torch.Tensor:
        """Σ |softmax(α)| over the parameter-free ops of the searched α."""
        probs = self.engine.model.edge_weights()
        return probs[:, [OPS.index(op) for op in PARAM_FREE]].abs().sum()

    # --- the step (the hooks below are what a controller of two networks in one module overrides) -------
    def phase(self, epoch: int) -> str:
        """pretrain, warmup or search: what the steps of `epoch` do."""
        if epoch < self.pretrain_epochs:
            return "pretrain"
        return "warmup" if epoch < self.pretrain_epochs + self.warmup_epochs else "search"

    def search_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, ensemble output) of the search network."""
        out = self.engine.model(images)
        return out, out

    def eval_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, ensemble output) of the evaluation network, in training mode."""
        self.eval_net.train()
        out = self.eval_net(images)
        return out, out

    def searched_alphas(self) -> list[nn.Parameter]:
        """The architecture parameters the joint step moves."""
        return self.engine.model.arch_parameters()

    def arch_optimizer_name(self) -> str:
        return "arch"

    def joint_step(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        """The joint loss on a held-out batch moves the evaluation weights (clipped) and the searched α; the
        gradients it would give the search network's own weights are never formed (the shared weights are the
        evaluation optimizer's)."""
        e = self.engine
        with e.autocast():
            logits_search, em_search = self.search_outputs(images)
            logits_eval, em_eval = self.eval_outputs(images)
            loss = joint_loss(logits_search, logits_eval, targets, self.lam, self.temperature, self.distance,
                              self.regulariser(), em_search, em_eval)
        if not math.isfinite(float(loss.detach())):
            e.skipped_steps += 1
            return
        eval_params = [p for g in self.eval_optimizer.param_groups for p in g["params"]]
        alphas = self.searched_alphas()
        for p in [*eval_params, *alphas]:  # the shared weights hold the last weight step's
            p.grad = None
        loss.backward(inputs=eval_params + alphas)
        e.apply_gradients("eval", clip=self.grad_clip)
        e.apply_gradients(self.arch_optimizer_name())

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> float | None:
        e = self.engine
        e.model.set_arch(None)
        phase = self.phase(e.epoch)
        if phase != "pretrain":
            held_images, held_targets = e.next_batch("val")
            if phase == "warmup":  # the evaluation network alone
                with e.autocast():
                    logits = self.eval_outputs(held_images)[0]
                    return e.optimize(nn.functional.cross_entropy(logits, held_targets), "eval")
            self.joint_step(held_images, held_targets)
        with e.autocast():  # the search network's weights, CE on the training batch
            return e.optimize(e.criterion(e.forward_model(images), targets))

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Log the evaluation network's val top-1 (of the epoch's genotype, before it is derived again)."""
        e, record = self.engine, {}
        if self.genotype is not None and e.splits.val is not None \
                and (epoch + 1) % e.cfg.train.eval_every_epochs == 0:
            record["eval_net_top1"] = e.evaluate(e.splits.val, self.eval_net)["top1"]
        if epoch + 1 == self.pretrain_epochs:
            self.build()
        elif epoch >= self.pretrain_epochs + self.warmup_epochs:
            self.rederive()
        return {**super().end_epoch(epoch), **record, "genotype": self.genotype}

    def eval_archs(self) -> list[tuple[str, Any]]:
        return [("derived", self.engine.model.derive())]

    def state_dict(self) -> dict[str, Any]:
        return {"genotype": self.genotype, "eval_net": self.eval_net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.genotype = state["genotype"]
        self.eval_net.load_state_dict(state["eval_net"])
        if self.genotype is not None:
            self.eval_net.set_arch(self.genotype)

