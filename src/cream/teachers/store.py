"""A teacher's sparse outputs stored once and replayed, in TinyViT's byte format.

Running a large teacher on every training step can cost more than the student. TinyViT's fast
distillation runs it once per (image, epoch) on an augmented view drawn from a per-sample seed
and keeps the seed with the teacher's top-K probabilities; a student regenerates the view from
the seed (`cream.data.replay`) and reads its soft target from disk.

Layout (byte-compatible with microsoft/Cream's TinyViT, so its stores load here and ours there):

    STORE/logits_top{K}_epoch{E}/rank{R}-keys.txt    one sample key per line (here: the index)
    STORE/logits_top{K}_epoch{E}/rank{R}-values.bin  one record per key, same order:
        seed int32 | K class indices int16 | K probabilities fp16      (4 + 4K bytes, little-endian)

Each writing rank writes its own two files; a reader maps key -> (file, row) over all of them, so
any number of reader ranks works. An epoch folder is written under a temporary name and renamed
once every rank has finished it: a killed pass keeps its finished epochs. `meta.json` (ours, not
the original's; optional when reading) records what the store was written for.

Replay rebuilds a dense distribution: the stored probabilities at their classes and the rest of
the mass, 1 - their sum, spread evenly over the other classes (TinyViT's target, which acts like
label smoothing); where fp16 rounding makes the sum exceed 1, nothing is left over.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cream.atomic import atomic_write_bytes
from cream.errors import CreamError
from cream.teachers.base import Keys

META = "meta.json"
MAX_CLASSES = 32767  # int16 class indices
_EPOCH_DIR = re.compile(r"^logits_top(\d+)_epoch(\d+)$")


def record_dtype(top_k: int) -> np.dtype:
    """One record: seed int32, then `top_k` int16 classes, then `top_k` fp16 probabilities (packed)."""
    return np.dtype([("seed", "<i4"), ("classes", "<i2", (top_k,)), ("values", "<f2", (top_k,))])


def epoch_dir(top_k: int, epoch: int) -> str:
    return f"logits_top{top_k}_epoch{epoch}"


def check_classes(num_classes: int) -> None:
    if num_classes > MAX_CLASSES:
        raise CreamError(f"a logit store keeps int16 class indices: {num_classes} classes is more than "
                         f"{MAX_CLASSES}; use a teacher with fewer outputs")


def sparse_probs(logits: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """The `top_k` largest probabilities of softmax(logits) (sorted) as fp16, and their int16 classes."""
    check_classes(logits.shape[-1])
    values, classes = logits.float().softmax(-1).topk(min(top_k, logits.shape[-1]), dim=-1)
    return values.half(), classes.to(torch.int16)


def dense_probs(values: Tensor, classes: Tensor, num_classes: int) -> Tensor:
    """TinyViT's target: stored probabilities at their classes, the remainder spread evenly elsewhere."""
    values = values.float()
    k = values.shape[-1]
    rest = (1 - values.sum(-1, keepdim=True)).clamp_min(0) / max(num_classes - k, 1)
    return rest.expand(-1, num_classes).clone().scatter_(-1, classes.long(), values)


def dense_logits(values: Tensor, classes: Tensor, num_classes: int) -> Tensor:
    """Logits whose softmax is `dense_probs` (renormalised where fp16 made the sum exceed 1)."""
    return dense_probs(values, classes, num_classes).clamp_min(1e-12).log()


def key_columns(keys: Keys) -> tuple[Tensor, Tensor]:
    """The (index, sample_seed) columns of sample keys, as two int64 tensors of their own."""
    table = torch.tensor(list(keys), dtype=torch.int64).reshape(-1, 2)
    return table[:, 0].contiguous(), table[:, 1].contiguous()


class StoreWriter:
    """Writes this rank's records of one epoch at a time; `finish` makes the epoch visible.

    Reopening a store with the same `meta` resumes it; another run's store is refused.
    """

    def __init__(self, path: str | Path, top_k: int, meta: dict[str, Any], rank: int = 0) -> None:
        check_classes(int(meta.get("num_classes", 0)))
        self.path, self.top_k, self.rank = Path(path), top_k, rank
        self.meta = json.loads(json.dumps({"top_k": top_k, **meta}))
        meta_file = self.path / META
        if meta_file.is_file():
            old = json.loads(meta_file.read_text())
            if old != self.meta:
                changed = sorted(k for k in {*old, *self.meta} if old.get(k) != self.meta.get(k))
                raise CreamError(f"logit store '{self.path}' was written for another run (differs in {changed}); "
                                 "choose another folder")
        elif rank == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(meta_file, (json.dumps(self.meta, indent=2) + "\n").encode())

    def has(self, epoch: int) -> bool:
        return (self.path / epoch_dir(self.top_k, epoch)).is_dir()

    def partial(self, epoch: int) -> Path:
        return self.path / f".{epoch_dir(self.top_k, epoch)}.partial"

    def write(self, epoch: int, indices: Sequence[int], seeds: np.ndarray, values: Tensor, classes: Tensor) -> None:
        """This rank's records of `epoch` (into the epoch's hidden folder; `finish` publishes it)."""
        rec = np.zeros(len(indices), record_dtype(self.top_k))
        rec["seed"] = np.asarray(seeds, dtype=np.int32)
        rec["classes"] = classes.cpu().numpy().astype(np.int16)
        rec["values"] = values.cpu().numpy().astype(np.float16)
        folder = self.partial(epoch)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / f"rank{self.rank}-values.bin", rec.tobytes())
        atomic_write_bytes(folder / f"rank{self.rank}-keys.txt", "".join(f"{i}\n" for i in indices).encode())

    def finish(self, epoch: int) -> None:
        """Publish `epoch` (one rank calls this, after every rank has written)."""
        os.replace(self.partial(epoch), self.path / epoch_dir(self.top_k, epoch))


class LogitStore:
    """A store as a teacher: each sample key's dense logits, looked up, never computed.

    Keys are `(index, seed)`; the epoch is the one whose records carry those seeds (the current
    epoch is tried first). One epoch is held in memory at a time; training reads them in order.
    """

    sees_images = False

    def __init__(self, path: str | Path, num_classes: int = 0, top_k: int = 0) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise CreamError(f"'{self.path}' is not a logit store (no such folder); "
                             "write one with `cream distill save-logits`")
        meta_file = self.path / META
        self.meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        found: dict[int, list[int]] = {}
        for p in self.path.iterdir():
            m = _EPOCH_DIR.match(p.name)
            if m and p.is_dir():
                found.setdefault(int(m[1]), []).append(int(m[2]))
        if not found:
            raise CreamError(f"'{self.path}' is not a logit store (no logits_top{{K}}_epoch{{E}} folders); "
                             "write one with `cream distill save-logits`")
        if top_k and top_k not in found:
            raise CreamError(f"logit store '{self.path}' holds top-{sorted(found)} records, not top-{top_k} "
                             "(distill.top_k)")
        if not top_k and len(found) > 1:
            raise CreamError(f"logit store '{self.path}' holds top-{sorted(found)} records; set distill.top_k "
                             "to choose")
        self.top_k = top_k or next(iter(found))
        self.epochs = sorted(found[self.top_k])
        self.num_classes = num_classes or int(self.meta.get("num_classes", 0))
        if not self.num_classes:
            raise CreamError(f"logit store '{self.path}' has no {META}; its number of classes must be given")
        check_classes(self.num_classes)
        self.device = torch.device("cpu")
        self._epoch: int | None = None
        self._records: np.ndarray = np.zeros(0, record_dtype(self.top_k))
        self._row: dict[int, int] = {}

    def to(self, device: torch.device) -> LogitStore:
        self.device = torch.device(device)
        return self

    def __call__(self, images: Tensor | None, keys: Keys | None = None) -> Tensor:
        if keys is None:
            raise CreamError("a logit store teacher needs the batch's sample keys (index, seed); "
                             "train through Engine.fit or pass keys to Engine.train_step")
        values, classes = self.lookup(keys)
        return dense_logits(values, classes, self.num_classes).to(self.device)

    def records(self, epoch: int) -> tuple[np.ndarray, dict[int, int]]:
        """All records of `epoch` (over every rank's files) and the row of each sample index."""
        if epoch != self._epoch:
            self._load(epoch)
        return self._records, self._row

    def seeds(self, epoch: int) -> np.ndarray:
        """The stored augmentation seed of each sample index in `epoch` (-1 where none is stored)."""
        records, row = self.records(epoch)
        out = np.full(max(row, default=-1) + 1, -1, dtype=np.int64)
        out[list(row)] = records["seed"][list(row.values())]
        return out

    def lookup(self, keys: Keys) -> tuple[Tensor, Tensor]:
        """The stored (values, classes) of each key, from the epoch whose records carry its seeds."""
        index, seed = key_columns(keys)
        order = [e for e in self.epochs if e == self._epoch] + [e for e in self.epochs if e != self._epoch]
        for epoch in order:
            records, row = self.records(epoch)
            rows = [row.get(int(i), -1) for i in index]
            if min(rows) >= 0:
                rec = records[rows]
                if np.array_equal(rec["seed"].astype(np.int64), seed.numpy()):
                    return torch.from_numpy(rec["values"].copy()), torch.from_numpy(rec["classes"].copy())
        i, s = keys[0]
        raise CreamError(f"logit store '{self.path}' has no record of sample {i} with seed {s} (epochs "
                         f"{self.epochs}); write it from the same data and train config")

    def _load(self, epoch: int) -> None:
        folder = self.path / epoch_dir(self.top_k, epoch)
        if not folder.is_dir():
            raise CreamError(f"logit store '{self.path}' has no epoch {epoch} (it has {self.epochs}); "
                             "finish it with `cream distill save-logits`")
        dtype = record_dtype(self.top_k)
        parts, row = [], {}
        for values_file in sorted(folder.glob("rank*-values.bin"), key=lambda p: int(p.name[4:].split("-")[0])):
            keys = (values_file.parent / values_file.name.replace("-values.bin", "-keys.txt")).read_text().split()
            size = values_file.stat().st_size
            if size != len(keys) * dtype.itemsize:
                raise CreamError(f"logit store file '{values_file}' has {size} bytes, not {len(keys)} records of "
                                 f"{dtype.itemsize} (top-{self.top_k}); the store is damaged or K is wrong")
            base = sum(len(p) for p in parts)
            if not all(key.isdigit() for key in keys):
                bad = next(key for key in keys if not key.isdigit())
                raise CreamError(f"logit store file '{values_file.with_name(values_file.name[:-10] + '-keys.txt')}' "
                                 f"has key {bad!r}; this reader keys samples by their index in the training split")
            for r, key in enumerate(keys):
                row.setdefault(int(key), base + r)  # the first record of a key wins, as in the original
            parts.append(np.fromfile(values_file, dtype=dtype))
        self._records = np.concatenate(parts) if parts else np.zeros(0, dtype)
        self._row, self._epoch = row, epoch

