"""CDARTS on the staged DARTS space end to end on real CIFAR-10 images at a CPU budget: `cream supernet`
(progressive search over 3 stages) then `cream retrain --arch` of the searched staged arch; prints JSON.

    python benchmarks/bench_cdarts_darts.py [--train-images 400] [--stage-epochs 3] [--channels 8] [--out DIR]

What it shows: that the pipeline runs and what it costs on this machine, the genotype of each stage, the
evaluation network's held-out top-1 per epoch, and a short retrain's test top-1. At this budget the
accuracies say nothing about the method.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import CIFAR10_ARCHIVE, sets

from cream.cli import main as cream


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-images", type=int, default=400, help="CIFAR-10 images, half held out (10 classes)")
    p.add_argument("--stage-epochs", type=int, default=3, help="per stage: 1 pretrain, 1 warm-up, the rest search")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--image-size", type=int, default=32, help="the retrain's auxiliary head needs 32 (8x8 maps)")
    p.add_argument("--retrain-epochs", type=int, default=2)
    p.add_argument("--out", default="")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cdarts-darts-"))
    space = {"preset": "cdarts-darts", "input_size": args.image_size, "channels": args.channels,
             "search_cells": [2, 2, 1], "eval_cells": [3, 3, 2]}
    data = ["data.name=imagefolder", f"data.root={CIFAR10_ARCHIVE}", f"data.image_size={args.image_size}",
            f"data.train_per_class={args.train_images // 10}", "data.test_per_class=20", "data.batch_size=50",
            "train.log_every=1", "data.eval_batch_size=200", "train.deterministic=true", "train.threads=2",
            "optim.opt=sgd",
            "optim.lr=0.025", "optim.momentum=0.9", "optim.weight_decay=5e-4", "optim.sched=cosine",
            "optim.warmup_epochs=0"]
    search = [f"space={json.dumps(space)}", "data.val_fraction=0.5", "strategy.name=cdarts",
              f"train.epochs={3 * args.stage_epochs}",
              "strategy.kwargs={pretrain_epochs: 1, warmup_epochs: 1, regular: true}"]
    start = time.perf_counter()
    assert cream(["supernet", "--out", str(out / "supernet"), *sets(data + search)]) == 0
    search_s = time.perf_counter() - start
    doc = json.loads((out / "supernet" / "arch.json").read_text())
    epochs = [json.loads(line) for line in (out / "supernet" / "metrics.jsonl").read_text().splitlines()
              if '"stage"' in line]
    start, aux = time.perf_counter(), "true" if args.image_size >= 32 else "false"
    assert cream(["retrain", "--arch", str(out / "supernet" / "arch.json"), "--out", str(out / "retrain"),
                  *sets(data + [f"train.epochs={args.retrain_epochs}", "data.val_fraction=0",
                                f"model.kwargs={{channels: {args.channels}, auxiliary: {aux}}}",
                                f"model.aux_weight={0.4 if aux == 'true' else 0}"])]) == 0
    retrain_s = time.perf_counter() - start
    summary = json.loads((out / "retrain" / "summary.json").read_text())
    print(json.dumps({
        "train_images": args.train_images, "stage_epochs": args.stage_epochs, "channels": args.channels,
        "search_wall_s": round(search_s, 1), "retrain_wall_s": round(retrain_s, 1),
        "eval_net_top1_by_epoch": [[r["epoch"], r["stage"], r.get("eval_net_top1")] for r in epochs],
        "arch": doc["arch"], "arch_params_at_search_sizes": doc["cost"]["params"],
        "retrain_test_top1": summary["test_top1"], "out": str(out)}))


if __name__ == "__main__":
    main()
