"""Distillation stages: the teacher a config names, the strategy that distils from it, and
`cream distill-store`, which runs an online teacher once over every sample key a training run
will draw and writes its sparse outputs to a logit store for that run to replay.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from cream.config import RunConfig, load_config, to_dict
from cream.data import Splits, build_splits
from cream.data.sampler import epoch_keys
from cream.errors import ConfigError
from cream.teachers.base import Teacher
from cream.teachers.networks import SupernetPath, freeze, timm_teacher
from cream.teachers.store import LogitStore, StoreWriter, sparse_probs
from cream.train.distill import Distill
from cream.train.engine import pick_device, seed_everything
from cream.train.evaluate import amp_autocast
from cream.workflows.supernet import load_supernet


def build_teacher(cfg: RunConfig, splits: Splits) -> Teacher:
    """The teacher `cfg.distill.teacher` describes, for data with `splits`; one-line errors for bad settings."""
    tc = cfg.distill.teacher
    needs = {"timm": ("name",), "supernet": ("path", "arch"), "store": ("path",)}.get(tc.kind, ())
    for key in needs:
        if not getattr(tc, key):
            raise ConfigError(f"config key 'distill.teacher.{key}' is empty; teacher kind '{tc.kind}' needs it")
    if tc.kind == "timm":
        return timm_teacher(tc.name, splits.num_classes, tc.weights, **tc.kwargs)
    if tc.kind == "supernet":
        run = Path(tc.path)
        if not (run / "config.yaml").is_file():
            raise ConfigError(f"config key 'distill.teacher.path' = {tc.path!r} is not a `cream supernet` run "
                              "folder (no config.yaml)")
        net = freeze(load_supernet(load_config(RunConfig, run / "config.yaml"), run, splits.num_classes))
        return SupernetPath(net, net.space.validate(tc.arch))
    if tc.kind == "store":
        store = LogitStore(tc.path)
        _check_store(store, cfg, splits)
        return store
    raise ConfigError("config key 'distill.teacher.kind' is empty; choose timm, supernet or store")


def distill_strategy(cfg: RunConfig, splits: Splits) -> Distill | None:
    """The distillation strategy of a standalone run, or None where `distill.teacher.kind` is empty."""
    if not cfg.distill.teacher.kind:
        return None
    d = cfg.distill
    return Distill(build_teacher(cfg, splits), d.loss, d.alpha, d.temperature, attn_weight=d.attn_weight,
                   hidden_weight=d.hidden_weight, relation_heads=d.relation_heads, student_layers=d.student_layers,
                   teacher_layers=d.teacher_layers)


def _check_store(store: LogitStore, cfg: RunConfig, splits: Splits) -> None:
    """A store fits a run when it was written for the same classes, training samples, seed and epochs."""
    m, path = store.meta, cfg.distill.teacher.path
    wanted = {"num_classes": splits.num_classes, "samples": len(splits.train), "seed": cfg.train.seed}
    for key, value in wanted.items():
        if m.get(key) != value:
            raise ConfigError(f"config key 'distill.teacher.path' = {path!r} is a logit store written for "
                              f"{key} = {m.get(key)}, but this run has {value}")
    missing = [e for e in range(cfg.train.epochs) if e not in store.epochs]
    if missing:
        raise ConfigError(f"config key 'distill.teacher.path' = {path!r} is a logit store without epochs {missing} "
                          f"of this run's {cfg.train.epochs}; finish it with `cream distill-store`")


def write_logit_store(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """Run the configured online teacher over every key of `train.epochs` epochs of `cfg`'s training
    stream and store its top-`distill.top_k` probabilities in `out`. Epochs already written are kept
    (the store resumes); a folder written for another run is refused."""
    start = time.perf_counter()
    t, d = cfg.train, cfg.data
    if cfg.distill.teacher.kind in ("", "store"):
        raise ConfigError(f"config key 'distill.teacher.kind' = {cfg.distill.teacher.kind!r} cannot fill a logit "
                          "store; name an online teacher (timm or supernet)")
    seed_everything(t.seed, t.deterministic, t.threads)
    splits = build_splits(d)
    device = pick_device(t.device)
    teacher = build_teacher(cfg, splits).to(device)
    meta = {"num_classes": splits.num_classes, "top_k": cfg.distill.top_k, "samples": len(splits.train),
            "seed": t.seed, "epochs": t.epochs, "teacher": to_dict(cfg.distill.teacher), "data": to_dict(d)}
    writer = StoreWriter(out, meta)
    autocast = amp_autocast(device, t.amp)
    written = 0
    for epoch in range(t.epochs):
        if writer.has(epoch):
            continue
        keys = epoch_keys(len(splits.train), t.seed, epoch)
        batches = [keys[i:i + d.eval_batch_size] for i in range(0, len(keys), d.eval_batch_size)]
        loader = DataLoader(splits.train, batch_sampler=batches, num_workers=d.workers)
        values, classes = [], []
        for images, _ in loader:
            with autocast():
                v, c = sparse_probs(teacher(images.to(device)), cfg.distill.top_k)
            values.append(v.cpu())
            classes.append(c.cpu())
        writer.write(epoch, keys, torch.cat(values), torch.cat(classes))
        written += 1
    return {"store": str(out), "epochs": t.epochs, "epochs_written": written, "samples": len(splits.train),
            "top_k": cfg.distill.top_k, "wall_s": round(time.perf_counter() - start, 2)}
