"""Retraining DARTS-space genotypes: the linear drop-path ramp (per epoch, resumed, training only), cutout,
CDARTS's published cells as arch files, and a short `cream retrain` of one on the shared CIFAR-10 images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import sets

from cream.cli import main
from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.data.transforms import Cutout, build_transform
from cream.errors import ConfigError
from cream.models import build_model
from cream.models.darts import DartsNetCIFAR, count_params
from cream.run_dir import RunDir
from cream.spaces import get_space
from cream.spaces.darts import DARTS_V2, genotype_from_str
from cream.train.engine import Engine, seed_everything

REPO = Path(__file__).resolve().parents[1]
#: params of each shipped cell's CIFAR network (C = 36, 20 cells, no auxiliary head), as built and counted
CELLS = {"cifar10-cell": 3_859_318, "imagenet-cell": 4_669_534, "darts-v2": 3_349_342}


def _rates(engine: Engine) -> list[float]:
    """Train to the end, recording the drop-path rate of every training forward (deduplicated in order)."""
    seen: list[float] = []
    engine.model.register_forward_pre_hook(
        lambda m, _: seen.append(m.drop_path_rate) if m.training and (not seen or seen[-1] != m.drop_path_rate)
        else None)
    engine.fit()
    return seen


def test_drop_path_ramps_linearly_per_epoch_resumes_and_drops_only_in_training(tmp_path):
    keys = ["data.name=digits", "data.image_size=8", "data.train_per_class=2", "data.batch_size=5",
            "data.val_fraction=0",
            "train.threads=1", "train.epochs=4", "model.drop_path=0.4", "model.drop_path_schedule=linear"]
    run = RunDir.create(str(tmp_path / "run"), "retrain")

    def engine(*extra: str) -> Engine:
        cfg = load_config(RunConfig, None, [*keys, *extra])
        seed_everything(0)
        return Engine(cfg, DartsNetCIFAR(DARTS_V2, channels=4, layers=3, drop_path_rate=0.4), build_splits(cfg.data),
                      run)

    first = engine("train.max_steps=9")  # 4 steps an epoch: stops in epoch 2, checkpointed
    assert first.steps_per_epoch == 4
    assert _rates(first) == pytest.approx([0.0, 0.1, 0.2])  # 0.4 x e / 4
    resumed = engine()
    resumed.resume()
    assert resumed.epoch == 2 and _rates(resumed) == pytest.approx([0.2, 0.3])
    model, x = resumed.model, torch.randn(4, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        kept = model(x)
        model.set_drop_path(0.9)
        assert torch.equal(model(x), kept)  # evaluation never drops a path
        model.train()
        torch.manual_seed(0)
        dropped = model(x)
        model.set_drop_path(0.0)
        torch.manual_seed(0)
        assert not torch.allclose(model(x), dropped)
    cfg = load_config(RunConfig, None, [*keys, "model.name=resnet18"])
    with pytest.raises(ConfigError, match="'model.drop_path_schedule' = 'linear' needs a model with `set_drop_path`"):
        Engine(cfg, torch.nn.Linear(2, 2), build_splits(cfg.data), None)


def test_cutout_zeroes_one_clipped_square_in_training_only():
    image = torch.ones(3, 12, 12)
    torch.manual_seed(3)
    out = Cutout(6)(image)
    zero = (out == 0).all(0)
    rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
    assert zero.sum() == len(rows) * len(cols) > 0 and len(rows) <= 6 and len(cols) <= 6  # one rectangle
    assert (rows.diff() == 1).all() and (cols.diff() == 1).all() and image.eq(1).all()
    cfg = load_config(RunConfig, None, ["data.cutout=4"]).data
    assert isinstance(build_transform(cfg, True).transforms[-1], Cutout)
    assert not any(isinstance(t, Cutout) for t in getattr(build_transform(cfg, False), "transforms", []))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_published_cells_ship_as_arch_files_and_build(name):
    doc = json.loads((REPO / "configs" / "cdarts" / f"{name}.json").read_text())
    space = get_space(doc["space"])
    assert doc["arch"] == genotype_from_str(doc["genotype"]) == space.validate(doc["genotype"])
    net = build_model(space, doc["arch"])
    assert isinstance(net, DartsNetCIFAR) and count_params(net) == space.cost(doc["arch"])["params"] == CELLS[name]
    if name == "darts-v2":
        assert doc["arch"] == DARTS_V2


def test_cream_retrain_a_published_cell_on_cifar10(tmp_path, cifar10_archive, capsys):
    out = tmp_path / "retrain"
    argv = ["retrain", str(REPO / "configs/cdarts/retrain-cifar10.yaml"), "--arch",
            str(REPO / "configs/cdarts/cifar10-cell.json"), "--out", str(out), "--json",
            *sets([f"data.root={cifar10_archive}", "data.train_per_class=2", "data.test_per_class=1",
                   "data.batch_size=10", "data.eval_batch_size=10", "data.workers=0", "train.epochs=1",
                   "train.amp=none", "train.threads=1", "model.kwargs={auxiliary: true, channels: 4, layers: 3}"])]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "arch" and summary["steps"] == 2 and 0 <= summary["test_top1"] <= 1
    config = (out / "config.yaml").read_text()
    assert "darts-cifar" in config and "drop_path_schedule: linear" in config and "cutout: 16" in config
