"""CDARTS on the staged DARTS space: progressive per-stage search with the two-network controller
(`cream.supernets.cdarts_darts`; spec §6.1).

`train.epochs` is split evenly over the stages. Stage s runs the cycle of `Cdarts` (the NB201 variant,
whose loss and joint step this reuses) on its share of epochs:

1. `pretrain_epochs`: the search network (evaluation cells for the stages before s, mixed cells from s
   on) trains on the training batch with CE; α stays;
2. the genotype of every stage from s on is derived from its own α and the evaluation cells take those
   ops' weights from the search cells; for `warmup_epochs` the evaluation network trains alone with CE
   on held-out batches;
3. each step: the joint step on a held-out batch (both networks' CE on their classifiers, the distance
   between their ensemble outputs, R(α); neither side detached) moves the evaluation optimizer's weights
   (stem, evaluation cells, auxiliary heads, π, evaluation classifier) and α of stages s… with stage s's
   Adam; the search cells get no gradient from it; then the search network's weights step with CE on the
   training batch (the run's optimizer: stem, search cells, earlier evaluation cells, search classifier);
4. after every search epoch the evaluation ops go back into the search cells, the genotypes of stages s…
   are derived again and the evaluation cells take the new ops.

At the end of its share stage s is frozen: its genotype stays, its evaluation cells run in the search
network from then on, its α leaves the searched set. The final staged arch is written as arch.json.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cream.config import with_space_classes
from cream.errors import ConfigError
from cream.spaces.darts import OPS
from cream.supernets.cdarts_darts import CdartsDartsNet
from cream.train.cdarts import Cdarts
from cream.train.strategy import OwnedOptimizer, Strategy

#: the DARTS ops whose α the regulariser penalises (the spec's pools and skip)
PARAM_FREE = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")


class EvalView(nn.Module):
    """The controller's evaluation network as a plain classifier (for `engine.evaluate`)."""

    def __init__(self, controller: CdartsDartsNet) -> None:
        super().__init__()
        self.controller = controller

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.controller.forward_eval(x)[0]


class CdartsStages(Cdarts):
    """CDARTS, progressive by stage, on the staged DARTS space (strategy `cdarts` there).

    Parameters as `Cdarts`'s, per stage: pretrain_epochs and warmup_epochs count epochs of each stage's
    share of `train.epochs` (which must split evenly over the stages), R(α)'s progress runs over a stage's
    search epochs. α of each stage has its own Adam (arch0, arch1, …), created with the others and first
    stepped when its stage's search begins.
    """

    def setup(self, engine: Any) -> None:
        Strategy.setup(self, engine)
        net = engine.model
        if not isinstance(net, CdartsDartsNet):
            raise ConfigError(f"strategy 'cdarts' on space family 'darts_stages' needs its controller, got "
                              f"{type(net).__name__}")
        stages, epochs = net.space.stages, engine.cfg.train.epochs
        if epochs % stages or self.pretrain_epochs + self.warmup_epochs >= epochs // stages:
            raise ConfigError(f"config key 'train.epochs' = {epochs} must split evenly over the {stages} stages, "
                              f"each share longer than pretrain_epochs + warmup_epochs = "
                              f"{self.pretrain_epochs + self.warmup_epochs}")
        if engine.scaler is not None:
            raise ConfigError("strategy 'cdarts' steps two optimizers on one loss; use train.amp=bf16 or none")
        self.stage_epochs = epochs // stages
        self.arch_optimizers = [torch.optim.Adam(list(net.alphas)[s:], lr=self.arch_lr, betas=self.arch_betas,
                                                 weight_decay=self.arch_weight_decay) for s in range(stages)]
        self.eval_optimizer = torch.optim.SGD(net.eval_parameters(), lr=self.eval_lr, momentum=self.eval_momentum,
                                              weight_decay=self.eval_weight_decay)
        self.eval_net = EvalView(net)
        #: the evaluation network's latest val top-1 (arch.json's score)
        self.last_eval_top1: float | None = None
        if self.pretrain_epochs == 0:
            self.build()

    def optimizers(self) -> dict[str, OwnedOptimizer]:
        return {**{f"arch{s}": OwnedOptimizer(opt) for s, opt in enumerate(self.arch_optimizers)},
                "eval": OwnedOptimizer(self.eval_optimizer, schedule="follow")}

    # --- stages and phases ------------------------------------------------------------------------
    def phase(self, epoch: int) -> str:
        return super().phase(epoch % self.stage_epochs)

    def search_progress(self) -> float:
        local = self.engine.epoch % self.stage_epochs - self.pretrain_epochs - self.warmup_epochs
        return local / (self.stage_epochs - self.pretrain_epochs - self.warmup_epochs)

    def param_free_mass(self) -> torch.Tensor:
        net = self.engine.model
        cols = [OPS.index(op) for op in PARAM_FREE]
        return sum(net.edge_weights(s)[..., cols].abs().sum() for s in range(net.stage, net.space.stages))

    # --- the two networks -------------------------------------------------------------------------
    def search_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.engine.model.forward_search(images)

    def eval_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.engine.model.forward_eval(images)

    def searched_alphas(self) -> list[nn.Parameter]:
        return self.engine.model.searched_alphas()

    def arch_optimizer_name(self) -> str:
        return f"arch{self.engine.model.stage}"

    def build(self) -> None:
        """Derive the genotypes of the stages being searched and copy their ops into the evaluation cells."""
        net = self.engine.model
        for s in range(net.stage, net.space.stages):
            net.genotypes[s] = net.derive(s)
            net.copy_to_eval(s)
        self.eval_optimizer.state.clear()

    def rederive(self) -> None:
        """The end of a search epoch: evaluation ops back into the search cells, genotypes derived again, the
        new ops into the evaluation cells (the SGD state of ops leaving a genotype is dropped)."""
        net = self.engine.model
        for s in range(net.stage, net.space.stages):
            net.copy_to_search(s)
            new = net.derive(s)
            if new != net.genotypes[s]:
                net.genotypes[s] = new
                net.copy_to_eval(s)
        used = {id(p) for p in net.eval_path_parameters()}
        for p in list(self.eval_optimizer.state):
            if id(p) not in used:
                del self.eval_optimizer.state[p]

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        e, net, record = self.engine, self.engine.model, {"stage": self.engine.model.stage}
        local = epoch % self.stage_epochs
        if self.phase(epoch) != "pretrain" and e.splits.val is not None \
                and (epoch + 1) % e.cfg.train.eval_every_epochs == 0:
            record["eval_net_top1"] = self.last_eval_top1 = e.evaluate(e.splits.val, self.eval_net)["top1"]
        if local + 1 == self.pretrain_epochs:
            self.build()
        elif self.phase(epoch) == "search":
            self.rederive()
        if local + 1 == self.stage_epochs and net.stage + 1 < net.space.stages:  # stage done: frozen
            net.stage += 1
            if self.pretrain_epochs == 0:
                self.build()
        return {**record, "alpha_entropy": self.alpha_entropy(), "genotypes": list(net.genotypes)}

    def eval_archs(self) -> list[tuple[str, Any]]:
        return [("model", None)]

    def artifacts(self) -> dict[str, Any]:
        """arch.json: the staged arch (every stage's final genotype), in `cream search`'s format."""
        e = self.engine
        arch = e.model.arch()
        space = with_space_classes(e.cfg, e.splits.num_classes).space  # as config.yaml has it
        return {"arch.json": {"arch": arch, "space": space, "score": self.last_eval_top1,
                              "cost": e.model.space.cost(arch), "test_top1": None}}

    def state_dict(self) -> dict[str, Any]:
        net = self.engine.model
        return {"stage": net.stage, "genotypes": list(net.genotypes), "last_eval_top1": self.last_eval_top1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        net = self.engine.model
        net.stage, net.genotypes = state["stage"], list(state["genotypes"])
        self.last_eval_top1 = state["last_eval_top1"]
