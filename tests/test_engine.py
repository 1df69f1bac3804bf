"""The training engine: kill-and-resume bit identity, DDP parity, non-finite losses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import kill_at_checkpoint
from safetensors.torch import load_file

from cream.config import RunConfig, load_config
from cream.errors import CheckpointError, TrainingError
from cream.run_dir import RunDir
from cream.train.strategy import OwnedOptimizer, Strategy
from cream.workflows.train_model import train_standalone

# A tiny ViT (LayerNorm only, so DDP matches one process exactly) on 16 px digits.
TINY = [
    "model.name=vit_tiny_patch16_224",
    "model.kwargs={img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}",
    "data.batch_size=16", "data.train_per_class=40", "train.threads=1",
]


def _run(out: Path, extra: list[str], *cmd_prefix: str) -> subprocess.Popen:
    cmd = [*cmd_prefix, "-m", "cream", "retrain", "--out", str(out), "--json"]
    for item in TINY + extra:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def _finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_killed_run_resumes_bit_identical(tmp_path):
    # Augmentation, drop path and mixup all draw random numbers: the resumed run must redraw the same ones.
    extra = ["train.epochs=3", "train.deterministic=true", "train.ckpt_every_steps=3", "model.drop_path=0.1",
             "data.train_crop=pad", "data.pad=2", "data.mixup=0.2", "optim.smoothing=0.1", "train.ema_decay=0.9",
             "train.log_every=1"]
    ref = _finish(_run(tmp_path / "ref", extra, sys.executable))

    victim = _run(tmp_path / "killed", extra, sys.executable)
    kill_at_checkpoint(victim, tmp_path / "killed" / "checkpoints", 10)
    assert not (tmp_path / "killed" / "model.safetensors").exists(), "the run ended before it was killed"

    resumed = subprocess.run([sys.executable, "-m", "cream", "retrain", "--resume", str(tmp_path / "killed"),
                              "--json"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ea = load_file(tmp_path / "ref" / "model_ema.safetensors")
    eb = load_file(tmp_path / "killed" / "model_ema.safetensors")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["test_top1"] == ref["test_top1"]
    ref_steps = [m["step"] for m in RunDir(tmp_path / "ref").read_metrics()]
    assert [m["step"] for m in RunDir(tmp_path / "killed").read_metrics()] == ref_steps


def test_ddp_two_processes_match_one_process(tmp_path):
    common = ["train.epochs=1", "train.deterministic=true", "optim.lr=0.003"]
    one = _run(tmp_path / "one", [*common, "data.batch_size=16"], sys.executable)
    two = _run(tmp_path / "two", [*common, "data.batch_size=8"], sys.executable, "-m", "torch.distributed.run",
               "--standalone", "--nproc_per_node=2")
    r1, r2 = _finish(one), _finish(two)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, f"max weight difference {worst}"
    assert r1["steps"] == r2["steps"] > 0
    assert abs(r1["test_top1"] - r2["test_top1"]) <= 1 / 360  # at most one test image flips


class NaNAt(Strategy):
    def __init__(self, bad_step: int) -> None:
        self.bad_step = bad_step

    def loss(self, model, images, targets, step):
        loss = super().loss(model, images, targets, step)
        return loss * float("nan") if step == self.bad_step else loss


def _engine(tmp_path, overrides, strategy, resume=False):
    from cream.data import build_splits
    from cream.train.engine import Engine
    from cream.workflows.train_model import configured_model

    cfg = load_config(RunConfig, None, TINY + overrides)
    splits = build_splits(cfg.data)
    run = RunDir.create(str(tmp_path / "run"), "retrain", resume=resume)
    return Engine(cfg, configured_model(cfg, splits.num_classes), splits, run, strategy)


def test_nan_loss_stops_naming_the_step_and_keeps_checkpoint(tmp_path):
    engine = _engine(tmp_path, ["train.epochs=2", "train.ckpt_every_steps=2"], NaNAt(5))
    with pytest.raises(TrainingError, match=r"loss is nan at step 5 .*step-000000004\.pt"):
        engine.fit()
    assert (tmp_path / "run" / "checkpoints" / "step-000000004.pt").is_file()


def test_nan_loss_skipped_when_configured(tmp_path):
    engine = _engine(tmp_path, ["train.epochs=1", "train.on_nan=skip"], NaNAt(2))
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    out = engine.fit()
    assert out["skipped_steps"] == 1 and out["steps"] == engine.steps_per_epoch
    assert any(not torch.equal(before[k], v) for k, v in engine.model.state_dict().items())
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())


def test_train_standalone_writes_the_run_directory(tmp_path):
    cfg = load_config(RunConfig, None, TINY + ["train.epochs=1"])
    run = RunDir.create(str(tmp_path / "r"), "retrain")
    summary = train_standalone(cfg, run)
    for name in ["config.yaml", "metrics.jsonl", "model.safetensors", "summary.json", "report.md"]:
        assert (tmp_path / "r" / name).is_file(), name
    assert 0.0 <= summary["test_top1"] <= 1.0 and summary["wall_s"] > 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["test_top1"] == summary["test_top1"]
    assert len(list((tmp_path / "r" / "checkpoints").glob("step-*.pt"))) == 1


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    cfg = load_config(RunConfig, None, [*TINY, "train.epochs=1", "train.amp=bf16", "train.channels_last=true"])
    summary = train_standalone(cfg, RunDir.create(str(tmp_path / "r"), "retrain"))
    assert summary["skipped_steps"] == 0 and 0.0 <= summary["test_top1"] <= 1.0
    weights = load_file(tmp_path / "r" / "model.safetensors")
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())
    for on in (True, False):  # the flags reach the step: channels_last input, bf16 compute
        flags = ["train.epochs=1"] + (["train.amp=bf16", "train.channels_last=true"] if on else [])
        engine = _engine(tmp_path / str(on), flags, Strategy())
        seen: list = []
        engine.model.patch_embed.proj.register_forward_hook(
            lambda m, i, o, seen=seen: seen.append((i[0].is_contiguous(memory_format=torch.channels_last), o.dtype)))
        engine.train_step(*next(iter(engine.train_loader)))
        assert seen == [(True, torch.bfloat16) if on else (False, torch.float32)]


class Tempered(Strategy):
    """Logits divided by a learned temperature that an SGD of the strategy's own steps (lr following the schedule)."""

    def setup(self, engine):
        super().setup(engine)
        self.log_t = torch.zeros((), requires_grad=True)
        self.sgd = torch.optim.SGD([self.log_t], lr=0.5, momentum=0.9)

    def optimizers(self):
        return {"temperature": OwnedOptimizer(self.sgd, schedule="follow")}

    def loss(self, model, images, targets, step):
        return self.engine.criterion(model(images) / self.log_t.exp(), targets)

    def train_step(self, images, targets, step):
        loss = super().train_step(images, targets, step)  # the weights' step leaves log_t's gradient in place
        self.engine.apply_gradients("temperature")
        return loss

    def state_dict(self):
        return {"log_t": self.log_t.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.log_t.copy_(state["log_t"])


def test_a_strategy_optimizer_is_checkpointed_scheduled_and_restored(tmp_path):
    flags = ["train.epochs=1", "optim.sched=cosine", "optim.lr=0.01"]
    engine = _engine(tmp_path, flags, Tempered())
    engine.fit()
    sgd = engine.owned["temperature"].optimizer
    assert engine.strategy.log_t.item() != 0 and sgd.state[engine.strategy.log_t]["momentum_buffer"].item() != 0
    saved = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert torch.equal(saved["strategy_optimizers"]["temperature"]["state"][0]["momentum_buffer"],
                       sgd.state[engine.strategy.log_t]["momentum_buffer"])

    engine.run.write_yaml("config.yaml", {})  # what `cream retrain` writes first, for RunDir's resume check
    again = _engine(tmp_path, flags, Tempered(), resume=True)
    fresh = again.owned["temperature"].optimizer
    assert fresh.param_groups[0]["lr"] == 0.5 and not fresh.state  # at step 0 the schedule is at its base
    again.resume()
    assert torch.equal(fresh.state[again.strategy.log_t]["momentum_buffer"],
                       sgd.state[engine.strategy.log_t]["momentum_buffer"])
    assert fresh.param_groups[0]["lr"] == sgd.param_groups[0]["lr"] \
        == 0.5 * again.optimizer.param_groups[0]["lr"] / 0.01 < 0.5
    with pytest.raises(CheckpointError, match="holds strategy optimizers \\['temperature'\\], this run's strategy "
                                              "has \\[\\]"):
        _engine(tmp_path, flags, Strategy(), resume=True).resume()
