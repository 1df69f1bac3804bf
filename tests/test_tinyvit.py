"""TinyViT fast distillation: seeded replay, the original's store format, check mode, training from a store."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
import torch
from conftest import sets
from torch.utils.data import DataLoader

from cream.cli import main
from cream.config import RunConfig, load_config, with_overrides
from cream.data import build_splits
from cream.data.replay import PairMix, PairSampler, epoch_pairs, replay_dataset
from cream.errors import CreamError
from cream.profiling import create_model
from cream.teachers.losses import soft_cross_entropy, soft_target_loss
from cream.teachers.store import LogitStore, dense_probs, epoch_dir, record_dtype, sparse_probs
from cream.train import distributed
from cream.train.distill import Distill
from cream.train.engine import Engine, seed_everything
from cream.weights import save_weights
from cream.workflows import distill as wf
from cream.workflows.train_model import configured_model

K = 4
# 36 CIFAR-10 training images at 32 px, the whole TinyViT view: crop, flip, RandAugment, erasing, mixup/cutmix.
VIEW = ["data.name=imagefolder", "data.image_size=32", "data.train_per_class=4", "data.test_per_class=2",
        "data.train_crop=rrc", "data.hflip=0.5", "data.auto_augment=rand-m9-mstd0.5-inc1", "data.re_prob=0.25",
        "data.mixup=0.8", "data.cutmix=1.0", "data.batch_size=8", "data.eval_batch_size=36"]
RUN = ["model.name=test_efficientnet", "optim.sched=none", "train.epochs=2", "train.max_steps=3",
       "distill.teacher.kind=timm", "distill.teacher.name=test_resnet", f"distill.top_k={K}", "distill.loss=soft",
       "distill.alpha=1.0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cifar10_archive):
    """A store of 2 epochs written by 2 (simulated) ranks from a confident test_resnet teacher."""
    folder = tmp_path_factory.mktemp("tinyvit")
    teacher = create_model("test_resnet", num_classes=10)
    teacher.get_classifier().weight.data.mul_(100)  # confident, as a trained teacher is: top-4 hold most mass
    save_weights(teacher, folder / "teacher.safetensors")
    items = [*VIEW, *RUN, f"data.root={cifar10_archive}", f"distill.teacher.weights={folder / 'teacher.safetensors'}",
             f"distill.store={folder / 'store'}"]
    cfg = load_config(RunConfig, None, items)
    splits = build_splits(cfg.data)
    seen: dict[tuple[int, int], torch.Tensor] = {}  # (rank, epoch) -> the images the teacher saw
    with pytest.MonkeyPatch.context() as mp:  # rank 1 writes its files first; rank 0 writes its own and publishes
        mp.setattr(distributed.dist, "barrier", lambda: None)
        mp.setattr(wf, "build_splits", lambda _data: splits)  # (decoded once: the test's time)
        build = wf.online_teacher
        for rank in (1, 0):
            mp.setattr(wf, "init_distributed", lambda _t, r=rank: distributed.Dist(r, 2))
            mp.setattr(wf, "online_teacher", lambda c, sp, r=rank: Recording(build(c, sp), seen, r, c.train.epochs))
            assert wf.save_logits(cfg)["epochs_written"] == [0, 1]
    return cfg, items, folder / "store", splits, seen


class Recording:
    """A teacher that also keeps the images of each of its calls (one batch per epoch here) by (rank, epoch)."""

    sees_images = True

    def __init__(self, teacher, seen, rank, epochs) -> None:
        self.teacher, self.seen, self.rank, self.epochs = teacher, seen, rank, iter(range(epochs))

    def to(self, device):
        return self

    def __call__(self, images, keys=None):
        self.seen[self.rank, next(self.epochs)] = images.clone()
        return self.teacher(images)


def test_a_store_written_by_two_ranks_is_read_by_one_in_the_original_byte_format(setup):
    cfg, _, path, _, _ = setup
    folder = path / epoch_dir(K, 1)
    assert sorted(p.name for p in folder.iterdir()) == ["rank0-keys.txt", "rank0-values.bin", "rank1-keys.txt",
                                                        "rank1-values.bin"]
    keys = (folder / "rank1-keys.txt").read_text().split()
    raw = (folder / "rank1-values.bin").read_bytes()
    assert len(raw) == len(keys) * (4 + 4 * K) == record_dtype(K).itemsize * len(keys)
    seed, *rest = struct.unpack(f"<i{K}h{K}e", raw[:4 + 4 * K])  # the first record, by hand
    store = LogitStore(path, 10, K)
    values, classes = store.lookup([(int(keys[0]), seed)])
    assert classes[0].tolist() == rest[:K] and values[0].tolist() == rest[K:]
    # one reader sees every sample of the 18 pairs (the two ranks' 9 each), each with its seed
    seeds = store.seeds(1)
    assert len(seeds) == 36 and (seeds >= 0).all() and len(set(seeds.tolist())) == 36
    assert sum(len((folder / f"rank{r}-keys.txt").read_text().split()) for r in (0, 1)) == 36


def test_replay_gives_the_same_view_bit_for_bit_and_check_finds_the_teachers_top_k(setup, capsys):
    cfg, items, path, splits, seen = setup
    store = LogitStore(path, 10, K)
    ds = replay_dataset(splits.train, cfg.data)
    for (rank, epoch), images in seen.items():  # every stored (index, epoch): the teacher's image, bit for bit
        indices = epoch_pairs(36, cfg.train.seed, epoch)[rank::2].flatten().tolist()
        replayed = ds.__getitems__([(i, int(store.seeds(epoch)[i])) for i in indices])
        assert len(seen) == 4 and torch.equal(torch.stack([x for x, _ in replayed]), images)
    pairs = epoch_pairs(36, cfg.train.seed, 1)[:3].flatten().tolist()
    keys = [(i, int(store.seeds(1)[i])) for i in pairs]
    state = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    first = torch.stack([x for x, _ in ds.__getitems__(keys)])
    # in reverse order each pair is swapped; its mix is symmetric, so the same views come back reversed
    again = torch.stack([x for x, _ in reversed(ds.__getitems__(keys[::-1]))])
    assert torch.equal(again, first)
    assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert np.array_equal(np.random.get_state()[1], state[2])  # no global generator was read
    loader = DataLoader(ds, batch_sampler=[keys], num_workers=1)  # a worker process makes the same views
    assert torch.equal(next(iter(loader))[0], first)
    other = torch.stack([x for x, _ in ds.__getitems__([(i, s + 1) for i, s in keys])])
    assert (other - first).abs().amax((1, 2, 3)).min() > 0.1  # another seed, another view
    # check mode: the teacher on the replayed (mixed) views gives the stored top-K
    assert main(["distill", "check", "--json", *sets(items)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["epochs"] == [0, 1] and report["records"] == 72
    assert report["index_mismatch"] == 0.0 and report["max_value_error"] <= 2 ** -12  # fp16 rounding of p <= 1


def test_pairs_do_not_depend_on_the_world_size():
    seeds = np.arange(1000, 1040)
    one = [b for b in PairSampler(40, 8, lambda e: seeds, seed=5)]
    two = [PairSampler(40, 4, lambda e: seeds, seed=5, rank=r, world=2) for r in (0, 1)]
    merged = [a + b for a, b in zip(*two, strict=True)]
    assert merged == one and all(s == 1000 + i for batch in one for i, s in batch)
    got = {(batch[k][0], batch[k + 1][0]) for batch in one for k in (0, 2, 4, 6)}
    assert got == {tuple(p) for p in epoch_pairs(40, 5, 0).tolist()}
    resumed = PairSampler(40, 8, lambda e: seeds, seed=5)
    resumed.set_epoch(0, start_batch=3)  # what a resumed run asks for
    assert len(resumed) == 2 and list(resumed) == one[3:]


def test_pair_mix_draws_from_the_xor_of_the_two_seeds():
    mix = PairMix(0.8, 1.0)
    x = torch.randn(4, 3, 8, 8)
    out = mix(x, [3, 5, 6, 0])  # 3 ^ 5 == 6 ^ 0: both pairs mix alike
    lam, box = mix.params(3, 5, 8, 8)
    assert mix.params(6, 0, 8, 8) == (lam, box) and 0 <= lam <= 1
    if box is None:
        assert torch.allclose(out[0], lam * x[0] + (1 - lam) * x[1])
        assert torch.allclose(out[1], lam * x[1] + (1 - lam) * x[0])
    else:
        y0, y1, x0, x1 = box
        assert torch.equal(out[0, :, y0:y1, x0:x1], x[1, :, y0:y1, x0:x1])
        assert torch.equal(out[1, :, y0:y1, x0:x1], x[0, :, y0:y1, x0:x1])
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 64)
    assert torch.equal(out[2:], mix(x[2:], [6, 0]))


def test_store_student_equals_online_student_within_top_k(setup):
    """Same init, same replayed views; one reads the store, the other runs the teacher: the losses differ only
    by the top-K approximation (the teacher's tail mass spread evenly), so the weights stay close."""
    cfg = with_overrides(setup[0], {"optim": {"opt": "momentum", "lr": 0.001, "weight_decay": 0.0}})
    splits = wf.distill_splits(cfg, setup[3])
    runs = []
    for teacher in (wf.build_teacher(cfg, splits), wf.online_teacher(cfg, splits)):
        seed_everything(cfg.train.seed)
        engine = Engine(cfg, configured_model(cfg, 10), splits, None, Distill(teacher, "soft", 1.0, 1.0))
        start = [p.detach().clone() for p in engine.model.parameters()]
        engine.fit()
        runs.append((start, [p.detach() for p in engine.model.parameters()]))
    (s0, store_w), (s1, online_w) = runs
    assert all(torch.equal(a, b) for a, b in zip(s0, s1, strict=True))
    moved = sum(float((w - s).norm() ** 2) for w, s in zip(online_w, s1, strict=True)) ** 0.5
    apart = sum(float((a - b).norm() ** 2) for a, b in zip(store_w, online_w, strict=True)) ** 0.5
    assert moved > 0 and apart < 0.05 * moved


def test_sparse_soft_target_loss_is_cross_entropy_against_the_rebuilt_target():
    logits, student = torch.randn(3, 10) * 4, torch.randn(3, 10)
    values, classes = sparse_probs(logits, K)
    target = dense_probs(values, classes, 10)
    assert torch.allclose(target.sum(-1), torch.ones(3), atol=1e-3)
    rest = (1 - values.float().sum(-1)) / (10 - K)
    mask = torch.ones(3, 10, dtype=torch.bool).scatter_(1, classes.long(), False)
    assert torch.allclose(target[mask].view(3, 6), rest[:, None].expand(3, 6))
    store_logits = target.log()  # what the store teacher returns
    assert torch.allclose(soft_target_loss(student, store_logits, 1.0), soft_cross_entropy(student, target), atol=1e-5)


def test_a_killed_pass_resumes_bit_identically(setup):
    cfg, _, path, splits, _ = setup
    folder = path / epoch_dir(K, 1)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    folder.rename(path / f".{epoch_dir(K, 1)}.partial")  # killed before publishing epoch 1
    (path / f".{epoch_dir(K, 1)}.partial" / "rank0-values.bin").write_bytes(b"half")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wf, "init_distributed", lambda _t: distributed.Dist(0, 2))
        mp.setattr(distributed.dist, "barrier", lambda: None)
        mp.setattr(wf, "build_splits", lambda _data: splits)
        assert wf.save_logits(cfg, (0, 2))["epochs_written"] == [1]  # rank 0 redoes its part only
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
        with pytest.raises(CreamError, match=r"written for another run \(differs in \['top_k'\]\)"):
            wf.save_logits(with_overrides(cfg, {"distill": {"top_k": 3}}), (0, 1))


def test_classes_beyond_int16_are_refused():
    with pytest.raises(CreamError, match="32767"):
        sparse_probs(torch.zeros(1, 40000), 5)


def test_bad_store_settings_are_one_line_errors(setup):
    cfg, _, _, splits, _ = setup
    for overrides, message in [
        ({"distill": {"store": "nowhere"}}, "'nowhere' is not a logit store (no such folder)"),
        ({"distill": {"top_k": 5}}, "holds top-[4] records, not top-5 (distill.top_k)"),
        ({"data": {"hflip": 0.0}}, "config key 'data.hflip' = 0.0 differs from the logit store"),
        ({"train": {"epochs": 3}}, "is a logit store without epochs [2]"),
    ]:
        with pytest.raises(CreamError) as e:
            wf.distill_splits(with_overrides(cfg, overrides), splits)
        assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CreamError, match="config key 'data.cutout' = 16 is not replayed from a seed"):
        replay_dataset(splits.train, with_overrides(cfg, {"data": {"cutout": 16}}).data)
    with pytest.raises(CreamError, match="config key 'data.batch_size' = 7 must be even"):
        replay_dataset(splits.train, cfg.data, lambda e: np.zeros(36)).batch_sampler(7, seed=0)


def test_retrain_from_the_store_never_runs_the_teacher(setup, tmp_path, capsys):
    items = setup[1]
    rc = main(["retrain", "--out", str(tmp_path / "run"), "--json", *sets(items),
               "--set", "distill.teacher.name=no_such_net"])  # an online teacher would fail to build
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3


@pytest.mark.parametrize("policy", ["rand-m9-mstd0.5-inc1", "rand-m10-n3-mstd1-p1"])
def test_every_randaugment_op_runs_and_is_a_function_of_the_seed(policy):
    from PIL import Image

    from cream.data.replay import RandAugment, sample_rng

    ra = RandAugment(policy, (128, 128, 128), Image.BILINEAR)
    ra.layers, ra.prob = 1, 1.0
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    names = set()
    for seed in range(200):
        names.add(ra.names[int(sample_rng(seed).integers(0, len(ra.names)))])
        out = np.asarray(ra(img, sample_rng(seed)))
        assert np.array_equal(out, np.asarray(ra(img, sample_rng(seed))))
    assert names == set(ra.names)  # 200 seeds reach all 15 ops


def test_a_store_in_the_original_layout_without_our_meta_loads(tmp_path):
    """Bytes packed by hand as the original's writer does (no meta.json): the reader takes classes from the run."""
    folder = tmp_path / "logits_top2_epoch0"
    folder.mkdir()
    records = {3: (77, (4, 1), (0.75, 0.125)), 0: (5, (0, 2), (0.5, 0.25))}
    (folder / "rank0-keys.txt").write_text("".join(f"{k}\n" for k in records))
    packed = [struct.pack("<i2h2e", seed, *c, *v) for seed, c, v in records.values()]
    (folder / "rank0-values.bin").write_bytes(b"".join(packed))
    store = LogitStore(tmp_path, num_classes=5)
    assert store.top_k == 2 and store.epochs == [0] and store.seeds(0).tolist() == [5, -1, -1, 77]
    values, classes = store.lookup([(3, 77), (0, 5)])
    assert classes.tolist() == [[4, 1], [0, 2]] and values.float().tolist() == [[0.75, 0.125], [0.5, 0.25]]
    assert torch.allclose(store(None, [(3, 77)]).softmax(-1), torch.tensor([[0.125 / 3, 0.125, 0.125 / 3,
                                                                              0.125 / 3, 0.75]]))
    (folder / "rank0-keys.txt").write_text("n01440764/a.JPEG\nn01440764/b.JPEG\n")
    with pytest.raises(CreamError, match="has key 'n01440764/a.JPEG'; this reader keys samples by their index"):
        LogitStore(tmp_path, num_classes=5).lookup([(3, 77)])
    with pytest.raises(CreamError, match="has no meta.json; its number of classes must be given"):
        LogitStore(tmp_path)
