"""Image-text pairs for CLIP training: a captioned folder or tar, or class-name captions of a labelled set.

Both are `SeededDataset`s, so augmentation is a pure function of each sample's key and a resumed or
distributed run sees exactly the images an uninterrupted single-process run sees. A batch is
(images, tokens): the tokens (batch, context length) come from open_clip's CLIP tokenizer.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from cream.data.datasets import SeededDataset
from cream.errors import ConfigError, DataError


def class_captions(classes: list[str], template: str) -> list[str]:
    """One caption per class, e.g. "a photo of a cat." (underscores in folder names become spaces)."""
    if "{}" not in template:
        raise ConfigError(f"config key 'clip.data.template' = {template!r} must contain {{}} (the class name)")
    return [template.format(c.replace("_", " ")) for c in classes]


class CaptionedDataset(SeededDataset):
    """A labelled image dataset whose images come with their class's caption as text."""

    def __init__(self, labelled: SeededDataset, tokens: Tensor) -> None:
        self.labelled, self.tokens = labelled, tokens
        self.classes = labelled.classes

    def __len__(self) -> int:
        return len(self.labelled)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = self.labelled.load(index)
        return image, self.tokens[label]


def read_captions(path: Path) -> list[tuple[str, str]]:
    """(image name, caption) rows of a CSV with columns image, caption, or of a JSONL of {image, caption}."""
    if not path.is_file():
        raise DataError(f"captions file '{path}' does not exist (a .csv with columns image,caption or a .jsonl)")
    return parse_captions(path.read_text(encoding="utf-8"), path.suffix, str(path))


def parse_captions(text: str, suffix: str, where: str) -> list[tuple[str, str]]:
    """The rows of captions `text` in the format its file suffix names (.csv or .jsonl)."""
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text)))
        else:
            raise DataError(f"captions file '{where}' must end in .csv or .jsonl")
        pairs = [(str(r["image"]), str(r["caption"])) for r in rows]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"captions file '{where}' has a row without 'image' and 'caption' ({e.__class__.__name__})"
                        ) from None
    if not pairs:
        raise DataError(f"captions file '{where}' holds no pairs")
    return pairs


class PairDataset(SeededDataset):
    """Images of a folder or tar archive, each with its caption from a captions file.

    A tar's images are read into memory once (fine up to a few GB; webdataset shards are the way beyond)."""

    def __init__(self, root: str, captions: str, tokenize: Callable[[list[str]], Tensor],
                 transform: Callable) -> None:
        base = Path(root)
        if not base.exists():
            raise DataError(f"config key 'clip.data.pairs' = {root!r} does not exist (a folder or a .tar of images)")
        self.transform = transform
        self.is_tar = base.is_file()
        if self.is_tar and not tarfile.is_tarfile(base):
            raise DataError(f"config key 'clip.data.pairs' = {root!r} is neither a folder nor a tar archive")
        self.files: dict[str, bytes] = {}
        if self.is_tar:
            with tarfile.open(base) as tar:
                self.files = {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar if m.isfile()}
        rows = read_captions(Path(captions)) if captions else self._inner_captions(base)
        self.images = [name for name, _ in rows]
        missing = [n for n in self.images if (n not in self.files if self.is_tar else not (base / n).is_file())]
        if missing:
            raise DataError(f"captions name {len(missing)} image(s) missing from '{root}', e.g. '{missing[0]}'")
        self.base = base
        self.tokens = tokenize([caption for _, caption in rows])

    def _inner_captions(self, base: Path) -> list[tuple[str, str]]:
        """The captions.csv or captions.jsonl inside the folder or archive."""
        for name in ("captions.csv", "captions.jsonl"):
            if self.is_tar and name in self.files:
                return parse_captions(self.files[name].decode("utf-8"), Path(name).suffix, f"{base}:{name}")
            if not self.is_tar and (base / name).is_file():
                return read_captions(base / name)
        raise DataError(f"'{base}' holds no captions.csv or captions.jsonl; set clip.data.captions")

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        name = self.images[index]
        try:
            with Image.open(io.BytesIO(self.files[name]) if self.is_tar else self.base / name) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"image '{name}' of '{self.base}' cannot be decoded ({e.__class__.__name__})") from None
        return self.transform(image), self.tokens[index]


def tokenize_with(tokenizer: Any) -> Callable[[list[str]], Tensor]:
    """Captions -> (n, context) token ids, with open_clip's tokenizer."""
    return lambda texts: torch.as_tensor(tokenizer(texts))
