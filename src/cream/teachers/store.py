"""A teacher's outputs stored on disk once, then replayed: sparse probabilities keyed by sample.

Running a large teacher on every training step can cost more than the student. The store keeps,
for every sample key `(index, sample_seed)` a training run will draw, the teacher's `top_k`
probabilities (fp16) and their classes (int16, or int32 beyond 32767 classes). Replaying
returns the dense distribution rebuilt from them: the stored probabilities at their classes
and the rest of the mass (1 - their sum) spread evenly over the other classes; where fp16
rounding makes the stored sum exceed 1, nothing is left for the rest and the softmax of the
returned logits renormalises. So the replayed distribution equals the teacher's within fp16
rounding on its top-k classes and within the teacher's own tail mass elsewhere.

Layout: `meta.json` (what was written: classes, top_k, samples, run seed, epochs, teacher, data)
and one `epoch-NNNN.safetensors` per epoch (`index`, `seed` int64; `values`; `classes`), each
written to a temporary file and renamed, so a killed writer keeps every finished epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cream.atomic import atomic_write_bytes
from cream.errors import CreamError
from cream.teachers.base import Keys

FORMAT = 1
META = "meta.json"


def sparse_probs(logits: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """The `top_k` largest probabilities of softmax(logits) as fp16, and their classes."""
    values, classes = logits.float().softmax(-1).topk(min(top_k, logits.shape[-1]), dim=-1)
    return values.half(), classes.to(torch.int16 if logits.shape[-1] <= 32767 else torch.int32)


def dense_logits(values: Tensor, classes: Tensor, num_classes: int) -> Tensor:
    """Logits whose softmax is the distribution rebuilt from top-k probabilities (module docstring)."""
    values = values.float()
    k = values.shape[-1]
    rest = (1 - values.sum(-1, keepdim=True)).clamp_min(0) / max(num_classes - k, 1)
    dense = rest.expand(-1, num_classes).clone().scatter_(-1, classes.long(), values)
    return dense.clamp_min(1e-12).log()


def key_columns(keys: Keys) -> tuple[Tensor, Tensor]:
    """The (index, sample_seed) columns of sample keys, as two int64 tensors of their own."""
    table = torch.tensor(list(keys), dtype=torch.int64).reshape(-1, 2)
    return table[:, 0].contiguous(), table[:, 1].contiguous()


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:04d}.safetensors"


class StoreWriter:
    """Writes a store epoch by epoch; reopening a folder with the same `meta` resumes it."""

    def __init__(self, path: str | Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = Path(path), {"format": FORMAT, **meta}
        meta_file = self.path / META
        if meta_file.is_file():
            old = json.loads(meta_file.read_text())
            if old != json.loads(json.dumps(self.meta)):
                changed = sorted(k for k in {*old, *self.meta} if old.get(k) != self.meta.get(k))
                raise CreamError(f"logit store '{self.path}' was written for another run (differs in {changed}); "
                                 "choose another folder")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(meta_file, (json.dumps(self.meta, indent=2) + "\n").encode())

    def has(self, epoch: int) -> bool:
        return (self.path / epoch_file(epoch)).is_file()

    def write(self, epoch: int, keys: Keys, values: Tensor, classes: Tensor) -> None:
        from safetensors.torch import save

        index, seed = key_columns(keys)
        blob = save({"index": index, "seed": seed, "values": values.contiguous(),
                     "classes": classes.contiguous()})
        atomic_write_bytes(self.path / epoch_file(epoch), blob)


class LogitStore:
    """A store as a teacher: the dense logits of each sample key, looked up, not computed.

    One epoch's file is held in memory at a time; training reads the epochs in order.
    """

    sees_images = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_file = self.path / META
        if not meta_file.is_file():
            raise CreamError(f"'{self.path}' is not a logit store (no {META}); write one with `cream distill-store`")
        self.meta = json.loads(meta_file.read_text())
        if self.meta.get("format") != FORMAT:
            raise CreamError(f"logit store '{self.path}' has format {self.meta.get('format')!r}; "
                             f"this version reads format {FORMAT}")
        self.num_classes, self.top_k = int(self.meta["num_classes"]), int(self.meta["top_k"])
        self.epochs = sorted(int(p.stem.split("-")[1]) for p in self.path.glob("epoch-*.safetensors"))
        self.device = torch.device("cpu")
        self._epoch: int | None = None
        self._shard: dict[str, Tensor] = {}

    def to(self, device: torch.device) -> LogitStore:
        self.device = torch.device(device)
        return self

    def __call__(self, images: Tensor | None, keys: Keys | None = None) -> Tensor:
        if keys is None:
            raise CreamError("a logit store teacher needs the batch's sample keys (index, seed); "
                             "train through Engine.fit or pass keys to Engine.train_step")
        values, classes = self.lookup(keys)
        return dense_logits(values, classes, self.num_classes).to(self.device)

    def lookup(self, keys: Keys) -> tuple[Tensor, Tensor]:
        """The stored (values, classes) of each key, from the epoch file that holds them all."""
        index, seed = key_columns(keys)
        order = [e for e in self.epochs if e == self._epoch] + [e for e in self.epochs if e != self._epoch]
        for epoch in order:
            if epoch != self._epoch:
                self._load(epoch)
            rows = self._rows(index, seed)
            if rows is not None:
                return self._shard["values"][rows], self._shard["classes"][rows]
        i, s = keys[0]
        raise CreamError(f"logit store '{self.path}' has no entry for sample {i} with seed {s} (epochs "
                         f"{self.epochs}); write it from the same data and train config (train.seed, train.epochs)")

    def _load(self, epoch: int) -> None:
        from safetensors.torch import load_file

        shard = load_file(str(self.path / epoch_file(epoch)))
        order = shard["seed"].argsort()
        self._shard = {k: v[order] for k, v in shard.items()}
        self._epoch = epoch

    def _rows(self, index: Tensor, seed: Tensor) -> Tensor | None:
        """Rows of this epoch's file holding every (index, seed), or None where one is missing."""
        seeds = self._shard["seed"]
        rows = torch.searchsorted(seeds, seed).clamp_max(len(seeds) - 1)
        hit = (seeds[rows] == seed) & (self._shard["index"][rows] == index)
        return rows if bool(hit.all()) else None
