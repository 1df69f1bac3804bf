"""TinyViT fast distillation: a student trained from a logit store vs with the online teacher, side by side.

Both sides train the same student (same init) on the same replayed views (TinyViT's augmentation:
random-resized crop, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing, paired mixup/cutmix,
all regenerated from the stored per-sample seeds); only the soft target differs: the online side
runs the teacher on every batch, the store side reads the stored top-K. The two take turns
(A B A B ...), `--steps` optimizer steps per turn, timed in process CPU seconds; the median turn of
each gives images/s and their ratio. The teacher pass (`save_logits`) and the store's bytes per
record are reported too. Prints one JSON object.

    python benchmarks/tinyvit_store.py [--teacher resnet34] [--student mobilenetv3_small_050]
        [--image-size 32] [--top-k 10] [--steps 5] [--repeats 5] [--threads 1]
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
from cream.cost.measure import measure_macs
from cream.data import build_splits, with_keys
from cream.train.distill import Distill
from cream.train.engine import Engine, seed_everything
from cream.workflows.distill import build_teacher, distill_splits, online_teacher, save_logits
from cream.workflows.train_model import configured_model


class Stepper:
    """Runs an engine's training steps from its own keyed stream, turn by turn, across epochs."""

    def __init__(self, cfg: RunConfig, splits, teacher) -> None:
        seed_everything(cfg.train.seed)
        d = cfg.distill
        self.engine = Engine(cfg, configured_model(cfg, splits.num_classes), splits, None,
                             Distill(teacher, d.loss, d.alpha, d.temperature))
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
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per turn")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps ratios stable on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(RunConfig, None, [
        f"model.name={args.student}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
        "data.train_crop=rrc", "data.hflip=0.5", "data.auto_augment=rand-m9-mstd0.5-inc1", "data.re_prob=0.25",
        "data.mixup=0.8", "data.cutmix=1.0", "optim.sched=none", "distill.teacher.kind=timm",
        f"distill.teacher.name={args.teacher}", f"distill.top_k={args.top_k}", "distill.loss=soft",
        "distill.alpha=1.0"])
    splits = build_splits(cfg.data)
    per_epoch = len(splits.train) // args.batch_size
    epochs = -(-(args.steps * (args.repeats + 1)) // per_epoch)  # every step the store side takes (warm-up too)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = with_overrides(cfg, {"train": {"epochs": epochs}, "distill": {"store": str(Path(tmp) / "store")}})
        start = time.perf_counter()
        save_logits(cfg)
        write_s = time.perf_counter() - start
        replayed = distill_splits(cfg, splits)
        online = online_teacher(cfg, splits)
        sides = {"online": Stepper(cfg, replayed, online), "store": Stepper(cfg, replayed, build_teacher(cfg, splits))}
        times = time_round_robin({k: (lambda s=s: s(args.steps)) for k, s in sides.items()}, args.repeats,
                                 warmup=1, stat=statistics.median)
        files = list(Path(tmp, "store").glob("logits_top*_epoch*/rank*-values.bin"))
        store_bytes = sum(p.stat().st_size for p in files)
        records = sum(len(p.with_name(p.name.replace("-values.bin", "-keys.txt")).read_text().split()) for p in files)
    images = args.steps * args.batch_size
    size = (3, args.image_size, args.image_size)
    macs = {"teacher": measure_macs(online.model, size), "student": measure_macs(sides["online"].engine.model, size)}
    online_ips, store_ips = images / times["online"], images / times["store"]
    print(json.dumps({
        "benchmark": "tinyvit_store_vs_online_teacher", "teacher": args.teacher, "student": args.student,
        "teacher_macs": macs["teacher"], "student_macs": macs["student"],
        "teacher_over_student_macs": round(macs["teacher"] / macs["student"], 1), "image_size": args.image_size,
        "batch_size": args.batch_size, "steps_per_turn": args.steps, "repeats": args.repeats,
        "online_images_per_s": round(online_ips, 1), "store_images_per_s": round(store_ips, 1),
        "ratio_store_over_online": round(store_ips / online_ips, 2), "top_k": args.top_k,
        "store_write_s": round(write_s, 2), "store_epochs": epochs, "store_records": records,
        "store_values_bytes": store_bytes, "bytes_per_record": store_bytes / records,
        "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
    }))


if __name__ == "__main__":
    main()
