"""Cream (NeurIPS 2020): distilling prioritized paths, as a supernet-training strategy.

Every step trains one path drawn with fixed op probabilities, as `Uniform` does. After a warm-up
of `meta_start_epoch` epochs, the paths that scored best on their own training batch are kept on a
prioritized board; a one-layer meta-matching network picks, for each sampled path, the board path
to distil from and the weight of that distillation term. The matching network is trained every
`update_every` steps by a one-step look-ahead: the hypergradient of a validation loss through a
virtual SGD step of the path's weights on the distillation loss.
Spec: shared/specs/cream.md §5; deviations from the original code (§8) are in docs/cream.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cream.cost.limits import millions_window
from cream.errors import ConfigError
from cream.nn.batchnorm import frozen_bn_stats
from cream.spaces.base import Arch, Space
from cream.teachers.losses import soft_cross_entropy
from cream.teachers.networks import SupernetPath
from cream.train.board import BoardEntry, MatchingNetwork, PathBoard
from cream.train.distributed import from_rank0, mean_over_ranks
from cream.train.hypergrad import lookahead, twice_differentiable
from cream.train.strategy import OwnedOptimizer, check_kwarg, is_int, is_number
from cream.train.uniform import Uniform

SCORES = ("top1", "neg_loss")
TIE_BREAKS = ("larger", "smaller")
PICKS = ("meta", "top1")
MACS_CONVENTION = "ptflops-search"  # the original's per-path estimator, where the space counts in it


class Cream(Uniform):
    """Cream's supernet training: prioritized paths, meta-matching, distillation (spec §5).

    Parameters (`strategy.kwargs`; defaults are the published recipe, spec §5.1):
    probs: op name -> sampling weight (`pre_prob`); None samples uniformly.
    board_size (10), board_images (4): board slots and images stored per path (SLICE).
    meta_start_epoch (20): board, distillation and meta updates start in the epoch after it.
    update_every (200): steps between meta updates.
    acc_gap (5.0), score ("top1" in %, or "neg_loss"), tie_break ("larger"), dedup (True): board rules.
    macs_min, macs_max (0 = no limit): admit only paths whose MACs (millions, ptflops-search) lie within.
    pick ("meta", or "top1": the board's best path with weight 0.5).
    meta_lr (1e-4, scaled by the student's schedule), meta_momentum (0.9): the matching network's SGD
      (owned through `optimizers`: the engine checkpoints it and sets its lr).
    legacy_weight: weight the distillation by the last board entry's score, not the teacher's (§8 #2).
    legacy_hypergrad: hypergradient through the stem conv only, virtual step at the meta lr (§8 #3).
    """

    def __init__(self, space: Space, seed: int = 0, probs: dict[str, float] | None = None, board_size: int = 10,
                 board_images: int = 4, meta_start_epoch: int = 20, update_every: int = 200, acc_gap: float = 5.0,
                 score: str = "top1", tie_break: str = "larger", dedup: bool = True, macs_min: float = 0.0,
                 macs_max: float = 0.0, pick: str = "meta", meta_lr: float = 1e-4, meta_momentum: float = 0.9,
                 legacy_weight: bool = False, legacy_hypergrad: bool = False) -> None:
        super().__init__(space, seed, **({} if probs is None else {"probs": probs}))
        check_kwarg("board_size", board_size, is_int(board_size) and board_size >= 1, "an integer >= 1")
        check_kwarg("board_images", board_images, is_int(board_images) and board_images >= 1, "an integer >= 1")
        check_kwarg("meta_start_epoch", meta_start_epoch, is_int(meta_start_epoch) and meta_start_epoch >= -1,
               "an integer >= -1 (-1: from the first epoch)")
        check_kwarg("update_every", update_every, is_int(update_every) and update_every >= 1, "an integer >= 1")
        check_kwarg("score", score, score in SCORES, f"one of {list(SCORES)}")
        check_kwarg("tie_break", tie_break, tie_break in TIE_BREAKS, f"one of {list(TIE_BREAKS)}")
        check_kwarg("pick", pick, pick in PICKS, f"one of {list(PICKS)}")
        for key, value in (("acc_gap", acc_gap), ("macs_min", macs_min), ("macs_max", macs_max),
                           ("meta_lr", meta_lr), ("meta_momentum", meta_momentum)):
            check_kwarg(key, value, is_number(value) and value >= 0, "a number >= 0")
        self.board = PathBoard(board_size, float(acc_gap), tie_break, bool(dedup))
        self.board_images, self.meta_start_epoch, self.update_every = board_images, meta_start_epoch, update_every
        self.score, self.pick, self.meta_lr, self.meta_momentum = score, pick, float(meta_lr), float(meta_momentum)
        self.macs_window = millions_window(macs_min, macs_max) or (0.0, math.inf)
        self.legacy_weight, self.legacy_hypergrad = bool(legacy_weight), bool(legacy_hypergrad)
        self.meta_updates = 0
        self.macs_convention = MACS_CONVENTION if MACS_CONVENTION in getattr(space, "conventions", ()) else None

    def path_macs(self, arch: Arch) -> int:
        """MACs of a path for the board's window and tie-breaks (Cream's own convention where the space has it)."""
        if self.macs_convention is None:
            return self.space.cost(arch)["macs"]
        return self.space.cost(arch, convention=self.macs_convention)["macs"]

    def setup(self, engine: Any) -> None:
        super().setup(engine)
        if engine.cfg.data.batch_size < 2 * self.board_images:
            raise ConfigError(f"config key 'data.batch_size' = {engine.cfg.data.batch_size} is too small for "
                              f"strategy 'cream': the meta update needs 2 x board_images = {2 * self.board_images}")
        generator = torch.Generator().manual_seed(self.seed)
        self.meta = MatchingNetwork(engine.model.num_classes, self.board_images, generator).to(engine.device)
        self.meta_optimizer = torch.optim.SGD(self.meta.parameters(), lr=self.meta_lr, momentum=self.meta_momentum,
                                              nesterov=self.meta_momentum > 0)

    def optimizers(self) -> dict[str, OwnedOptimizer]:
        """The matching network's SGD; its lr follows the student's schedule, as it did as a group of the
        original's optimizer."""
        return {"meta": OwnedOptimizer(self.meta_optimizer, schedule="follow")}

    # --- one step ----------------------------------------------------------------------------
    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        e = self.engine
        arch = self.step_arch = self.arch_for_step(step)
        active = e.epoch > self.meta_start_epoch
        teacher, weight = None, 0.0
        if active and len(self.board):
            if self.pick == "meta" and step % self.update_every == 0:
                self.meta_update(images, targets, arch)
            teacher, weight = self.select_teacher(arch)
        e.model.set_arch(arch)
        out = model(images)
        ce = e.criterion(out, targets)
        loss = ce
        if teacher is not None:
            teacher_probs = SupernetPath(e.model, teacher.arch)(images).float().softmax(-1)
            loss = (weight * soft_cross_entropy(out, teacher_probs) + (2 - weight) * ce) / 2
        if active:
            self.offer(arch, images, targets, out, ce)
        return loss

    def offer(self, arch: Arch, images: torch.Tensor, targets: torch.Tensor, out: torch.Tensor,
              ce: torch.Tensor) -> bool:
        """Put the step's path on the board if it qualifies; the score is averaged over ranks, and the
        stored images and softmax come from rank 0, so every rank holds the same board."""
        macs = self.path_macs(arch)
        if not self.macs_window[0] <= macs <= self.macs_window[1]:
            return False
        with torch.no_grad():
            if self.score == "top1":
                hard = targets.argmax(-1) if targets.ndim > 1 else targets
                value = (out.argmax(-1) == hard).float().mean() * 100
            else:
                value = -ce.detach().float()
            score = float(mean_over_ranks(value, self.engine.dist))
            if not self.board.accepts(arch, score, macs):
                return False
            n = self.board_images
            stored = from_rank0(images[:n].detach().float().contiguous().clone(), self.engine.dist)
            probs = from_rank0(out[:n].detach().float().softmax(-1), self.engine.dist)
        self.board.add(BoardEntry(arch, score, macs, stored, probs))
        return True

    def match_scores(self, arch: Arch) -> torch.Tensor:
        """The matching network's score of every board entry for the student `arch` (one batched forward
        over all stored images; BN running statistics untouched)."""
        entries = self.board.entries
        stored = torch.stack([en.probs for en in entries])
        with frozen_bn_stats(self.engine.model):
            out = self.engine.model(torch.cat([en.images for en in entries]), arch=arch)
        return self.meta(out.float().softmax(-1).view_as(stored) - stored)

    def _teacher_of(self, scores: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The best-scoring entry (first on ties; rank 0 decides) and the score that sets the weight."""
        index = int(from_rank0(torch.argmax(scores.detach()).reshape(1), self.engine.dist)[0])
        return index, scores[-1] if self.legacy_weight else scores[index]

    def select_teacher(self, arch: Arch) -> tuple[BoardEntry, float]:
        """The board path to distil from and the weight of the distillation term (detached, spec §8 #5)."""
        if self.pick == "top1":
            return self.board.entries[0], 0.5
        with torch.no_grad():
            index, s = self._teacher_of(self.match_scores(arch))
            weight = from_rank0(torch.sigmoid(-s).reshape(1).double(), self.engine.dist)
        return self.board.entries[index], float(weight[0])

    # --- meta update -------------------------------------------------------------------------
    def meta_update(self, images: torch.Tensor, targets: torch.Tensor, arch: Arch) -> None:
        """One step of the matching network (spec §5.5, intended form): weighted distillation loss on
        the first `board_images` images, a virtual SGD step of the path's weights at the student lr,
        cross-entropy of the stepped path on the next `board_images` images, and its gradient with
        respect to the matching network through every path tensor. The student is not stepped here."""
        e, net, n = self.engine, self.engine.model, self.board_images
        path_ids = {id(p) for p in net.path_parameters(arch)}
        theta = {name: p for name, p in net.named_parameters() if id(p) in path_ids}
        meta_params = list(self.meta.parameters())
        with torch.autocast(e.device.type, enabled=False), frozen_bn_stats(net), twice_differentiable(net):
            index, s = self._teacher_of(self.match_scores(arch))
            weight = torch.sigmoid(-s)
            teacher_probs = SupernetPath(net, self.board.entries[index].arch)(images[:n].float()).softmax(-1)
            kd = weight * soft_cross_entropy(net(images[:n].float(), arch=arch), teacher_probs)
            optimizer = self.meta_optimizer if self.legacy_hypergrad else e.optimizer
            lr = optimizer.param_groups[0]["lr"]

            def val_loss(stepped: dict[str, torch.Tensor]) -> torch.Tensor:
                out = torch.func.functional_call(net, stepped, (images[n:2 * n].float(),), {"arch": arch})
                return e.criterion(out, targets[n:2 * n])

            hyper = lookahead(kd, theta, lr, val_loss, meta_params, first_only=self.legacy_hypergrad)
        for p, h in zip(meta_params, hyper, strict=True):
            p.grad = torch.zeros_like(p) if h is None else h.detach()
        e.apply_gradients("meta", clip=1.0)
        self.meta_updates += 1

    # --- reporting and state -----------------------------------------------------------------
    def end_epoch(self, epoch: int) -> dict[str, Any]:
        best = {"board_best_score": self.board.entries[0].score} if len(self.board) else {}
        return {"board_size": len(self.board), **best, "meta_updates": self.meta_updates}

    def eval_archs(self) -> list[tuple[str, Any]]:
        best = [("board_best", self.board.entries[0].arch)] if len(self.board) else []
        return super().eval_archs() + best

    def artifacts(self) -> dict[str, Any]:
        return {"board.json": [
            {"arch": en.arch, "score": en.score, "macs": en.macs, "params": self.space.cost(en.arch)["params"]}
            for en in self.board.entries]}

    def state_dict(self) -> dict[str, Any]:
        return {
            "board": [{"arch": en.arch, "score": en.score, "macs": en.macs, "images": en.images, "probs": en.probs}
                      for en in self.board.entries],
            "meta": self.meta.state_dict(),
            "meta_updates": self.meta_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.engine.device
        self.board.entries = [BoardEntry(d["arch"], d["score"], d["macs"], d["images"].to(device),
                                         d["probs"].to(device)) for d in state["board"]]
        self.meta.load_state_dict(state["meta"])
        self.meta_updates = state["meta_updates"]
