"""Distillation speed: a student trained from a logit store vs with the online teacher, side by side.

Same student (same init), same data and key stream, same optimizer; only the teacher differs: the
online one runs resnet34 on every batch, the store looks the batch's keys up. The two engines take
turns (A B A B ...), `--steps` optimizer steps per turn, timed in process CPU seconds; the median
turn of each gives images/s and their ratio. The one-off cost of writing the store is reported too.
Prints one JSON object.

    python benchmarks/bench_distill_store.py [--teacher resnet34] [--student mobilenetv3_small_050]
        [--image-size 32] [--steps 5] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import time_round_robin

from cream.config import RunConfig, load_config, with_overrides
from cream.data import build_splits, with_keys
from cream.train.engine import Engine, seed_everything
from cream.workflows.distill import distill_strategy, write_logit_store
from cream.workflows.train_model import configured_model


class Stepper:
    """Runs an engine's training steps from its own keyed stream, turn by turn, across epochs."""

    def __init__(self, cfg: RunConfig, splits) -> None:
        seed_everything(cfg.train.seed)
        self.engine = Engine(cfg, configured_model(cfg, splits.num_classes), splits, None,
                             distill_strategy(cfg, splits))
        self.engine.model.train()
        self.batches = with_keys(self.engine.train_loader)

    def __call__(self, steps: int) -> None:
        for _ in range(steps):
            try:
                keys, (images, targets) = next(self.batches)
            except StopIteration:
                self.engine.epoch += 1
                self.engine.train_loader.batch_sampler.set_epoch(self.engine.epoch)
                self.batches = with_keys(self.engine.train_loader)
                keys, (images, targets) = next(self.batches)
            self.engine.train_step(images, targets, keys)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="resnet34")
    ap.add_argument("--student", default="mobilenetv3_small_050")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per turn")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps ratios stable on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(RunConfig, None, [
        f"model.name={args.student}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
        "data.train_crop=pad", "data.hflip=0.5", "optim.sched=none", "distill.teacher.kind=timm",
        f"distill.teacher.name={args.teacher}", "distill.loss=kl", "distill.temperature=2"])
    splits = build_splits(cfg.data)
    per_epoch = len(splits.train) // args.batch_size
    epochs = -(-(args.steps * (args.repeats + 1)) // per_epoch)  # every step the store side takes (warm-up too)
    cfg = with_overrides(cfg, {"train": {"epochs": epochs}})
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        start = time.perf_counter()
        write_logit_store(cfg, store)
        write_s = time.perf_counter() - start
        replay = with_overrides(cfg, {"distill": {"teacher": {"kind": "store", "path": str(store)}}})
        sides = {"online": Stepper(cfg, splits), "store": Stepper(replay, splits)}
        times = time_round_robin({k: (lambda s=s: s(args.steps)) for k, s in sides.items()}, args.repeats,
                                 warmup=1, stat=statistics.median)
        store_mb = sum(p.stat().st_size for p in store.iterdir()) / 2**20
    images = args.steps * args.batch_size
    online, stored = images / times["online"], images / times["store"]
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in
              (("teacher", sides["online"].engine.strategy.teacher.model), ("student", sides["online"].engine.model))}
    print(json.dumps({
        "benchmark": "distill_store_vs_online_teacher", "teacher": args.teacher, "student": args.student,
        "teacher_params": params["teacher"], "student_params": params["student"], "image_size": args.image_size,
        "batch_size": args.batch_size, "steps_per_turn": args.steps, "repeats": args.repeats,
        "online_images_per_s": round(online, 1), "store_images_per_s": round(stored, 1),
        "ratio_store_over_online": round(stored / online, 2),
        "store_write_s": round(write_s, 2), "store_epochs": epochs, "store_samples_per_epoch": len(splits.train),
        "store_mb": round(store_mb, 3), "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }))


if __name__ == "__main__":
    main()
