"""The one training loop, for standalone models and supernets alike.

Generic machinery lives here: device and precision, DDP, timm's optimizer, scheduler, mixup,
losses and EMA, checkpoints and resume, logging and progress. What differs between methods
(which path a supernet takes, which loss) is a `Strategy`.

A step is made of reusable pieces, so that a strategy taking a whole step of its own (several
updates, several optimizers) gets the same precision, loss scaling, clipping, non-finite policy
and EMA as the default step: `optimize(loss, name)` backpropagates a loss into one optimizer's
parameters and steps it; `apply_gradients(name)` steps an optimizer on gradients already in place;
`next_batch(split)` draws from a second, resumable data stream (held-out batches).
"""

from __future__ import annotations

import math
import sys
import time
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cream.config import RunConfig
from cream.data import Splits, train_loader, with_keys
from cream.errors import CheckpointError, ConfigError, TrainingError
from cream.run_dir import RunDir
from cream.train import checkpoint as ckpt
from cream.train.distributed import Dist, any_rank, gather_objects, init_distributed, mean_over_ranks
from cream.train.evaluate import amp_autocast, evaluate
from cream.train.strategy import OwnedOptimizer, Strategy


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = False, threads: int = 0) -> None:
    """Seed every generator; call before building the model so that its init is reproducible."""
    import random

    import numpy as np

    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class Engine:
    """Trains `model` on `splits` as `cfg` says; writes into `run` (main process only)."""

    def __init__(self, cfg: RunConfig, model: nn.Module, splits: Splits, run: RunDir | None,
                 strategy: Strategy | None = None) -> None:
        from timm.data import Mixup
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
        from timm.optim import create_optimizer_v2
        from timm.utils import ModelEmaV3

        self.cfg, self.splits, self.strategy = cfg, splits, strategy or Strategy()
        t, d = cfg.train, cfg.data
        self.device = pick_device(t.device)
        self.dist: Dist = init_distributed(self.device.type)
        self.run = run

        if cfg.model.drop_path_schedule != "constant" and not hasattr(model, "set_drop_path"):
            raise ConfigError(f"config key 'model.drop_path_schedule' = {cfg.model.drop_path_schedule!r} needs a model "
                              f"with `set_drop_path` (e.g. darts_cifar); {type(model).__name__} has none: use constant")
        self.model = model.to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model: nn.Module = self.model
        if self.dist.enabled:
            self.forward_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=self.strategy.find_unused_parameters)
            # weights are rank 0's now (DDP broadcast them); dropout, drop-path and mixup draw per-rank streams
            seed_everything(t.seed + self.dist.rank)
        if t.compile:
            self.forward_model = torch.compile(self.forward_model)

        o = cfg.optim
        arch_ids = {id(p) for p in getattr(self.model, "arch_parameters", list)()}
        groups = {"param_group_fn": partial(_weight_groups, weight_decay=o.weight_decay, skip=arch_ids)} \
            if arch_ids else {}  # architecture parameters are a strategy's to step, never the weights' optimizer's
        self.optimizer = create_optimizer_v2(self.model, opt=o.opt, lr=o.lr, weight_decay=o.weight_decay,
                                             momentum=o.momentum, **({"eps": o.eps} if o.eps else {}), **groups)
        pin = self.device.type == "cuda"
        self.train_loader = train_loader(splits.train, d.batch_size, seed=t.seed, rank=self.dist.rank,
                                         world=self.dist.world, workers=d.workers, pin_memory=pin)
        self.steps_per_epoch = len(self.train_loader.batch_sampler)
        self.scheduler = self._scheduler()
        self.mixup = None
        if (d.mixup > 0 or d.cutmix > 0) and not getattr(splits.train, "mixes_pairs", False):
            self.mixup = Mixup(mixup_alpha=d.mixup, cutmix_alpha=d.cutmix, prob=d.mixup_prob,
                               switch_prob=d.mixup_switch_prob, label_smoothing=o.smoothing,
                               num_classes=splits.num_classes)
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif o.smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(o.smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()
        self.ema = ModelEmaV3(self.model, decay=t.ema_decay) if t.ema_decay > 0 else None
        self.autocast = amp_autocast(self.device, t.amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.amp == "fp16" and self.device.type == "cuda" \
            else None
        self.tb = None
        if t.tensorboard and self.run is not None and self.run.write:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run.path / "tensorboard"))
        self.step = self.epoch = self.batch_in_epoch = 0
        self.skipped_steps = 0
        #: the sample keys (index, sample_seed) of the batch being trained on, for teachers that look them up.
        self.batch_keys: list[tuple[int, int]] | None = None
        #: (step, results) of the latest `evaluate_archs` on splits.val, for callers that want it again.
        self.last_eval: tuple[int, dict[str, dict[str, float]]] | None = None
        #: batches drawn so far from each second stream (`next_batch`), and their loaders and iterators.
        self.stream_batches: dict[str, int] = {}
        self._streams: dict[str, Any] = {}
        self._stream_iters: dict[str, Any] = {}
        self.strategy.setup(self)
        #: the strategy's own optimizers, by name; their lrs as created are the base of their schedules.
        self.owned: dict[str, OwnedOptimizer] = self.strategy.optimizers()
        self._owned_base_lr = {name: [g["lr"] for g in own.optimizer.param_groups] for name, own in self.owned.items()}
        self._schedule_owned()

    # -----------------------------------------------------------------------------------------
    def _scheduler(self) -> Any:
        from timm.scheduler import create_scheduler_v2

        o, t = self.cfg.optim, self.cfg.train
        if o.sched == "none":
            return None
        sched, _ = create_scheduler_v2(
            self.optimizer, sched=o.sched, num_epochs=t.epochs, decay_epochs=o.decay_epochs,
            decay_rate=o.decay_rate, min_lr=o.min_lr, warmup_lr=o.warmup_lr, warmup_epochs=o.warmup_epochs,
            step_on_epochs=False, updates_per_epoch=self.steps_per_epoch)
        return sched

    @property
    def total_steps(self) -> int:
        total = self.cfg.train.epochs * self.steps_per_epoch
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps else total

    # -----------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the end (continuing from the last checkpoint if `resume` was called)."""
        t = self.cfg.train
        start = time.perf_counter()
        while self.step < self.total_steps:
            epoch_start, seen = time.perf_counter(), 0
            self.train_loader.batch_sampler.set_epoch(self.epoch, self.batch_in_epoch)
            self.model.train()
            self._schedule_drop_path()
            bar = tqdm(total=self.steps_per_epoch, initial=self.batch_in_epoch, desc=f"epoch {self.epoch}",
                       disable=not (self.dist.is_main and sys.stderr.isatty()), leave=False)
            for keys, (images, targets) in with_keys(self.train_loader):
                loss = self.train_step(images, targets, keys)
                seen += images.shape[0] * self.dist.world
                self.batch_in_epoch += 1
                bar.update()
                if loss is not None and self.step % t.log_every == 0:
                    self._log({"step": self.step, "epoch": self.epoch, "loss": loss,
                               "lr": self.optimizer.param_groups[0]["lr"]})
                    bar.set_postfix(loss=f"{loss:.4f}")
                if self.step >= self.total_steps:
                    break
                if t.ckpt_every_steps and self.step % t.ckpt_every_steps == 0 \
                        and self.batch_in_epoch < self.steps_per_epoch:
                    self.save_checkpoint()
            bar.close()
            train_s = time.perf_counter() - epoch_start
            finished_epoch = self.batch_in_epoch >= self.steps_per_epoch
            if finished_epoch:
                self._end_epoch(seen / max(train_s, 1e-9))
            elif self.step >= self.total_steps:
                self.save_checkpoint()
        return {"wall_s": time.perf_counter() - start, "steps": self.step, "skipped_steps": self.skipped_steps}

    def train_step(self, images: torch.Tensor, targets: torch.Tensor,
                   keys: list[tuple[int, int]] | None = None) -> float | None:
        """One training step (the strategy's); returns the loss, or None where a non-finite loss was skipped.

        `keys` are the batch's (sample index, augmentation seed) pairs, kept in `batch_keys` for teachers
        that look outputs up by sample (a logit store)."""
        self.batch_keys = keys
        images, targets = self.to_device(images, targets)
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        loss = self.strategy.train_step(images, targets, self.step)
        self.strategy.after_step(self.step, loss)
        self.step += 1
        if self.scheduler is not None:
            self.scheduler.step_update(self.step)
        self._schedule_owned()
        return loss

    def to_device(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets

    # --- the pieces of a step ------------------------------------------------------------------
    def optimize(self, loss: torch.Tensor, name: str | None = None) -> float | None:
        """Backpropagate `loss` and step the optimizer `name` (a strategy's, see `Strategy.optimizers`; None:
        the weights'). A strategy's optimizer gets gradients for its own parameters only. Loss scaling,
        the non-finite policy (`train.on_nan`), clipping and EMA are the run's. Returns the loss value, or
        None where a non-finite loss was skipped."""
        value = float(loss.detach())
        optimizer = self._optimizer(name)
        optimizer.zero_grad(set_to_none=True)
        if any_rank(not math.isfinite(value), self.device, self.dist):  # every rank skips (or stops) together
            what = "loss" if name is None else f"loss of the strategy's optimizer '{name}'"
            if self.cfg.train.on_nan == "stop":
                last = ckpt.list_checkpoints(self.run.checkpoints)[-1:] if self.run else []
                keep = f"; the last good checkpoint is {last[0]}" if last else ""
                raise TrainingError(f"{what} is {value} at step {self.step} (epoch {self.epoch}); stopping{keep} "
                                    "(set train.on_nan=skip to skip such steps)")
            self.skipped_steps += 1
            return None
        inputs = None if name is None else [p for g in optimizer.param_groups for p in g["params"]]
        (loss if self.scaler is None else self.scaler.scale(loss)).backward(inputs=inputs)
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        self._step(name, optimizer, self.cfg.optim.clip_grad if name is None else 0.0, self.scaler)
        return value

    def apply_gradients(self, name: str, clip: float = 0.0) -> None:
        """Step the strategy's optimizer `name` on the (unscaled) gradients its parameters hold, e.g. a
        hypergradient; gradients are averaged over ranks first and clipped to norm `clip` (0: not)."""
        self._step(name, self._optimizer(name), clip, None)

    def _optimizer(self, name: str | None) -> torch.optim.Optimizer:
        if name is None:
            return self.optimizer
        if name not in self.owned:
            raise TrainingError(f"the strategy owns no optimizer named {name!r}; it has {sorted(self.owned)}")
        return self.owned[name].optimizer

    def _step(self, name: str | None, optimizer: torch.optim.Optimizer, clip: float, scaler: Any) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if name is not None:  # DDP averages the weights' gradients; a strategy's parameters live outside it
            for p in params:
                p.grad = mean_over_ranks(p.grad, self.dist)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if name is None:
            if self.ema is not None:
                self.ema.update(self.model, step=self.step)
        else:
            optimizer.zero_grad(set_to_none=True)

    def _schedule_drop_path(self) -> None:
        """`model.drop_path_schedule: linear`: set the model's drop-path rate for this epoch, drop_path x epoch /
        epochs (a function of the epoch alone, so a resumed run sets the same)."""
        if self.cfg.model.drop_path_schedule == "linear":
            self.model.set_drop_path(self.cfg.model.drop_path * self.epoch / self.cfg.train.epochs)

    def _schedule_owned(self) -> None:
        """Set the lr of each strategy optimizer that follows the weights' schedule (see `OwnedOptimizer`)."""
        base = self.cfg.optim.lr
        for name, own in self.owned.items():
            if own.schedule == "follow" and base > 0:
                lr = self.optimizer.param_groups[0]["lr"]
                for group, own_base in zip(own.optimizer.param_groups, self._owned_base_lr[name], strict=True):
                    group["lr"] = own_base * lr / base

    def next_batch(self, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of a second data stream over `splits.<split>` (e.g. held-out batches for
        architecture parameters), on the device. Each pass over the split is shuffled by (seed, pass) and
        sharded over ranks as the training loader is; the position is checkpointed, so a resumed run
        draws the same batches."""
        if split not in self._streams:
            ds = getattr(self.splits, split, None)
            if ds is None:
                raise ConfigError(f"strategy '{self.cfg.strategy.name}' draws batches from the {split} split, which "
                                  f"this run does not have (set data.val_fraction > 0)")
            loader = train_loader(ds, self.cfg.data.batch_size, seed=self.cfg.train.seed + 1, rank=self.dist.rank,
                                  world=self.dist.world, workers=self.cfg.data.workers,
                                  pin_memory=self.device.type == "cuda", split=split)
            self._streams[split] = loader, len(loader.batch_sampler)
        loader, per_pass = self._streams[split]
        drawn = self.stream_batches.get(split, 0)
        if split not in self._stream_iters:
            loader.batch_sampler.set_epoch(*divmod(drawn, per_pass))
            self._stream_iters[split] = iter(loader)
        images, targets = next(self._stream_iters[split])
        self.stream_batches[split] = drawn + 1
        if (drawn + 1) % per_pass == 0:
            del self._stream_iters[split]  # the next draw starts the next pass
        return self.to_device(images, targets)

    def _end_epoch(self, images_per_s: float) -> None:
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch, "images_per_s": round(images_per_s, 2)}
        record.update(self.strategy.end_epoch(self.epoch))
        if self.splits.val is not None and (self.epoch + 1) % self.cfg.train.eval_every_epochs == 0:
            self.last_eval = (self.step, self.evaluate_archs(self.splits.val))
            for name, res in self.last_eval[1].items():
                record.update({f"val_{k}" if name == "model" else f"val_{name}_{k}": v for k, v in res.items()})
        self._log(record)
        self.epoch += 1
        self.batch_in_epoch = 0
        last = self.step >= self.total_steps
        if last or self.epoch % self.cfg.train.ckpt_every_epochs == 0:
            self.save_checkpoint()

    # -----------------------------------------------------------------------------------------
    def evaluate(self, dataset, model: nn.Module | None = None) -> dict[str, float]:
        """Top-1, top-5 (fractions) and mean loss of `model` (default: the trained model) on `dataset`."""
        return evaluate(model or self.model, dataset, batch_size=self.cfg.data.eval_batch_size, device=self.device,
                        dist=self.dist, workers=self.cfg.data.workers, channels_last=self.cfg.train.channels_last,
                        autocast=self.autocast)

    def evaluate_archs(self, dataset) -> dict[str, dict[str, float]]:
        """Evaluate every (name, arch) the strategy names; a supernet is switched to each arch."""
        out = {}
        for name, arch in self.strategy.eval_archs():
            if arch is not None:
                self.model.set_arch(arch)
            out[name] = self.evaluate(dataset)
        return out

    # -----------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        rngs = gather_objects(ckpt.rng_state(), self.dist)  # called on every rank: each rank's generators
        if self.run is None or not self.run.write:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "ema": self.ema.module.state_dict() if self.ema is not None else {},
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "strategy": self.strategy.state_dict(),
            "strategy_optimizers": {name: own.optimizer.state_dict() for name, own in self.owned.items()},
            "rng": rngs[0],
            "rank_rngs": rngs[1:],
            "progress": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                         "skipped_steps": self.skipped_steps, "stream_batches": dict(self.stream_batches)},
        }
        ckpt.save_atomic(state, ckpt.checkpoint_path(self.run.checkpoints, self.step))
        ckpt.prune(self.run.checkpoints, self.cfg.train.keep_checkpoints)

    def resume(self) -> None:
        """Restore everything from the run's newest readable checkpoint."""
        if self.run is None:
            raise CheckpointError("resuming needs a run directory")
        state = ckpt.load_latest(self.run.checkpoints)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"]:
                self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None and state["ema"]:
                self.ema.module.load_state_dict(state["ema"])
            if self.scaler is not None and state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            saved = state.get("strategy_optimizers", {})
            if saved.keys() != self.owned.keys():
                raise ValueError(f"it holds strategy optimizers {sorted(saved)}, this run's strategy has "
                               f"{sorted(self.owned)}")
            for name, own in self.owned.items():
                own.optimizer.load_state_dict(saved[name])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint in '{self.run.checkpoints}' does not fit this run: "
                                  f"{str(e).splitlines()[0]}") from None
        self.strategy.load_state_dict(state["strategy"])
        ranks = [state["rng"], *state.get("rank_rngs", [])]
        if len(ranks) != self.dist.world:
            raise CheckpointError(f"checkpoint in '{self.run.checkpoints}' was written by {len(ranks)} process(es); "
                                  f"resume it with as many (this run has {self.dist.world})")
        ckpt.set_rng_state(ranks[self.dist.rank])
        p = state["progress"]
        self.step, self.epoch, self.batch_in_epoch = p["step"], p["epoch"], p["batch_in_epoch"]
        self.skipped_steps = p["skipped_steps"]
        self.stream_batches, self._stream_iters = dict(p.get("stream_batches", {})), {}
        if self.scheduler is not None:
            self.scheduler.step_update(self.step)
        self._schedule_owned()
        if self.dist.is_main:
            self.run.truncate_metrics(self.step)

    def _log(self, record: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log_metrics(record)
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, record["step"])


def _weight_groups(model: nn.Module, weight_decay: float, skip: set[int]) -> list[dict[str, Any]]:
    """timm's weight-decay parameter groups of `model` without the parameters in `skip` (by id)."""
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=getattr(model, "no_weight_decay",
                                                                                       set)())
    return [{**g, "params": [p for p in g["params"] if id(p) not in skip]} for g in groups]
