"""Distillation: teachers, losses, `cream retrain` with a teacher, and the logit store."""

from __future__ import annotations

import copy
import json
import random
from itertools import islice

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CREAM, sets

from cream.cli import main
from cream.config import RunConfig, load_config, to_dict, with_overrides
from cream.data import build_splits, train_loader, with_keys
from cream.errors import CreamError
from cream.profiling import create_model
from cream.teachers.losses import hard_label_loss, kl_loss, soft_target_loss
from cream.teachers.store import LogitStore, dense_logits, sparse_probs
from cream.train.engine import Engine, seed_everything
from cream.weights import save_weights
from cream.workflows.distill import build_teacher, distill_strategy, write_logit_store
from cream.workflows.train_model import configured_model

# A tiny student and a larger (untrained) teacher on 16 px digits with random pad-crops and flips.
BASE = ["data.image_size=16", "data.batch_size=16", "data.train_crop=pad", "data.pad=2", "data.hflip=0.5",
        "model.name=test_efficientnet", "optim.sched=none", "train.epochs=2", "train.max_steps=2",
        "distill.teacher.kind=timm", "distill.teacher.name=test_resnet"]


def config(*extra: str) -> RunConfig:
    return load_config(RunConfig, None, [*BASE, *extra])


def engine_for(cfg: RunConfig) -> Engine:
    seed_everything(cfg.train.seed)
    splits = build_splits(cfg.data)
    return Engine(cfg, configured_model(cfg, splits.num_classes), splits, None, distill_strategy(cfg, splits))


def test_one_step_loss_is_label_loss_and_tempered_kl_by_the_weight():
    engine = engine_for(config("distill.alpha=0.3", "distill.temperature=4"))
    keys, (images, targets) = next(with_keys(engine.train_loader))
    student, teacher = copy.deepcopy(engine.model), engine.strategy.teacher.model
    loss = engine.train_step(images, targets, keys)
    with torch.no_grad():
        s, t = student(images).double(), teacher(images).double()
    p = torch.exp(t / 4 - torch.logsumexp(t / 4, 1, keepdim=True))
    log_q = s / 4 - torch.logsumexp(s / 4, 1, keepdim=True)
    kl = 16 * (p * (p.log() - log_q)).sum(1).mean()
    ce = (torch.logsumexp(s, 1) - s[torch.arange(len(s)), targets]).mean()
    assert kl > 1e-4  # the untrained teacher disagrees with the student: the term matters
    assert loss == pytest.approx(float(0.7 * ce + 0.3 * kl), rel=1e-5)


def test_losses_against_their_definitions():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g) * 3
    assert float(kl_loss(t, t, 2.0)) == pytest.approx(0, abs=1e-6)
    p = (t / 2).softmax(-1)
    entropy = -(p * p.log()).sum(-1).mean()
    assert float(soft_target_loss(s, t, 2.0) - kl_loss(s, t, 2.0)) == pytest.approx(4 * float(entropy), rel=1e-5)
    assert float(hard_label_loss(s, t, 9.0)) == pytest.approx(float(F.cross_entropy(s, t.argmax(-1))))


def test_mixup_targets_stay_soft_and_the_teacher_sees_the_mixed_images():
    engine = engine_for(config("data.mixup=0.8", "distill.alpha=0.5"))
    seen = {}
    teacher, criterion = engine.strategy.teacher, engine.criterion
    engine.strategy.teacher = lambda x, keys: seen.setdefault("teacher", (x, teacher(x, keys)))[1]
    engine.criterion = lambda out, y: seen.setdefault("label", (out, y, criterion(out, y)))[2]
    keys, (images, targets) = next(with_keys(engine.train_loader))
    raw = images.clone()  # timm's mixup mixes in place
    loss = engine.train_step(images, targets, keys)
    mixed, t = seen["teacher"]
    out, soft_targets, label_loss = seen["label"]
    assert soft_targets.shape == (16, 10) and not torch.allclose(mixed, raw)
    assert loss == pytest.approx(float((0.5 * label_loss + 0.5 * kl_loss(out, t, 1.0)).detach()), rel=1e-5)


def test_keys_name_the_images_the_loader_loaded():
    """The engine's keys come from a second pass over the sampler; with worker processes too."""
    splits = build_splits(config().data)
    loader = train_loader(splits.train, 8, seed=3, workers=1)
    loader.batch_sampler.set_epoch(2, start_batch=5)
    for keys, (images, targets) in islice(with_keys(loader), 2):
        assert torch.equal(images, torch.stack([splits.train[k][0] for k in keys]))
        assert targets.tolist() == [splits.train[k][1] for k in keys]


def test_sparse_round_trip():
    logits = torch.tensor([[4.0, 2.0, 0.0, -1.0, -3.0]])
    values, classes = sparse_probs(logits, 2)
    assert values.dtype == torch.float16 and classes.dtype == torch.int16
    dense = dense_logits(values, classes, 5).softmax(-1)[0]
    p = logits.softmax(-1)[0]
    assert torch.allclose(dense[:2], p[:2], rtol=1e-3)
    assert torch.allclose(dense[2:], torch.full((3,), float(p[2:].sum()) / 3), rtol=1e-2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of 2 epochs written from a test_resnet teacher whose weights are in a file."""
    folder = tmp_path_factory.mktemp("store")
    teacher = create_model("test_resnet", num_classes=10)
    teacher.get_classifier().weight.data.mul_(30)  # confident, as a trained teacher is, so top-k matters
    save_weights(teacher, folder / "teacher.safetensors")
    cfg = config("distill.top_k=4", f"distill.teacher.weights={folder / 'teacher.safetensors'}")
    path = folder / "logits"
    summary = write_logit_store(cfg, path)
    assert summary["epochs_written"] == 2
    return cfg, path


def test_store_replays_the_online_teacher_for_the_same_key(store):
    cfg, path = store
    splits = build_splits(cfg.data)
    online, replay = build_teacher(cfg, splits), LogitStore(path)
    engine = engine_for(cfg)
    engine.train_loader.batch_sampler.set_epoch(1)
    keys, (images, _) = next(with_keys(engine.train_loader))
    p_online, p_store = online(images).softmax(-1), replay(images, keys).softmax(-1)
    top = p_online.topk(4, -1)
    assert torch.allclose(p_store.gather(1, top.indices), top.values, rtol=2e-3, atol=1e-4)  # fp16 top-k
    rest = (1 - top.values.sum(-1, keepdim=True)) / 6  # the other 6 classes share what is left
    mask = torch.ones_like(p_store, dtype=torch.bool).scatter_(1, top.indices, False)
    assert torch.allclose(p_store[mask].view(16, 6), rest.expand(-1, 6), atol=1e-3)
    # The same images under another epoch's augmentation seed: the teacher saw other crops and flips.
    other = [(i, seed + 1) for i, seed in keys]
    shifted = online(torch.stack([splits.train[k][0] for k in other])).softmax(-1)
    differs = (shifted.gather(1, top.indices) - top.values).abs().amax(1) > 1e-2
    assert int(differs.sum()) >= 8
    with pytest.raises(CreamError, match="no entry for sample"):
        replay(images, other)


def test_store_resumes_and_refuses_another_run(store):
    cfg, path = store
    epoch1 = path / "epoch-0001.safetensors"
    before = epoch1.read_bytes()
    epoch1.unlink()  # as if the writer had been killed during epoch 1
    assert write_logit_store(cfg, path)["epochs_written"] == 1
    assert epoch1.read_bytes() == before
    with pytest.raises(CreamError, match=r"written for another run \(differs in \['top_k'\]\)"):
        write_logit_store(with_overrides(cfg, {"distill": {"top_k": 3}}), path)


def test_retrain_replays_a_store(store, tmp_path, capsys):
    cfg, path = store
    rc = main(["retrain", "--out", str(tmp_path / "run"), "--json", *sets(BASE),
               "--set", f"distill.teacher.weights={cfg.distill.teacher.weights}",
               "--set", "distill.teacher.kind=store", "--set", f"distill.teacher.path={path}"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    # the same run without the teacher trains to other weights: the store's targets reached the loss
    assert main(["retrain", "--out", str(tmp_path / "plain"), "--json", *sets(BASE)]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["steps"] == 2 and plain["test_loss"] != summary["test_loss"]


def test_supernet_path_teacher_is_the_frozen_path_of_a_supernet_run(tmp_path):
    """A `cream supernet` run folder (config.yaml + weights) gives the path's eval outputs, without gradients."""
    import yaml

    from cream.workflows.supernet import SUPERNET_WEIGHTS, new_supernet, resolve_space

    run_cfg = load_config(RunConfig, None, base={"space": TINY_CREAM, "data": {"image_size": 32}})
    net = new_supernet(run_cfg, resolve_space(run_cfg, 10))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(run_cfg)))
    save_weights(net, tmp_path / SUPERNET_WEIGHTS)
    arch = net.space.sample(random.Random(1))
    cfg = config("distill.teacher.kind=supernet", f"distill.teacher.path={tmp_path}", "data.image_size=32")
    cfg = with_overrides(cfg, {"distill": {"teacher": {"arch": arch}}})
    teacher = build_teacher(cfg, build_splits(cfg.data))
    x = torch.randn(4, 3, 32, 32)
    out = teacher(x)
    assert not out.requires_grad and not teacher.net.training
    assert torch.allclose(out, net.extract(arch).eval()(x), atol=1e-5)


@pytest.mark.parametrize(("settings", "message"), [
    (["distill.teacher.kind=teacherish"], "config key 'distill.teacher.kind' = 'teacherish' is not allowed"),
    (["distill.teacher.name="], "config key 'distill.teacher.name' is empty; teacher kind 'timm' needs it"),
    (["distill.teacher.name=no_such_net"], "model 'no_such_net' is not a known timm model"),
    (["distill.loss=fuzzy"], "config key 'distill.loss' = 'fuzzy' is not available; choose one of"),
    (["distill.alpha=1.5"], "config key 'distill.alpha' = 1.5 is out of range"),
    (["distill.teacher.kind=supernet", "distill.teacher.path=nowhere", "distill.teacher.arch={depth: 1}"],
     "config key 'distill.teacher.path' = 'nowhere' is not a `cream supernet` run folder"),
    (["distill.teacher.kind=store", "distill.teacher.path=nowhere"], "'nowhere' is not a logit store"),
    (["distill.teacher.kind=store", "distill.teacher.path=STORE", "train.seed=3"],
     "is a logit store written for seed = 0, but this run has 3"),
    (["distill.teacher.kind=store", "distill.teacher.path=STORE", "data.cutmix=1.0"],
     "'store' cannot be used with data.mixup or data.cutmix"),
])
def test_bad_teacher_configs_are_one_line_errors(settings, message, store, tmp_path, capsys):
    settings = [s.replace("STORE", str(store[1])) for s in settings]
    rc = main(["retrain", "--out", str(tmp_path / "run"), *sets([*BASE, *settings])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
