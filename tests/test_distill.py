"""Distillation: teachers, losses, `cream retrain` with a teacher (logit stores: test_tinyvit.py)."""

from __future__ import annotations

import copy
import random
from itertools import islice

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CREAM, sets

from cream.cli import main
from cream.config import RunConfig, load_config, to_dict, with_overrides
from cream.data import build_splits, train_loader, with_keys
from cream.teachers.losses import hard_label_loss, kl_loss, soft_target_loss
from cream.teachers.store import dense_logits, sparse_probs
from cream.train.engine import Engine, seed_everything
from cream.weights import save_weights
from cream.workflows.distill import build_teacher, distill_strategy
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
    (["distill.store=nowhere"], "'nowhere' is not a logit store"),
])
def test_bad_teacher_configs_are_one_line_errors(settings, message, tmp_path, capsys):
    rc = main(["retrain", "--out", str(tmp_path / "run"), *sets([*BASE, *settings])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
