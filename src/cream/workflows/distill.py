"""Distillation stages: the teacher a config names, the strategy that distils from it, and TinyViT's
fast distillation: `cream distill save-logits` runs an online teacher once over seeded, replayable
views of every (image, epoch) and writes its top-K to a logit store; `cream retrain` with
`distill.store` then regenerates each view from its seed and reads the target, never running the
teacher; `cream distill check` recomputes the teacher on stored records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from cream.config import RunConfig, load_config, to_dict
from cream.data import Splits, build_splits
from cream.data.replay import draw_seeds, epoch_pairs, replay_dataset
from cream.errors import ConfigError
from cream.teachers.base import Teacher
from cream.teachers.networks import SupernetPath, freeze, timm_teacher
from cream.teachers.store import LogitStore, StoreWriter, sparse_probs
from cream.train.distill import Distill
from cream.train.distributed import barrier, init_distributed
from cream.train.engine import pick_device, seed_everything
from cream.train.evaluate import amp_autocast
from cream.workflows.supernet import load_supernet

#: the data keys that decide a replayed view: a store is replayed only under the ones it was written with.
VIEW_KEYS = ("image_size", "train_crop", "pad", "rrc_scale", "hflip", "auto_augment", "color_jitter", "re_prob",
             "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "mean", "std", "interpolation")
#: data keys that change only how fast a store is written or read, never its records.
SPEED_KEYS = ("batch_size", "eval_batch_size", "workers", "cache", "cache_dir")


def store_path(cfg: RunConfig) -> str:
    """The logit store a config names: `distill.store`, or the older `distill.teacher: {kind: store, path}`."""
    tc = cfg.distill.teacher
    return cfg.distill.store or (tc.path if tc.kind == "store" else "")


def build_teacher(cfg: RunConfig, splits: Splits) -> Teacher:
    """The teacher `cfg.distill.teacher` describes, for data with `splits`; one-line errors for bad settings."""
    tc = cfg.distill.teacher
    if store_path(cfg):
        return open_store(cfg, splits)
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
    raise ConfigError("config key 'distill.teacher.kind' is empty; choose timm, supernet or store")


def online_teacher(cfg: RunConfig, splits: Splits) -> Teacher:
    """The network teacher of `cfg` (a store cannot fill or check a store)."""
    if cfg.distill.teacher.kind in ("", "store"):
        raise ConfigError(f"config key 'distill.teacher.kind' = {cfg.distill.teacher.kind!r} cannot run; "
                          "name an online teacher (timm or supernet) to write or check a logit store")
    return build_teacher(replace(cfg, distill=replace(cfg.distill, store="")), splits)


def distill_strategy(cfg: RunConfig, splits: Splits) -> Distill | None:
    """The distillation strategy of a standalone run, or None where it names no teacher and no store."""
    if not cfg.distill.teacher.kind and not store_path(cfg):
        return None
    d = cfg.distill
    return Distill(build_teacher(cfg, splits), d.loss, d.alpha, d.temperature, attn_weight=d.attn_weight,
                   hidden_weight=d.hidden_weight, relation_heads=d.relation_heads, student_layers=d.student_layers,
                   teacher_layers=d.teacher_layers)


def distill_splits(cfg: RunConfig, splits: Splits) -> Splits:
    """`splits` with the training images replayed from the store's seeds, where the run reads a store."""
    if not store_path(cfg):
        return splits
    store = open_store(cfg, splits)
    return replace(splits, train=replay_dataset(splits.train, cfg.data, store.seeds))


def open_store(cfg: RunConfig, splits: Splits, epochs: range | None = None) -> LogitStore:
    """The store `cfg` names, checked against the run: classes, samples, seed, view settings and `epochs`
    (default: the run's `train.epochs`)."""
    path = store_path(cfg)
    key = "distill.store" if cfg.distill.store else "distill.teacher.path"
    store = LogitStore(path, splits.num_classes, cfg.distill.top_k)
    m = store.meta
    wanted = {"num_classes": splits.num_classes, "samples": len(splits.train), "seed": cfg.train.seed}
    for name, value in wanted.items():
        if m and m.get(name) != value:
            raise ConfigError(f"config key '{key}' = {path!r} is a logit store written for {name} = {m.get(name)}, "
                              f"but this run has {value}")
    for name in VIEW_KEYS:
        if m and m["data"].get(name) != getattr(cfg.data, name):
            raise ConfigError(f"config key 'data.{name}' = {getattr(cfg.data, name)!r} differs from the logit store "
                              f"'{path}', written with {m['data'].get(name)!r}; its views could not be replayed")
    missing = [e for e in epochs or range(cfg.train.epochs) if e not in store.epochs]
    if missing:
        raise ConfigError(f"config key '{key}' = {path!r} is a logit store without epochs {missing} (it has "
                          f"{store.epochs}); finish it with `cream distill save-logits`")
    return store


def _epoch_range(cfg: RunConfig, epochs: tuple[int, int] | None) -> range:
    lo, hi = epochs or (0, cfg.train.epochs)
    if not 0 <= lo < hi:
        raise ConfigError(f"--epochs {lo}:{hi} is empty; give A:B with 0 <= A < B")
    return range(lo, hi)


def _teacher_batches(teacher: Teacher, ds: Any, keys: list[tuple[int, int]], cfg: RunConfig,
                     device: torch.device) -> Iterator[tuple[list[tuple[int, int]], torch.Tensor]]:
    """(keys, the teacher's fp32 logits) per batch of whole pairs of the replayed views of `keys`."""
    bs = max(2, cfg.data.eval_batch_size // 2 * 2)
    batches = [keys[i:i + bs] for i in range(0, len(keys), bs)]
    loader = DataLoader(ds, batch_sampler=batches, num_workers=cfg.data.workers)
    autocast = amp_autocast(device, cfg.train.amp)
    for batch, (images, _) in zip(batches, loader, strict=True):
        with autocast():
            logits = teacher(images.to(device))
        yield batch, logits.float().cpu()


def save_logits(cfg: RunConfig, epochs: tuple[int, int] | None = None) -> dict[str, Any]:
    """TinyViT's teacher pass: for each epoch of `epochs` (default all `train.epochs`) not yet stored, run the
    online teacher over this rank's pairs of the epoch, each view drawn from a fresh per-sample seed, and
    write seed + top-`distill.top_k` to the store. Under torchrun each rank writes its own files."""
    start = time.perf_counter()
    t, d = cfg.train, cfg.data
    path = store_path(cfg)
    if not path:
        raise ConfigError("config key 'distill.store' is empty; name the logit store folder to write")
    seed_everything(t.seed, t.deterministic, t.threads)
    device = pick_device(t.device)
    dist = init_distributed(device.type)
    splits = build_splits(d)
    teacher = online_teacher(cfg, splits).to(device)
    ds = replay_dataset(splits.train, d)
    data = {k: v for k, v in to_dict(d).items() if k not in SPEED_KEYS}
    meta = {"num_classes": splits.num_classes, "samples": len(splits.train), "seed": t.seed, "data": data,
            "teacher": to_dict(cfg.distill.teacher)}
    writer = StoreWriter(path, cfg.distill.top_k, meta, dist.rank)
    barrier(dist)
    written, records = [], 0
    for epoch in _epoch_range(cfg, epochs):
        if writer.has(epoch):
            continue
        indices = epoch_pairs(len(ds), t.seed, epoch)[dist.rank::dist.world].flatten().tolist()
        seeds = draw_seeds(len(indices), t.seed, epoch, dist.rank, dist.world)
        keys = list(zip(indices, seeds.tolist(), strict=True))
        top = [sparse_probs(z, cfg.distill.top_k) for _, z in _teacher_batches(teacher, ds, keys, cfg, device)]
        writer.write(epoch, indices, seeds, torch.cat([v for v, _ in top]), torch.cat([c for _, c in top]))
        barrier(dist)
        if dist.is_main:
            writer.finish(epoch)
        barrier(dist)
        written.append(epoch)
        records += len(indices)
    return {"store": path, "epochs_written": written, "records_this_rank": records, "top_k": cfg.distill.top_k,
            "bytes_per_record": 4 + 4 * cfg.distill.top_k, "wall_s": round(time.perf_counter() - start, 2)}


def check_logits(cfg: RunConfig, epochs: tuple[int, int] | None = None, samples: int = 0) -> dict[str, Any]:
    """Recompute the online teacher on the stored records (the first `samples` of each epoch's pairs, 0 = all):
    the largest |stored - recomputed| probability at the stored classes and the share of top-K classes that
    differ (ties in the teacher's tail can reorder them)."""
    start = time.perf_counter()
    t = cfg.train
    seed_everything(t.seed, t.deterministic, t.threads)
    device = pick_device(t.device)
    splits = build_splits(cfg.data)
    store = open_store(cfg, splits, _epoch_range(cfg, epochs))
    teacher = online_teacher(cfg, splits).to(device)
    ds = replay_dataset(splits.train, cfg.data)
    checked, err, mismatched, entries = [], 0.0, 0, 0
    for epoch in _epoch_range(cfg, epochs):
        pairs = epoch_pairs(len(ds), t.seed, epoch)
        indices = (pairs[: samples // 2] if samples else pairs).flatten().tolist()
        seeds = store.seeds(epoch)
        keys = [(i, int(seeds[i])) for i in indices]
        for batch, logits in _teacher_batches(teacher, ds, keys, cfg, device):
            probs = logits.softmax(-1)
            classes = probs.topk(store.top_k, dim=-1).indices
            s_values, s_classes = store.lookup(batch)
            err = max(err, float((s_values.float() - probs.gather(1, s_classes.long())).abs().max()))
            mismatched += int((classes != s_classes).sum())
            entries += classes.numel()
        checked.append(epoch)
    return {"store": str(store.path), "epochs": checked, "records": entries // store.top_k,
            "max_value_error": err, "index_mismatch": mismatched / max(entries, 1),
            "wall_s": round(time.perf_counter() - start, 2)}


def deprecated_store_command(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """`cream distill-store --out OUT`: the older spelling of `cream distill save-logits` with distill.store=OUT."""
    summary = save_logits(replace(cfg, distill=replace(cfg.distill, store=str(out))))
    return {**summary, "note": "cream distill-store is deprecated: use `cream distill save-logits CONFIG --set "
                               "distill.store=OUT`"}
