"""`cream bench nb201-oneshot`: train a one-shot method on real CIFAR-10 images at a stated budget, derive
its cell, and look the cell up in the NAS-Bench-201 table (ground truth: 200-epoch test accuracies).

Every method gets the same images, epochs, network and weights optimizer; only the strategy (and for
SPOS the search that picks its cell) differs. The training images are split in half: the weights
train on one half; the other half is what α learns on (DARTS, GDAS, SETN) and what cells are scored
on (SETN's selection, SPOS's search), as the NAS-Bench-201 searches split CIFAR-10's train set.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from cream.config import RunConfig, load_config
from cream.errors import ConfigError
from cream.run_dir import RunDir
from cream.spaces.nb201 import arch_to_str
from cream.tabular import NB201Table
from cream.workflows.search import search_supernet
from cream.workflows.supernet import train_supernet

#: method → the supernet strategy that trains it.
METHODS = {"spos": "uniform", "darts": "darts", "gdas": "gdas", "setn": "setn", "cdarts": "cdarts"}
REPORTED = {"cifar10": "cifar10_test_200ep", "cifar100": "cifar100_test_200ep",
            "imagenet16": "imagenet16_test_200ep"}


def oneshot_config(method: str, epochs: int, train_images: int, seed: int, data_root: str,
                   overrides: list[str] | None = None) -> RunConfig:
    """The run config of one seed: NB201 macro network (C=16, `space.cells_per_stage` cells a stage, 1
    unless overridden), `train_images` CIFAR-10 images (half held out), SGD 0.025 cosine to 0.001 with
    momentum 0.9 and weight decay 5e-4, batch 64 (the NB201 searches' settings)."""
    if method not in METHODS:
        raise ConfigError(f"--method = {method!r} is not available; choose one of {sorted(METHODS)}")
    if train_images < 20 or train_images % 10:
        raise ConfigError(f"--train-images = {train_images} must be a multiple of 10 (the classes), >= 20")
    if epochs < 1:
        raise ConfigError(f"--epochs = {epochs} must be >= 1")
    base = {
        "data": {"name": "imagefolder", "root": data_root, "image_size": 32, "train_per_class": train_images // 10,
                 "test_per_class": 10, "val_fraction": 0.5, "batch_size": 64, "eval_batch_size": 250,
                 "train_crop": "pad", "pad": 4, "hflip": 0.5,
                 "mean": [0.4913, 0.4821, 0.4465], "std": [0.2452, 0.2428, 0.2606]},
        "space": {"preset": "nb201", "num_classes": 10, "cells_per_stage": 1},
        "strategy": {"name": METHODS[method]},
        "optim": {"opt": "sgd", "lr": 0.025, "momentum": 0.9, "weight_decay": 5e-4, "sched": "cosine",
                  "min_lr": 0.001, "warmup_epochs": 0},
        "train": {"epochs": epochs, "seed": seed, "deterministic": True},
        "search": {"method": "regularized", "budget": 50, "seed": seed, "bn_recal_images": 256, "test_top_k": 0},
    }
    return load_config(RunConfig, None, list(overrides or []), base=base)


def run_seed(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """Train (and for SPOS search) one seed into `out`; the arch.json it ends with and the wall time."""
    start = time.perf_counter()
    supernet = RunDir.create(str(out / "supernet"), "supernet")
    train_supernet(cfg, supernet)
    arch_dir = supernet.path
    if cfg.strategy.name == "uniform":  # SPOS: the cell comes from a search with inherited weights
        search = RunDir.create(str(out / "search"), "search")
        search_supernet(cfg, supernet.path, search)
        arch_dir = search.path
    doc = json.loads((arch_dir / "arch.json").read_text())
    return {"arch": doc["arch"], "wall_s": time.perf_counter() - start}


def run_oneshot(method: str, epochs: int, train_images: int, seeds: int, table: NB201Table, data_root: str,
                out: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Seeds 0 … seeds-1 of `method`; per seed the cell (NB201 string), its table accuracies and wall time,
    and their mean and std over seeds."""
    per_seed = []
    for seed in range(seeds):
        cfg = oneshot_config(method, epochs, train_images, seed, data_root, overrides)
        res = run_seed(cfg, out / f"seed{seed}")
        index = table.index(res["arch"])
        per_seed.append({"seed": seed, "arch": arch_to_str(res["arch"]), "index": index,
                         **{k: table.query(index, col) for k, col in REPORTED.items()},
                         "wall_s": round(res["wall_s"], 2)})

    def summary(key: str) -> dict[str, float]:
        values = [r[key] for r in per_seed]
        return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}

    return {"method": method, "epochs": epochs, "train_images": train_images, "seeds": seeds,
            "overrides": list(overrides or []), "per_seed": per_seed,
            **{k: summary(k) for k in [*REPORTED, "wall_s"]}}
