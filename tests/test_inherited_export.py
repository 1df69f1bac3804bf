"""What search scored is what export and `init` retrains produce: same geometry, same BN statistics, same outputs."""

import json

import pytest
import torch
from conftest import TINY_CREAM

from cream.cli import main
from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.errors import ConfigError
from cream.models import load_exported
from cream.workflows.search import load_scorer
from cream.workflows.supernet import resolve_space
from cream.workflows.train_model import configured_model

SPACE = {**TINY_CREAM, "input_size": 16}
COMMON = ["--set", f"space={json.dumps(SPACE)}", "--set", "data.train_per_class=16", "--set", "data.batch_size=16",
          "--set", "train.threads=1", "--set", "train.epochs=1"]
SEARCH = ["--set", "search.method=random", "--set", "search.budget=3", "--set", "search.bn_recal_images=40",
          "--set", "search.eval_images=30", "--set", "search.test_top_k=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inherited")
    assert main(["supernet", "--out", str(root / "supernet"), *COMMON]) == 0
    # the supernet run itself keeps bn_recal_images at 0: export must take the search run's setting
    assert main(["search", "--supernet", str(root / "supernet"), "--out", str(root / "search"), *SEARCH]) == 0
    return root


def _images() -> torch.Tensor:
    return torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_export_equals_the_scored_supernet_and_its_analytic_cost(runs, tmp_path, capsys):
    found = json.loads((runs / "search" / "arch.json").read_text())
    out = tmp_path / "model.safetensors"
    capsys.readouterr()
    assert main(["export", str(runs / "supernet"), "--arch", str(runs / "search" / "arch.json"),
                 "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (info["params"], info["macs"]) == (found["cost"]["params"], found["cost"]["macs"])  # measured == analytic
    assert info["input_size"] == [3, 16, 16]

    cfg = load_config(RunConfig, runs / "search" / "config.yaml")
    scorer, _ = load_scorer(cfg, runs / "supernet")
    x = _images()
    with torch.no_grad():
        unrecalibrated = scorer.net.eval()(x, arch=found["arch"])
        scored = scorer.prepare(found["arch"]).eval()(x)
        exported = load_exported(out).eval()(x)
    assert not torch.allclose(unrecalibrated, scored, atol=1e-3)  # recalibration changes the outputs...
    assert torch.allclose(exported, scored, atol=1e-5)  # ...and the export carries it


def test_init_retrain_starts_from_the_scored_network(runs):
    found = json.loads((runs / "search" / "arch.json").read_text())
    cfg = load_config(RunConfig, runs / "search" / "config.yaml", [f"init={runs / 'supernet'}"])
    cfg.arch = found["arch"]
    splits = build_splits(cfg.data)
    model = configured_model(cfg, splits.num_classes, train=splits.train).eval()
    scorer, _ = load_scorer(cfg, runs / "supernet")
    x = _images()
    with torch.no_grad():
        assert torch.allclose(model(x), scorer.prepare(found["arch"]).eval()(x), atol=1e-5)


def test_a_space_at_another_size_than_the_data_is_refused():
    cfg = load_config(RunConfig, None, [f"space={json.dumps(TINY_CREAM)}"])  # input_size 32, data 16
    with pytest.raises(ConfigError) as e:
        resolve_space(cfg, 10)
    assert str(e.value) == ("config key 'space.input_size' = 32 differs from 'data.image_size' = 16; costs are "
                            "counted at the space's size and models run at the data's, so set both to the same size")
    vit = load_config(RunConfig, None, ["space={preset: autoformer-tiny}", "data.image_size=32"])
    with pytest.raises(ConfigError, match=r"^config key 'space.img_size' = 224 differs from 'data.image_size' = 32;"):
        resolve_space(vit, 10)
    assert resolve_space(load_config(RunConfig, None, [f"space={json.dumps(SPACE)}"]), 10).config.input_size == 16


def test_scoring_reads_each_split_through_one_loader_with_the_configured_machinery(runs, monkeypatch):
    from cream.search import inherited
    from cream.train.evaluate import evaluate

    built = []
    real = inherited.eval_loader
    monkeypatch.setattr(inherited, "eval_loader", lambda *a, **k: built.append(k) or real(*a, **k))
    cfg = load_config(RunConfig, runs / "search" / "config.yaml")
    scorer, _ = load_scorer(cfg, runs / "supernet")
    archs = [a["arch"] for a in json.loads((runs / "search" / "search.json").read_text())["records"]]
    scores = [scorer(a) for a in archs] + [scorer.score(archs[0], scorer.test)]
    assert len(built) == 2  # one for the validation subset, one for the test split
    # the defaults score exactly as a plain evaluation of the prepared supernet does
    assert scores[:-1] == [evaluate(scorer.prepare(a), scorer.val, batch_size=cfg.data.eval_batch_size)["top1"]
                           for a in archs]

    fast = load_config(RunConfig, runs / "search" / "config.yaml",
                       ["data.workers=1", "train.channels_last=true", "train.amp=bf16"])
    scorer, _ = load_scorer(fast, runs / "supernet")
    assert scorer.net.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(scorer.autocast(), torch.autocast)
    assert abs(scorer(archs[0]) - scores[0]) <= 0.1  # bf16 may flip a few of the 30 predictions
    assert built[-1]["workers"] == 1 and built[-1]["persistent"] and scorer.recal_loader.num_workers == 1
