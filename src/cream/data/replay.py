"""Augmentation that can be replayed from a per-sample seed (TinyViT's fast distillation).

Every random choice of a training view (crop box, flip, RandAugment ops and magnitudes, colour
jitter factors, erasing box and noise, and the mixup/cutmix draw of a pair) is drawn here from
one `numpy.random.Generator(PCG64(seed))` handed in explicitly; the pixel work is done by
torchvision's functional ops and timm's RandAugment ops, which take their parameters as
arguments. So the same (image, seed) gives the same tensor bit for bit, in any process, and no
global random state is read or disturbed.

Pairs: samples are mixed in fixed pairs (2i, 2i+1) of a batch, with parameters drawn from the
XOR of the two seeds; `PairSampler` shuffles with `torch.Generator(seed + epoch)` and groups
indices into pairs before it shards them across ranks, so pairs do not depend on the world size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from cream.config import DataConfig
from cream.errors import ConfigError

Rng = np.random.Generator
SeedTable = Callable[[int], np.ndarray]  # epoch -> seed of each sample index


def sample_rng(seed: int) -> Rng:
    return np.random.Generator(np.random.PCG64(int(seed)))


def draw_seeds(n: int, run_seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Per-sample seeds in [0, 2**31) as TinyViT draws them: legacy numpy `randint`, seeded
    `run_seed + rank + epoch * world` (the original seeds once per pass with its start epoch; we
    seed per epoch, so a pass resumed or split by epoch ranges draws the same seeds)."""
    return np.random.RandomState(run_seed + rank + epoch * world).randint(0, 2**31, size=n).astype(np.int32)


# ---- RandAugment (timm's "increasing" ops, their pixel functions; parameters drawn here) --------------------
_SIGNED = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3}


def _op_args(name: str, m: float, rng: Rng, translate_pct: float) -> tuple:
    """The arguments of timm op `name` at magnitude m in [0, 10] (timm's level functions, signs drawn from rng)."""
    sign = -1.0 if rng.random() > 0.5 else 1.0  # drawn for every op, so the stream does not depend on the op
    level = m / 10
    if name in _SIGNED:
        return (sign * level * _SIGNED[name],)
    if name in ("TranslateXRel", "TranslateYRel"):
        return (sign * level * translate_pct,)
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        return (max(0.1, 1.0 + sign * level * 0.9),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (level * 1.8 + 0.1,)
    # posterize keeps at least 1 bit: Pillow 11 refuses 0 (older Pillow gave a black image)
    if name == "PosterizeIncreasing":
        return (max(1, 4 - int(level * 4)),)
    if name == "Posterize":
        return (max(1, int(level * 4)),)
    if name == "SolarizeIncreasing":
        return (256 - min(256, int(level * 256)),)
    if name == "Solarize":
        return (min(256, int(level * 256)),)
    if name == "SolarizeAdd":
        return (min(128, int(level * 110)),)
    return ()  # AutoContrast, Equalize, Invert


class RandAugment:
    """timm's `rand-m{M}-n{N}-mstd{S}-inc{0,1}-p{P}` with its draws taken from an explicit generator."""

    def __init__(self, policy: str, fill: tuple[int, ...], resample: int) -> None:
        from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS, _RAND_TRANSFORMS, NAME_TO_OP

        parts = policy.split("-")
        if parts[0] != "rand":
            raise ConfigError(f"config key 'data.auto_augment' = {policy!r} cannot be replayed from a seed; "
                              "use a RandAugment policy 'rand-m9-mstd0.5-inc1' (or '')")
        self.magnitude, self.layers, self.std, self.prob, increasing = 10.0, 2, 0.0, 0.5, False
        for part in parts[1:]:
            m = re.fullmatch(r"(mstd|inc|m|n|p)([\d.]+)", part)
            if m is None:
                raise ConfigError(f"config key 'data.auto_augment' = {policy!r}: section {part!r} is not one of "
                                  "m<magnitude>, n<ops>, mstd<std>, inc<0|1>, p<prob>")
            key, val = m[1], float(m[2])
            if key == "m":
                self.magnitude = val
            elif key == "n":
                self.layers = int(val)
            elif key == "mstd":
                self.std = val
            elif key == "p":
                self.prob = val
            else:
                increasing = bool(int(val))
        self.names = list(_RAND_INCREASING_TRANSFORMS if increasing else _RAND_TRANSFORMS)
        self.ops = NAME_TO_OP
        self.kwargs = {"fillcolor": fill, "resample": resample}

    def __call__(self, img: Image.Image, rng: Rng) -> Image.Image:
        for k in rng.integers(0, len(self.names), size=self.layers):
            name = self.names[int(k)]
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            m = rng.normal(self.magnitude, self.std) if self.std > 0 else self.magnitude
            m = min(max(float(m), 0.0), 10.0)
            img = self.ops[name](img, *_op_args(name, m, rng, 0.45), **self.kwargs)
        return img


# ---- the whole view ---------------------------------------------------------------------------------------
class ReplayTransform:
    """PIL image + generator -> normalised tensor: crop (rrc, pad or resize), flip, RandAugment or colour
    jitter, to tensor, normalise, random erasing; the order and defaults of timm's training transform."""

    def __init__(self, cfg: DataConfig) -> None:
        if cfg.cutout:
            raise ConfigError(f"config key 'data.cutout' = {cfg.cutout} is not replayed from a seed; set it to 0 "
                              "(random erasing, data.re_prob, is)")
        self.size, self.crop, self.pad, self.scale = cfg.image_size, cfg.train_crop, cfg.pad, tuple(cfg.rrc_scale)
        self.hflip, self.jitter, self.re_prob = cfg.hflip, cfg.color_jitter, cfg.re_prob
        self.interp = InterpolationMode(cfg.interpolation)
        self.mean, self.std = list(cfg.mean), list(cfg.std)
        resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[cfg.interpolation]
        fill = tuple(round(255 * m) for m in cfg.mean)
        self.randaug = RandAugment(cfg.auto_augment, fill, resample) if cfg.auto_augment else None

    def __call__(self, img: Image.Image, rng: Rng) -> torch.Tensor:
        if self.crop == "rrc":
            i, j, h, w = self._rrc_box(img.height, img.width, rng)
            img = F.resized_crop(img, i, j, h, w, [self.size, self.size], self.interp)
        else:
            img = F.resize(img, [self.size, self.size], self.interp)
            if self.crop == "pad" and self.pad > 0:
                top, left = rng.integers(0, 2 * self.pad + 1, size=2)
                img = F.crop(F.pad(img, [self.pad]), int(top), int(left), self.size, self.size)
        if self.hflip > 0 and rng.random() < self.hflip:
            img = F.hflip(img)
        if self.randaug is not None:
            img = self.randaug(img, rng)
        elif self.jitter > 0:
            img = self._jitter(img, rng)
        x = F.normalize(F.to_tensor(img), self.mean, self.std)
        if self.re_prob > 0 and rng.random() < self.re_prob:
            self._erase(x, rng)
        return x

    def _rrc_box(self, height: int, width: int, rng: Rng) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop box (ratio 3/4..4/3, 10 tries, then a centred fallback)."""
        area, log_ratio = height * width, (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            ratio = math.exp(rng.uniform(*log_ratio))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < 3 / 4:
            w, h = width, round(width / (3 / 4))
        elif in_ratio > 4 / 3:
            h, w = height, round(height * (4 / 3))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def _jitter(self, img: Image.Image, rng: Rng) -> Image.Image:
        """Brightness, contrast and saturation factors in [1 - j, 1 + j], applied in a random order."""
        ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
        factors = [rng.uniform(max(0.0, 1 - self.jitter), 1 + self.jitter) for _ in ops]
        for k in rng.permutation(len(ops)):
            img = ops[int(k)](img, factors[int(k)])
        return img

    def _erase(self, x: torch.Tensor, rng: Rng) -> None:
        """timm's RandomErasing, 'pixel' mode: area 2 %..1/3, log-uniform aspect 0.3..3.3, normal noise."""
        c, height, width = x.shape
        for _ in range(10):
            target = rng.uniform(0.02, 1 / 3) * height * width
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if w < width and h < height:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                x[:, top:top + h, left:left + w] = torch.from_numpy(rng.standard_normal((c, h, w), dtype=np.float32))
                return


# ---- pairs ------------------------------------------------------------------------------------------------
class PairMix:
    """Mixup/cutmix of each pair (2i, 2i+1), both ways (a gets lam·a + (1-lam)·b, b gets lam·b + (1-lam)·a,
    or the same box swapped), its parameters drawn from Generator(seed_a XOR seed_b)."""

    def __init__(self, mixup: float, cutmix: float, prob: float = 1.0, switch_prob: float = 0.5) -> None:
        self.mixup, self.cutmix, self.prob, self.switch = mixup, cutmix, prob, switch_prob

    @property
    def active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def params(self, seed_a: int, seed_b: int, height: int, width: int) -> tuple[float, tuple[int, ...] | None]:
        """(lam, cutmix box (y0, y1, x0, x1) or None) of a pair; lam is the box-corrected share of a."""
        rng = sample_rng(int(seed_a) ^ int(seed_b))
        if not self.active or rng.random() >= self.prob:
            return 1.0, None
        use_cut = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < self.switch)
        lam = float(rng.beta(*(2 * [self.cutmix if use_cut else self.mixup])))
        if not use_cut:
            return lam, None
        cut = math.sqrt(1 - lam)
        ch, cw = int(height * cut), int(width * cut)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, height)
        x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, width)
        return 1 - float((y1 - y0) * (x1 - x0)) / (height * width), (int(y0), int(y1), int(x0), int(x1))

    def __call__(self, images: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if not self.active:
            return images
        out = images.clone()
        for a in range(0, len(images) - 1, 2):
            b = a + 1
            lam, box = self.params(seeds[a], seeds[b], images.shape[-2], images.shape[-1])
            if box is not None:
                y0, y1, x0, x1 = box
                out[a, :, y0:y1, x0:x1] = images[b, :, y0:y1, x0:x1]
                out[b, :, y0:y1, x0:x1] = images[a, :, y0:y1, x0:x1]
            elif lam < 1.0:
                out[a] = images[a] * lam + images[b] * (1 - lam)
                out[b] = images[b] * lam + images[a] * (1 - lam)
        return out


class ReplayDataset(Dataset):
    """Views of `base`'s images regenerated from keys (index, seed); a batch's pairs are mixed.

    `base` is an ArrayDataset or FileDataset (its `image(i)` gives the PIL image and label). The
    loader must hand whole batches of pairs (`PairSampler`), which `__getitems__` mixes.
    """

    #: the dataset mixes its pairs itself: the engine must not mix again.
    mixes_pairs = True

    def __init__(self, base: Any, transform: ReplayTransform, mix: PairMix, seeds: SeedTable | None = None) -> None:
        self.base, self.transform, self.mix, self.seeds = base, transform, mix, seeds
        self.classes = getattr(base, "classes", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "seeds": None}  # loader workers only make views; the seed table stays here

    def view(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        """The unmixed augmented view of image `index` under `seed`, and its label."""
        img, label = self.base.image(index)
        return self.transform(img, sample_rng(seed)), label

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.view(*key)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[tuple[torch.Tensor, int]]:
        views = [self.view(i, s) for i, s in keys]
        images = self.mix(torch.stack([v for v, _ in views]), [s for _, s in keys])
        return [(images[k], label) for k, (_, label) in enumerate(views)]

    def batch_sampler(self, batch_size: int, *, seed: int, rank: int = 0, world: int = 1) -> PairSampler:
        """The training sampler for this dataset (`cream.data.train_loader` asks for it)."""
        if self.seeds is None:
            raise ConfigError("a replay dataset trains only from a logit store's seeds")
        return PairSampler(len(self), batch_size, self.seeds, seed=seed, rank=rank, world=world)


def epoch_pairs(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The (n // 2, 2) pairs of an epoch: a permutation seeded `seed + epoch`, cut into consecutive pairs."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return order[: 2 * (n // 2)].view(-1, 2)


class PairSampler(Sampler[list[tuple[int, int]]]):
    """Batches of whole pairs, keys (index, stored seed); global batch b is pairs [b·P·W, (b+1)·P·W) with
    P = batch_size / 2 pairs per rank, rank r takes its contiguous P of them. Drops the last partial batch;
    resumable like `ShardedBatchSampler` (`set_epoch(epoch, start_batch)`)."""

    def __init__(self, n: int, batch_size: int, seeds: SeedTable, *, seed: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        if batch_size % 2:
            raise ConfigError(f"config key 'data.batch_size' = {batch_size} must be even when distilling from a "
                              "logit store (batches are whole pairs)")
        self.n, self.pairs_per_rank, self.seeds, self.seed = n, batch_size // 2, seeds, seed
        self.rank, self.world = rank, world
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.n // 2) // (self.pairs_per_rank * self.world) - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        pairs = epoch_pairs(self.n, self.seed, self.epoch)
        seeds = self.seeds(self.epoch)
        per_global = self.pairs_per_rank * self.world
        for b in range(self.start_batch, self.start_batch + len(self)):
            lo = b * per_global + self.rank * self.pairs_per_rank
            mine = pairs[lo:lo + self.pairs_per_rank].flatten().tolist()
            missing = [i for i in mine if i >= len(seeds) or seeds[i] < 0]
            if missing:
                raise ConfigError(f"the logit store has no record of sample {missing[0]} in epoch {self.epoch}; "
                                  "write it from the same data config (`cream distill save-logits`)")
            yield [(i, int(seeds[i])) for i in mine]


def replay_dataset(base: Any, cfg: DataConfig, seeds: SeedTable | None = None) -> ReplayDataset:
    """`base` replayed under `cfg`'s augmentation and mixup/cutmix settings."""
    return ReplayDataset(base, ReplayTransform(cfg), PairMix(cfg.mixup, cfg.cutmix, cfg.mixup_prob,
                                                             cfg.mixup_switch_prob), seeds)
