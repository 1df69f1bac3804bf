import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cream.config import DataConfig
from cream.data import build_splits, train_loader
from cream.data.sampler import ShardedBatchSampler
from cream.errors import DataError


def _tree(root, sizes=(("train", 6), ("test", 2)), classes=("a", "b", "c")):
    rng = np.random.default_rng(0)
    for split, n in sizes:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(d / f"{i:03d}.png")
    return root


def test_digits_splits_are_disjoint_and_seeded():
    cfg = DataConfig()
    s = build_splits(cfg)
    assert s.num_classes == 10
    total = len(s.train) + len(s.val) + len(s.test)
    assert total == 1797
    assert len(s.test) == round(1797 * 0.2)
    x, y = s.train[0]
    assert x.shape == (3, cfg.image_size, cfg.image_size) and 0 <= y < 10
    s2 = build_splits(cfg)
    assert torch.equal(s.val[3][0], s2.val[3][0])


def test_imagefolder_dir_and_tar_agree(tmp_path):
    root = _tree(tmp_path / "tree")
    tar = tmp_path / "tree.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        for p in sorted(root.rglob("*.png")):
            t.add(p, arcname=str(p.relative_to(root)))
    common = dict(name="imagefolder", image_size=12, val_fraction=0.0, cache_dir=str(tmp_path / "cache"))
    a = build_splits(DataConfig(root=str(root), **common))
    b = build_splits(DataConfig(root=str(tar), **common))
    assert len(a.train) == len(b.train) == 18 and len(a.test) == 6 and a.num_classes == 3
    assert np.array_equal(a.train.arrays.images, b.train.arrays.images)
    assert list(a.train.targets) == [0] * 6 + [1] * 6 + [2] * 6
    assert len(list((tmp_path / "cache").glob("arrays-*.npz"))) == 2
    uncached = build_splits(DataConfig(root=str(root), **{**common, "cache": False}))
    assert torch.allclose(uncached.test[4][0], a.test[4][0])


def test_array_cache_notices_images_added_removed_or_rewritten_inside_class_folders(tmp_path):
    """Changing a class folder leaves the root folder's own size and mtime as they were; the cache must still
    notice (it is keyed by every image's name, size and mtime)."""
    root = _tree(tmp_path / "tree")
    cfg = DataConfig(name="imagefolder", root=str(root), image_size=12, val_fraction=0.0,
                     cache_dir=str(tmp_path / "cache"))
    assert len(build_splits(cfg).train) == 18
    root_stat = root.stat()
    Image.new("RGB", (12, 12), (7, 7, 7)).save(root / "train" / "a" / "new.png")
    assert len(build_splits(cfg).train) == 19
    (root / "train" / "b" / "000.png").unlink()
    assert len(build_splits(cfg).train) == 18
    Image.new("RGB", (12, 12), (200, 0, 0)).save(root / "train" / "a" / "new.png")
    first = build_splits(cfg).train.arrays.images[6]  # train/a/new.png follows 000..005.png
    assert first[0, 0].tolist() == [200, 0, 0]
    assert (root.stat().st_size, root.stat().st_mtime_ns) == (root_stat.st_size, root_stat.st_mtime_ns)
    assert len(list((tmp_path / "cache").glob("arrays-*.npz"))) == 4


@pytest.mark.parametrize("held_out", ["test", "val"])
def test_imagefolder_labels_follow_train_classes(tmp_path, held_out):
    root = _tree(tmp_path / "tree", sizes=(("train", 6),))
    _tree(root, sizes=((held_out, 2),), classes=("a", "c"))  # class b missing from the held-out split
    common = dict(name="imagefolder", image_size=12, val_fraction=0.0, cache_dir=str(tmp_path / "cache"))
    cached = build_splits(DataConfig(root=str(root), **common))
    uncached = build_splits(DataConfig(root=str(root), cache=False, **common))
    assert cached.num_classes == uncached.num_classes == 3
    assert list(cached.test.targets) == [0, 0, 2, 2]
    assert [y for _, y in uncached.test.samples] == [0, 0, 2, 2]
    assert [y for _, y in uncached.train.samples] == [0] * 6 + [1] * 6 + [2] * 6

    extra = _tree(tmp_path / "extra", sizes=(("train", 6),), classes=("a", "b"))
    _tree(extra, sizes=((held_out, 2),), classes=("a", "d"))  # a class train does not have
    for cache in (True, False):
        with pytest.raises(DataError, match=f"'{held_out}/d'.*not a class of train"):
            build_splits(DataConfig(root=str(extra), **{**common, "cache": cache}))


def test_imagefolder_errors(tmp_path):
    common = dict(name="imagefolder", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="does not exist"):
        build_splits(DataConfig(root=str(tmp_path / "missing"), **common))
    root = _tree(tmp_path / "t1")
    (root / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*holds no images"):
        build_splits(DataConfig(root=str(root), **common))
    with pytest.raises(DataError, match="holds no images"):
        build_splits(DataConfig(root=str(root), cache=False, **common))
    root2 = _tree(tmp_path / "t2")
    bad = root2 / "train" / "b" / "999.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="999.png"):
        build_splits(DataConfig(root=str(root2), **common))
    s = build_splits(DataConfig(root=str(root2), on_corrupt="skip", val_fraction=0.0, **common))
    assert len(s.train) == 18
    with pytest.raises(DataError, match="needs data.root"):
        build_splits(DataConfig(name="cifar10"))


def test_cifar_pickle_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    s = build_splits(DataConfig(name="cifar10", root=str(tmp_path), image_size=32, val_fraction=0.25))
    assert len(s.train) == 15 and len(s.val) == 5 and len(s.test) == 4 and s.num_classes == 10
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        build_splits(DataConfig(name="cifar10", root=str(tmp_path)))


def test_sharded_sampler_matches_one_process_and_resumes():
    one = ShardedBatchSampler(50, 8, seed=3)
    ranks = [ShardedBatchSampler(50, 4, seed=3, rank=r, world=2) for r in range(2)]
    for s in [one, *ranks]:
        s.set_epoch(2)
    for b1, b_r0, b_r1 in zip(one, ranks[0], ranks[1], strict=True):
        assert b1 == b_r0 + b_r1
    full = list(one)
    one.set_epoch(2, start_batch=3)
    assert list(one) == full[3:]
    one.set_epoch(3)
    assert list(one) != full


def test_augmentation_is_a_function_of_the_sample_key():
    cfg = DataConfig(train_crop="pad", pad=3, hflip=0.5)
    ds = build_splits(cfg).train
    torch.manual_seed(0)
    a = ds[(5, 1234)][0]
    torch.manual_seed(99)
    state = torch.get_rng_state()
    b = ds[(5, 1234)][0]
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())  # the caller's stream is untouched
    assert not torch.equal(a, ds[(5, 4321)][0]) or not torch.equal(a, ds[(5, 777)][0])


def test_real_cifar10_archive(cifar10_archive, tmp_path):
    cfg = DataConfig(name="imagefolder", root=str(cifar10_archive), image_size=32, train_per_class=20,
                     test_per_class=10, cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    s = build_splits(cfg)
    assert s.num_classes == 10 and s.train.classes[0] == "airplane"
    assert len(s.train) + len(s.val) == 200 and len(s.test) == 100
    loader = train_loader(s.train, 16, seed=0)
    images, labels = next(iter(loader))
    assert images.shape == (16, 3, 32, 32) and labels.max() < 10
