"""SETN (Dong & Yang, ICCV 2019): a template network trained by uniform sampling, an evaluator α that
learns which archs do well, and a final pick among the evaluator's most probable archs.

Each step moves the weights on one uniformly sampled path (SPOS's step) on the training batch, then
α on a held-out batch through the relaxed (softmax(α)-weighted) forward, with α's own Adam; the
weights' gradients from that step are discarded. After every epoch the `candidates` archs of largest
log p(a) = Σ_e log softmax(α_e)[a_e] are scored with the shared weights and the best is kept
(shared/specs/shrinking_ensembles.md §3). Every candidate is scored on one fixed held-out subset (the
first `eval_images` of the val split), so their scores are comparable; `legacy_single_batch: true`
scores each on its own batch, as the original does. Scoring normalises BN with each batch's
statistics (the original's `track_running_stats=0`; the running ones mix every path) and leaves
the running statistics alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cream.nn.batchnorm import frozen_bn_stats
from cream.spaces.base import Arch, Space
from cream.train.darts import Darts
from cream.train.strategy import check_kwarg, is_int
from cream.train.uniform import step_rng


class Setn(Darts):
    """SETN on a mixed supernet.

    Parameters (`strategy.kwargs`): candidates (100), eval_images (512), legacy_single_batch (false);
    arch_lr, arch_betas, arch_weight_decay as DARTS's (SETN's defaults are the same).
    """

    find_unused_parameters = True

    def __init__(self, space: Space, seed: int = 0, candidates: int = 100, eval_images: int = 512,
                 legacy_single_batch: bool = False, **arch_kwargs: Any) -> None:
        check_kwarg("candidates", candidates, is_int(candidates) and candidates >= 1, "an integer >= 1")
        check_kwarg("eval_images", eval_images, is_int(eval_images) and eval_images >= 1, "an integer >= 1")
        check_kwarg("legacy_single_batch", legacy_single_batch, isinstance(legacy_single_batch, bool),
                    "true or false")
        check_kwarg("second_order", arch_kwargs.get("second_order", False), not arch_kwargs.get("second_order"),
                    "false (SETN is first order)")
        super().__init__(space, seed, **arch_kwargs)
        self.seed, self.candidates, self.eval_images = seed, candidates, eval_images
        self.legacy_single_batch = legacy_single_batch
        #: the latest selection: {"step", "arch", "score"} (checkpointed: a run resumed at an epoch end needs it)
        self.selection: dict[str, Any] | None = None

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> float | None:
        e, net = self.engine, self.engine.model
        net.set_arch(self.space.sample(step_rng(self.seed, step)))
        with e.autocast():
            loss = e.criterion(e.forward_model(images), targets)
        value = e.optimize(loss)
        net.set_arch(None)
        held_images, held_targets = e.next_batch("val")
        with e.autocast():
            arch_loss = nn.functional.cross_entropy(net(held_images), held_targets)
        e.optimize(arch_loss, "arch")  # backpropagates into α only: the weights' gradients are never formed
        return value

    # --- selection ---------------------------------------------------------------------------
    def score_batches(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The held-out batch each of `count` candidates is scored on: the same fixed subset for all, or
        (legacy) consecutive slices of a shuffle of the val split seeded by (seed, step)."""
        val = self.engine.splits.val
        n = min(self.eval_images, len(val))

        def batch(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            items = [val[i] for i in idx]
            return self.engine.to_device(torch.stack([im for im, _ in items]), torch.tensor([int(t) for _, t in items]))

        if not self.legacy_single_batch:
            return [batch(list(range(n)))] * count  # loaded once, shared by every candidate
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.engine.step)
        perm = torch.randperm(len(val), generator=g).tolist()
        starts = [i * n % len(val) for i in range(count)]  # a slice is fixed by its start: load each once
        loaded = {s: batch([perm[(s + j) % len(val)] for j in range(n)]) for s in set(starts)}
        return [loaded[s] for s in starts]

    @torch.no_grad()
    def select(self) -> dict[str, Any]:
        """Score the `candidates` most probable archs on their held-out batches; the best (top-1; ties: the
        more probable) is the selection."""
        e, net = self.engine, self.engine.model
        candidates = net.top_archs(self.candidates)
        modes = {m: m.training for m in net.modules()}
        net.train()
        try:
            with frozen_bn_stats(net), e.autocast():
                scores = [float((net(x, arch=arch).argmax(-1) == y).float().mean())
                          for (arch, _), (x, y) in zip(candidates, self.score_batches(len(candidates)), strict=True)]
        finally:
            for m, mode in modes.items():
                m.training = mode
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        arch, logp = candidates[best]
        return {"step": e.step, "arch": arch, "score": scores[best], "log_prob": logp}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        self.selection = self.select()
        return {**super().end_epoch(epoch), "selected_arch": self.selection["arch"],
                "selected_score": self.selection["score"]}

    def eval_archs(self) -> list[tuple[str, Any]]:
        derived = [("derived", self.engine.model.derive())]
        return derived + ([("selected", self.selection["arch"])] if self.selection else [])

    def proposal(self) -> tuple[Arch, float | None]:
        """The selected arch and its score on the held-out subset (selected again if training ended mid-epoch)."""
        if self.selection is None or self.selection["step"] != self.engine.step:
            self.selection = self.select()
        return self.selection["arch"], self.selection["score"]

    def state_dict(self) -> dict[str, Any]:
        return {"selection": self.selection}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.selection = state.get("selection")
