"""Torch datasets whose augmentation is a pure function of (run seed, epoch, sample index).

The sampler hands out keys `(index, sample_seed)`; the dataset seeds the random generators
the transforms use from that key before transforming. Augmentation therefore does not depend
on the number of workers, the number of processes, or whether the run was resumed — which is
what makes a resumed run bit-identical to an uninterrupted one and DDP match one process.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from cream.data.arrays import ImageArrays
from cream.errors import DataError

log = logging.getLogger(__name__)
Key = int | tuple[int, int]


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restore the torch/random/numpy generator states on exit.

    Data loading seeds these generators per sample; the main process's own random streams
    (dropout, mixup, path sampling) must not be disturbed by that.
    """
    saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        random.setstate(saved[1])
        np.random.set_state(saved[2])


def _seed(seed: int) -> None:
    torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would also queue CUDA/XPU seeding
    random.seed(seed)
    np.random.seed(seed % (2**32))


class SeededDataset(Dataset):
    """A dataset whose keys may carry a per-sample seed; subclasses define `load(index)`."""

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[Key]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch (DataLoader calls this), with the generator states saved once per batch."""
        if not any(isinstance(k, tuple) for k in keys):
            return [self.load(k) for k in keys]
        out = []
        with _preserved_rng():
            for key in keys:
                index, seed = key if isinstance(key, tuple) else (key, None)
                if seed is not None:
                    _seed(seed)
                out.append(self.load(index))
        return out


class ArrayDataset(SeededDataset):
    """Images held in memory as uint8 arrays."""

    def __init__(self, arrays: ImageArrays, transform: Callable) -> None:
        self.arrays, self.transform = arrays, transform
        self.classes = arrays.classes

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def targets(self) -> np.ndarray:
        return self.arrays.labels

    def image(self, i: int) -> tuple[Image.Image, int]:
        """Image `i` untransformed, and its label."""
        return Image.fromarray(self.arrays.images[i]), int(self.arrays.labels[i])

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.image(i)
        return self.transform(img), label


class FileDataset(SeededDataset):
    """Images read from files on each access (large datasets such as ImageNet)."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable,
                 on_corrupt: str = "error") -> None:
        self.samples, self.classes, self.transform, self.on_corrupt = samples, classes, transform, on_corrupt
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.image(i)
        return self.transform(img), label

    def image(self, i: int) -> tuple[Image.Image, int]:
        """Image `i` decoded (the next decodable one where `on_corrupt` is skip), and its label."""
        for attempt in range(len(self.samples)):
            path, label = self.samples[(i + attempt) % len(self.samples)]
            try:
                with Image.open(path) as im:
                    return im.convert("RGB"), label
            except (UnidentifiedImageError, OSError) as e:
                if self.on_corrupt == "error":
                    raise DataError(f"image '{path}' cannot be decoded ({e.__class__.__name__}); "
                                    "set data.on_corrupt=skip to skip such files") from None
                self.skipped += 1
                log.warning("skipping corrupt image %s (%d skipped so far)", path, self.skipped)
        raise DataError("no image of the dataset can be decoded")
