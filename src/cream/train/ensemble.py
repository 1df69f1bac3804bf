"""Training ensembles (NEAS, spec §2): the per-member loss, K-path supernet training, diversity-guided shrinking.

* `MemberLoss`: the retrain strategy of a standalone `EnsembleNet`: the loss is the sum of one loss per
  member (not the loss of the mean logits); the trunk's gradient is divided by K inside the model.
* `EnsembleUniform`: K-path supernet training: a uniform ensemble arch of the (possibly narrowed)
  space every step (split, trunk ops, K independent member op lists), the same loss.
* `DiversityShrink`: `EnsembleUniform` whose space narrows every `every` epochs after `warmup_epochs`
  by the score of each (layer, op): the mean over `samples` sampled ensembles in which a member uses
  that op of `ensemble accuracy + lam * pairwise disagreement` with inherited weights on `val_batches`
  held-out batches (the same batches for every candidate). The search code of NEAS was never
  released: the formula, λ (default 0), the sampling and the drop rules are a reconstruction
  (spec §2.3), every choice a parameter. The drop rules are ABS's: "global" walks up from the worst
  score dropping up to `drops` ops (never a layer's last), "per_layer" drops each layer's worst.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from cream.data import eval_loader
from cream.errors import ConfigError
from cream.models.ensemble import member_loss
from cream.spaces import get_space
from cream.spaces.base import Arch, Space
from cream.spaces.ensemble import EnsembleSpace
from cream.train.distributed import Dist, all_sum
from cream.train.strategy import Strategy, check_kwarg, is_int, is_number
from cream.train.uniform import Uniform, step_rng

DROP_RULES = ("global", "per_layer")


def ensemble_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """Of member logits `[K, batch, classes]`: each member's accuracy, the mean-logit prediction and its
    accuracy, and the disagreement (fraction of samples whose argmaxes differ, averaged over member pairs)."""
    pred = logits.argmax(-1)
    ensemble = logits.mean(0).argmax(-1)
    pairs = list(itertools.combinations(range(len(logits)), 2))
    disagreement = sum(float((pred[i] != pred[j]).float().mean()) for i, j in pairs) / max(len(pairs), 1)
    return {"member_top1": [float((p == targets).float().mean()) for p in pred], "prediction": ensemble.tolist(),
            "top1": float((ensemble == targets).float().mean()), "disagreement": disagreement}


@torch.no_grad()
def evaluate_members(model: nn.Module, data: Dataset, *, batch_size: int = 256, device: torch.device | None = None,
                     dist: Dist | None = None, workers: int = 0) -> dict[str, Any]:
    """Of an ensemble (`model(x, members=True)`) on `data`: each member's top-1, the mean-logit top-1 and the
    disagreement of `ensemble_metrics`, over the whole dataset (summed over ranks)."""
    dist = dist or Dist()
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: list[float] = []
    for images, targets in eval_loader(data, batch_size, rank=dist.rank, world=dist.world, workers=workers):
        m = ensemble_metrics(model(images.to(device), members=True).float(), targets.to(device))
        row = [x * len(targets) for x in (*m["member_top1"], m["top1"], m["disagreement"])] + [float(len(targets))]
        sums = row if not sums else [a + b for a, b in zip(sums, row, strict=True)]
    model.train(was_training)
    *tops, top1, disagreement, n = all_sum(sums, device, dist)
    return {"member_top1": [t / n for t in tops], "top1": top1 / n, "disagreement": disagreement / n}


class MemberLoss(Strategy):
    """A standalone ensemble's step: the sum over members of the run's criterion (spec §2.2)."""

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        return member_loss(self.engine.criterion, model(images, members=True), targets)


class EnsembleUniform(Uniform):
    """K-path one-shot training of an ensemble supernet: a uniform ensemble arch per step, per-member loss."""

    def __init__(self, space: Space, seed: int = 0) -> None:
        if not isinstance(space, EnsembleSpace):
            raise ConfigError(f"strategy 'ensemble' trains ensemble spaces (space.family: ensemble); "
                              f"space '{space.name}' is family {space.family}")
        super().__init__(space, seed)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        self.use_step_arch(step)
        return member_loss(self.engine.criterion, model(images, members=True), targets)


def drop_lowest(scores: dict[tuple[str, Any], float], choices: dict[str, tuple[Any, ...]], rule: str,
                drops: int) -> dict[str, list[Any]]:
    """ABS's drop step on `scores[(decision, value)]`: the values each touched decision keeps.

    "global": walk the scores upwards from the lowest, dropping a value only while its decision keeps
    another still-scored value, until `drops` values are gone; "per_layer": each decision's lowest."""
    order = sorted(scores, key=lambda dv: scores[dv])
    keep = {d: list(choices[d]) for d, _ in scores}
    if rule == "per_layer":
        for d in keep:
            worst = min((dv for dv in order if dv[0] == d), key=lambda dv: scores[dv])
            keep[d].remove(worst[1])
        return keep
    dropped = 0
    for i, (d, v) in enumerate(order):
        if dropped == drops:
            break
        if any(d2 == d for d2, _ in order[i + 1:]):
            keep[d].remove(v)
            dropped += 1
    return keep


class DiversityShrink(EnsembleUniform):
    """K-path training whose space narrows by ensemble accuracy + λ·disagreement (module docstring)."""

    def __init__(self, space: Space, seed: int = 0, warmup_epochs: int = 1, every: int = 1, samples: int = 4,
                 lam: float = 0.0, drop_rule: str = "global", drops: int = 1, stop_size: int = 1,
                 val_batches: int = 2) -> None:
        for key, value, lo in (("warmup_epochs", warmup_epochs, 0), ("every", every, 1), ("samples", samples, 1),
                               ("drops", drops, 1), ("stop_size", stop_size, 1), ("val_batches", val_batches, 1)):
            check_kwarg(key, value, is_int(value) and value >= lo, f"an integer >= {lo}")
        check_kwarg("lam", lam, is_number(lam), "a number")
        check_kwarg("drop_rule", drop_rule, drop_rule in DROP_RULES, f"one of {list(DROP_RULES)}")
        super().__init__(space, seed)
        self.warmup_epochs, self.every, self.samples, self.lam = warmup_epochs, every, samples, float(lam)
        self.drop_rule, self.drops, self.stop_size, self.val_batches = drop_rule, drops, stop_size, val_batches
        self.dropped: list[dict[str, Any]] = []

    def forced(self, decision: str, op: str, rng: random.Random) -> Arch:
        """A uniform ensemble arch in which a random member uses `op` at layer `decision` (the trunk, if shared)."""
        space: EnsembleSpace = self.space  # type: ignore[assignment]
        arch = space.sample(rng)
        g = next(i for i, geo in enumerate(space.geometry) if f"ops[{geo.stage}][{geo.index}]" == decision)
        split = len(arch["shared"])
        if g < split:
            arch["shared"][g] = op
        else:
            arch["members"][rng.randrange(space.members)][g - split] = op
        return arch

    @torch.no_grad()
    def scores(self, epoch: int) -> dict[tuple[str, Any], float]:
        """Mean (ensemble accuracy + λ disagreement) of each (layer, op) that still has a rival."""
        e, net = self.engine, self.engine.model
        batches = [e.next_batch("val") for _ in range(self.val_batches)]
        rng = step_rng(self.seed, -1 - epoch)
        cands = [(d, v) for d, vs in self.space.choices().items() if d.startswith("ops[") and len(vs) > 1 for v in vs]
        previous, was_training = net.arch, net.training
        net.eval()
        sums = []
        for d, v in cands:
            acc = dis = 0.0
            for _ in range(self.samples):
                arch = self.forced(d, v, rng)
                for images, targets in batches:
                    with e.autocast():
                        m = ensemble_metrics(net(images, arch=arch, members=True).float(), targets)
                    acc, dis = acc + m["top1"], dis + m["disagreement"]
            sums += [acc, dis]
        net.train(was_training)
        net.set_arch(previous)
        totals = all_sum(sums, e.device, e.dist) if sums else []
        n = self.samples * self.val_batches * e.dist.world
        return {dv: (totals[2 * i] + self.lam * totals[2 * i + 1]) / n for i, dv in enumerate(cands)}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        due = epoch >= self.warmup_epochs and (epoch - self.warmup_epochs) % self.every == 0
        if not due or self.space.num_archs() <= self.stop_size:
            return {"space_archs": self.space.num_archs()}
        scores = self.scores(epoch)
        if not scores:
            return {"space_archs": self.space.num_archs()}
        keep = drop_lowest(scores, self.space.choices(), self.drop_rule, self.drops)
        before = self.space.choices()
        self.space = self.space.restrict(keep)
        for d, values in keep.items():
            for v in before[d]:
                if v not in values:
                    self.dropped.append({"epoch": epoch, "decision": d, "value": v, "score": scores[(d, v)]})
        return {"shrink_dropped": sum(len(before[d]) - len(v) for d, v in keep.items()),
                "space_archs": self.space.num_archs()}

    def artifacts(self) -> dict[str, Any]:
        return {"shrink.json": {"dropped": self.dropped, "space": self.space.to_config()}}

    def state_dict(self) -> dict[str, Any]:
        return {"space": self.space.to_config(), "dropped": self.dropped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.space, self.dropped = get_space(state["space"]), state["dropped"]
