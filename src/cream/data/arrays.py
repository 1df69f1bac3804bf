"""Image sources decoded into uint8 arrays (N, H, W, 3) with int64 labels.

Small-image datasets (digits, CIFAR, 32 px JPEG trees) fit in memory as uint8; decoding them
once and caching the array keeps CPU training from being bound by JPEG decoding.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cream.atomic import atomic_path
from cream.errors import DataError

log = logging.getLogger(__name__)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


@dataclass
class ImageArrays:
    """Images as uint8 (N, H, W, 3), labels as int64 (N,), and the class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> ImageArrays:
        return ImageArrays(self.images[idx], self.labels[idx], self.classes)

    def per_class(self, limit: int) -> ImageArrays:
        """The first `limit` images of each class, in the original order (0 = all)."""
        if limit <= 0:
            return self
        keep = np.concatenate([np.flatnonzero(self.labels == c)[:limit] for c in range(len(self.classes))])
        return self.take(np.sort(keep))


def digits() -> tuple[ImageArrays, None]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), as RGB uint8."""
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    images = np.repeat(gray[..., None], 3, axis=-1)
    return ImageArrays(images, d.target.astype(np.int64), [str(i) for i in range(10)]), None


def cifar_pickle(root: str, num_classes: int) -> tuple[ImageArrays, ImageArrays]:
    """CIFAR-10/100 from the standard python-pickle folder (train and test)."""
    folder = Path(root)
    sub = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    if (folder / sub).is_dir():
        folder = folder / sub
    if num_classes == 10:
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files, meta_file, label_key, names_key = [folder / "test_batch"], "batches.meta", "labels", "label_names"
    else:
        train_files, test_files = [folder / "train"], [folder / "test"]
        meta_file, label_key, names_key = "meta", "fine_labels", "fine_label_names"
    for f in [*train_files, *test_files, folder / meta_file]:
        if not f.is_file():
            raise DataError(f"CIFAR-{num_classes} file '{f}' is missing; expected the python-pickle folder "
                            f"({sub}/ with {', '.join(p.name for p in train_files[:2])}, ...)")

    def read(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            try:
                with open(f, "rb") as fh:
                    entry = pickle.load(fh, encoding="latin1")
            except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
                raise DataError(f"CIFAR file '{f}' cannot be read: {e}") from None
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    with open(folder / meta_file, "rb") as fh:
        classes = list(pickle.load(fh, encoding="latin1")[names_key])
    (xtr, ytr), (xte, yte) = read(train_files), read(test_files)
    return ImageArrays(xtr, ytr, classes), ImageArrays(xte, yte, classes)


def image_tree(root: str, on_corrupt: str) -> dict[str, ImageArrays]:
    """Decode an ImageFolder tree (a folder or a .tar/.tar.gz of one) into arrays per split.

    The tree has `train/<class>/*` and `val/<class>/*` or `test/<class>/*`, all images of one
    size. Class indices follow train's sorted class folder names (as torchvision's ImageFolder);
    another split may lack some of them but not add one.
    """
    files = _list_tree(root)
    splits: dict[str, ImageArrays] = {}
    # Labels follow train's classes, as on the uncached path; without train/, build_splits reports that.
    classes = sorted(c for (split, c) in files if split == "train") or sorted({c for (_, c) in files})
    for split, cls in files:
        _check_train_class(root, split, cls, classes)
    bad = 0
    for split in sorted({s for (s, _) in files}):
        images, labels = [], []
        for ci, cls in enumerate(classes):
            for name, read in files.get((split, cls), []):
                try:
                    with Image.open(io.BytesIO(read())) as im:
                        arr = np.asarray(im.convert("RGB"))
                except (UnidentifiedImageError, OSError, ValueError) as e:
                    if on_corrupt == "error":
                        raise DataError(f"image '{name}' cannot be decoded ({e.__class__.__name__}); "
                                        "set data.on_corrupt=skip to skip such files") from None
                    bad += 1
                    continue
                if images and arr.shape != images[0].shape:
                    raise DataError(f"image '{name}' is {arr.shape[1]}x{arr.shape[0]} but earlier images are "
                                    f"{images[0].shape[1]}x{images[0].shape[0]}; the array cache needs one size "
                                    "(set data.cache=false for mixed sizes)")
                images.append(arr)
                labels.append(ci)
        if not images:
            raise DataError(f"split '{split}' of '{root}' holds no readable images")
        splits[split] = ImageArrays(np.stack(images), np.asarray(labels, dtype=np.int64), classes)
    if bad:
        log.warning("skipped %d corrupt image(s) in %s", bad, root)
    return splits


def list_folder_samples(root: str, split: str,
                        classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, label) pairs of one split of an ImageFolder directory, for datasets too big to cache.

    Labels index `classes` (train's, so that a split lacking some of them is numbered alike);
    None numbers this split's own sorted class folders.
    """
    base = Path(root) / split
    if not base.is_dir():
        raise DataError(f"split folder '{base}' does not exist; expected {root}/<train|val|test>/<class>/")
    found = _class_files(base)
    if not found:
        raise DataError(f"split folder '{base}' has no class folders")
    classes = list(found) if classes is None else classes
    samples = []
    for cls, paths in found.items():
        _check_train_class(root, split, cls, classes)
        samples += [(str(p), classes.index(cls)) for p in paths]
    return samples, classes


def _class_files(split_dir: Path) -> dict[str, list[Path]]:
    """{class folder name: its image files}, both sorted, of one split folder."""
    out = {}
    for cdir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        imgs = [p for p in sorted(cdir.iterdir()) if p.suffix.lower() in IMAGE_EXTS]
        if not imgs:
            raise DataError(f"class folder '{cdir}' holds no images ({', '.join(IMAGE_EXTS)})")
        out[cdir.name] = imgs
    return out


def _check_train_class(root: str, split: str, cls: str, classes: list[str]) -> None:
    if cls not in classes:
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise DataError(f"class folder '{split}/{cls}' of '{root}' is not a class of train/; {split}/ may hold "
                        f"only train/'s {len(classes)} class folders ({shown})")


def _list_tree(root: str) -> dict[tuple[str, str], list]:
    """{(split, class): [(display name, reader)]} for a folder or a tar archive."""
    path = Path(root)
    out: dict[tuple[str, str], list] = {}
    if path.is_dir():
        for split_dir in sorted(p for p in path.iterdir() if p.is_dir()):
            for cls, imgs in _class_files(split_dir).items():
                out[(split_dir.name, cls)] = [(str(p), p.read_bytes) for p in imgs]
    elif path.is_file() and tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            for m in tar:
                parts = Path(m.name).parts
                if m.isfile() and len(parts) >= 3 and Path(m.name).suffix.lower() in IMAGE_EXTS:
                    data = tar.extractfile(m).read()
                    out.setdefault((parts[-3], parts[-2]), []).append((f"{path}:{m.name}", _const(data)))
        for v in out.values():
            v.sort(key=lambda item: item[0])
    else:  # build_splits has already reported a missing root
        raise DataError(f"data root '{root}' is neither a folder nor a tar archive of an ImageFolder tree")
    if not out:
        raise DataError(f"'{root}' holds no <split>/<class>/<image> files")
    return out


def tree_signature(root: Path) -> str:
    """A digest of what an image tree's cache depends on: for a folder every `<split>/<class>/<image>` name
    with its size and mtime (stat calls only, no reads), so added, removed or rewritten images change it;
    for a tar archive its own size and mtime."""
    if not root.is_dir():
        st = root.stat()
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha1()
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for cdir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            with os.scandir(cdir) as entries:
                for e in sorted(entries, key=lambda e: e.name):
                    if e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTS:
                        st = e.stat()
                        h.update(f"{split_dir.name}/{cdir.name}/{e.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _const(data: bytes):
    return lambda: data


def cached(key: str, cache_dir: str, build) -> dict[str, ImageArrays]:
    """Load arrays for `key` from the cache, or build them with `build()` and store them atomically."""
    folder = Path(cache_dir or os.environ.get("CREAM_CACHE_DIR", Path.home() / ".cache" / "cream"))
    name = hashlib.sha1(key.encode()).hexdigest()[:16]
    path = folder / f"arrays-{name}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                splits = [s[: -len("_images")] for s in z.files if s.endswith("_images")]
                classes = [str(c) for c in z["classes"]]
                return {s: ImageArrays(z[f"{s}_images"], z[f"{s}_labels"], classes) for s in splits}
        except (OSError, ValueError, KeyError):
            log.warning("array cache %s is unreadable; rebuilding it", path)
    splits = build()
    payload = {"classes": np.asarray(next(iter(splits.values())).classes)}
    for s, arr in splits.items():
        payload[f"{s}_images"], payload[f"{s}_labels"] = arr.images, arr.labels
    with atomic_path(path) as tmp:
        np.savez(tmp, **payload)
    return splits
