"""The mixed NB201 supernet and first-order DARTS: α on held-out batches only, arch.json, SIGKILL resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import kill_at_checkpoint, nested_equal
from torch import nn

import cream
from cream.cli import main
from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.errors import ConfigError
from cream.models import build_model
from cream.run_dir import RunDir
from cream.spaces.nb201 import OPS
from cream.train.checkpoint import list_checkpoints, load
from cream.train.engine import Engine, seed_everything
from cream.train.strategies import make_strategy
from cream.workflows.supernet import load_supernet, new_supernet, resolve_space, train_supernet

SPACE = {"preset": "nb201", "channels": 4, "cells_per_stage": 1, "input_size": 16}
# 100 digits at 16 px: 50 to train on (5 steps an epoch), 50 held out (5 batches a pass).
TINY = [f"space={json.dumps(SPACE)}", "data.name=digits", "data.image_size=16", "data.train_per_class=10",
        "data.val_fraction=0.5", "data.batch_size=10", "data.eval_batch_size=50", "train.threads=1",
        "train.deterministic=true", "strategy.name=darts", "optim.opt=sgd", "optim.lr=0.05", "optim.sched=cosine",
        "train.log_every=1"]
ARCH = {"ops": ["avg_pool_3x3", "none", "nor_conv_1x1", "skip_connect", "none", "nor_conv_3x3"]}


def _cfg(*extra: str) -> RunConfig:
    return load_config(RunConfig, None, [*TINY, *extra])


# --- the mixed supernet ------------------------------------------------------------------------
def test_mixed_supernet_one_hot_equals_single_path_and_extract_equals_build_model():
    torch.manual_seed(0)
    net = cream.supernet(SPACE, kind="mixed")
    single = cream.supernet(SPACE)
    assert net.kind == "mixed" and [p.shape for p in net.arch_parameters()] == [(6, 5)]
    x = torch.randn(4, 3, 16, 16)
    net(x).logsumexp(1).mean().backward()  # move weights and BN statistics away from their init
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    single.load_state_dict({k: v for k, v in net.state_dict().items() if k != "alphas"})
    assert net.alphas.grad is not None and net.alphas.grad.abs().sum() > 0  # α is in the mixed graph
    path = {id(p) for p in net.path_parameters()}
    assert id(net.alphas) not in path and len(path) == len(list(net.parameters())) - 1

    net.eval(), single.eval()
    with torch.no_grad():
        mixed_before = net(x)
        one_hot = torch.full_like(net.alphas, float("-inf"))
        one_hot[torch.arange(6), torch.tensor([OPS.index(op) for op in ARCH["ops"]])] = 0.0
        net.alphas.copy_(one_hot)
        reference = single(x, arch=ARCH)
        assert torch.equal(net(x), reference)  # softmax(one-hot) = the single path, exactly
        assert not torch.equal(mixed_before, reference)
        assert net.derive() == ARCH and net.arch is None
        assert torch.equal(net(x, arch=ARCH), reference) and net.arch is None  # one path, selection kept
        child = net.extract(ARCH).eval()
        built = build_model(net.space, ARCH)
        assert type(child) is type(built) and child.state_dict().keys() == built.state_dict().keys()
        built.load_state_dict(child.state_dict())
        assert torch.equal(child(x), reference) and torch.equal(built.eval()(x), reference)
        net.alphas.zero_()
        net.alphas[:, OPS.index("skip_connect")] = 1.0
        assert net.derive() == {"ops": ["skip_connect"] * 6}


# --- the strategy -------------------------------------------------------------------------------
def test_darts_kwargs_and_supernet_kind_are_checked():
    space = cream.supernet(SPACE).space
    with pytest.raises(ConfigError, match="'strategy.kwargs.arch_betas' = \\[0.5\\] is not allowed"):
        make_strategy(_cfg("strategy.kwargs={arch_betas: [0.5]}").strategy, space, 0)
    cfg = _cfg()
    splits = build_splits(cfg.data)
    with pytest.raises(ConfigError, match="strategy 'darts' needs a mixed supernet"):
        Engine(cfg, cream.supernet(dict(SPACE, num_classes=10)), splits, None, make_strategy(cfg.strategy, space, 0))
    cfg = _cfg("data.val_fraction=0")
    splits = build_splits(cfg.data)
    engine = Engine(cfg, new_supernet(cfg, space), splits, None, make_strategy(cfg.strategy, space, 0))
    with pytest.raises(ConfigError, match="strategy 'darts' draws batches from the val split, which this run does "
                                          r"not have \(set data.val_fraction > 0\)"):
        engine.train_step(*next(iter(engine.train_loader)))


def test_architecture_parameters_step_only_on_held_out_batches():
    cfg = _cfg()
    seed_everything(0, True, 1)
    splits = build_splits(cfg.data)
    space = resolve_space(cfg, splits.num_classes)
    engine = Engine(cfg, new_supernet(cfg, space), splits, None, make_strategy(cfg.strategy, space, 0))
    net, (alphas,) = engine.model, engine.model.arch_parameters()
    assert all(p is not alphas for g in engine.optimizer.param_groups for p in g["params"])
    held = {splits.val[i][0].numpy().tobytes() for i in range(len(splits.val))}
    drawn, checked = [], []
    next_batch = engine.next_batch

    def spy(split="val"):
        drawn.append(next_batch(split))
        return drawn[-1]

    def arch_step(optimizer, *args):  # the gradient Adam is about to apply is that of the last held-out batch
        images, targets = drawn[-1]
        assert {im.numpy().tobytes() for im in images} <= held
        (expected,) = torch.autograd.grad(nn.functional.cross_entropy(net(images), targets), [alphas])
        checked.append(torch.equal(alphas.grad, expected))

    engine.next_batch = spy
    engine.owned["arch"].optimizer.register_step_pre_hook(arch_step)
    weights_steps = []
    engine.optimizer.register_step_pre_hook(lambda *a: weights_steps.append(alphas.detach().clone()))
    engine.optimizer.register_step_post_hook(lambda *a: weights_steps.append(alphas.detach().clone()))
    start = alphas.detach().clone()
    for images, targets in list(engine.train_loader)[:3]:
        engine.train_step(images, targets)
    assert checked == [True] * 3 and engine.stream_batches == {"val": 3}
    assert all(torch.equal(a, b) for a, b in zip(weights_steps[::2], weights_steps[1::2], strict=True))  # α stays
    assert not torch.equal(alphas, start)


def test_darts_trains_end_to_end_and_writes_an_arch_that_retrain_and_export_accept(tmp_path):
    cfg, out = _cfg("train.epochs=2"), tmp_path / "darts"
    seed_everything(cfg.train.seed, True, 1)  # as train_supernet starts: the supernet's initial α
    initial = new_supernet(cfg, resolve_space(cfg, build_splits(cfg.data).num_classes)).alphas.detach().clone()
    summary = train_supernet(cfg, RunDir.create(str(out), "supernet"))
    assert summary["strategy"] == "darts" and summary["steps"] == 10 and "val_top1_derived" in summary
    epochs = [m for m in RunDir(out).read_metrics() if "alpha_entropy" in m]
    assert [m["epoch"] for m in epochs] == [0, 1] and epochs[0]["alpha_entropy"] != epochs[1]["alpha_entropy"]
    doc = json.loads((out / "arch.json").read_text())  # the format `cream search` writes
    assert doc.keys() == {"arch", "space", "score", "cost", "test_top1"}
    assert doc["arch"] == epochs[-1]["derived_arch"] and doc["space"]["preset"] == "nb201"
    assert doc["score"] == summary["val_top1_derived"] and doc["cost"] == cream.supernet(SPACE).space.cost(doc["arch"])

    net = load_supernet(cfg, out, 10)
    assert net.kind == "mixed" and net.derive() == doc["arch"]
    moved = (net.alphas.detach() - initial).abs()
    assert moved.min() > 0 and moved.max() > 1e-3  # every α moved, by ~arch_lr a step
    assert main(["export", str(out), "--arch", str(out / "arch.json"), "--out", str(tmp_path / "m.safetensors")]) == 0
    exported, extracted = cream.models.load_exported(tmp_path / "m.safetensors"), net.extract(doc["arch"])
    assert exported.arch == doc["arch"] and nested_equal(exported.state_dict(), extracted.state_dict())
    from cream.commands.retrain import arch_base

    assert arch_base(str(out / "arch.json")) == {"arch": doc["arch"], "space": doc["space"]}


def test_darts_resumes_after_sigkill_bit_identically(tmp_path):
    extra = ["train.epochs=4", "train.ckpt_every_steps=2", "train.keep_checkpoints=20"]
    cmd = [sys.executable, "-m", "cream", "supernet", "--out", str(tmp_path / "killed"), "--json"]
    for item in TINY + extra:
        cmd += ["--set", item]
    victim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpts = tmp_path / "killed" / "checkpoints"
    kill_at_checkpoint(victim, ckpts, 12)
    assert not (tmp_path / "killed" / "arch.json").exists(), "the run ended before it was killed"
    killed_at = load(list_checkpoints(ckpts)[-1])["progress"]
    assert killed_at["batch_in_epoch"] > 0 and killed_at["stream_batches"]["val"] % 5 > 0  # mid-epoch, mid-pass

    ref = RunDir.create(str(tmp_path / "ref"), "supernet")
    train_supernet(_cfg(*extra), ref)
    assert main(["supernet", "--resume", str(tmp_path / "killed"), "--json"]) == 0
    a, b = load(list_checkpoints(ref.checkpoints)[-1]), load(list_checkpoints(ckpts)[-1])
    assert a["progress"] == b["progress"] and a["progress"]["stream_batches"] == {"val": 20}
    for key in ("model", "optimizer", "strategy_optimizers", "rng"):
        assert nested_equal(a[key], b[key]), key
    assert a["strategy_optimizers"]["arch"]["state"][0]["step"] == 20  # Adam's state came through the kill
    assert (ref.path / "arch.json").read_text() == (tmp_path / "killed" / "arch.json").read_text()
    assert [m["step"] for m in ref.read_metrics()] == [m["step"] for m in RunDir(tmp_path / "killed").read_metrics()]
