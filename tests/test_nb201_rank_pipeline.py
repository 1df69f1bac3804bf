"""End to end on the real data: train a tiny NB201 supernet on CIFAR-10 JPEGs, then rank cells against the table."""

import json
from pathlib import Path

import pytest

from cream.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.train_per_class=10", "data.test_per_class=2", "data.val_fraction=0.3", "data.batch_size=10",
        "data.eval_batch_size=50", "space.channels=4", "train.epochs=1", "train.log_every=1"]


@pytest.fixture(scope="module")
def supernet_run(tmp_path_factory, cifar10_archive):
    out = tmp_path_factory.mktemp("nb201") / "supernet"
    argv = ["supernet", str(REPO / "configs/nb201/supernet-cifar10-cpu.yaml"), "--out", str(out), "--json",
            "--set", f"data.root={cifar10_archive}"]
    for item in TINY:
        argv += ["--set", item]
    assert main(argv) == 0
    return out


def test_rank_a_supernet_run_against_the_table(supernet_run, nb201_table, tmp_path, capsys):
    from cream.config import RunConfig, load_config
    from cream.data import build_splits
    from cream.search.rank import rank_stats
    from cream.spaces.nb201 import str_to_arch
    from cream.tabular import NB201Table
    from cream.train.evaluate import evaluate
    from cream.workflows.supernet import load_supernet

    capsys.readouterr()
    argv = ["rank", "--supernet", str(supernet_run), "--table", str(nb201_table), "--sample", "5",
            "--bn-recal-images", "0", "--json"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    stats = json.loads(capsys.readouterr().out)
    records = json.loads((tmp_path / "a" / "scores.json").read_text())
    assert stats["n"] == len(records) == 5 and stats["eval_images"] == 30 and stats["bn_recal_images"] == 0
    assert (tmp_path / "a" / "rank.png").stat().st_size > 1000
    assert json.loads((tmp_path / "a" / "rank.json").read_text())["kendall_tau"] == stats["kendall_tau"]

    table = NB201Table(nb201_table)
    true = [table.query(r["index"], "cifar10_test_200ep") for r in records]
    assert [r["cifar10_test_200ep"] for r in records] == true
    assert stats["kendall_tau"] == rank_stats(true, [r["score"] for r in records])["kendall_tau"]
    ref = [table.query(r["index"], "cifar10_val_12ep") for r in records]
    assert stats["reference"]["cifar10_val_12ep"]["kendall_tau"] == rank_stats(true, ref)["kendall_tau"]

    # A score is the accuracy (%) of the extracted cell network on the run's held-out split.
    cfg = load_config(RunConfig, supernet_run / "config.yaml")
    splits = build_splits(cfg.data)
    net = load_supernet(cfg, supernet_run, splits.num_classes)
    for r in records[:2]:
        child = net.extract(str_to_arch(r["arch"]))
        assert 100 * evaluate(child, splits.val)["top1"] == pytest.approx(r["score"])


def test_rank_with_bn_recalibration(supernet_run, nb201_table, tmp_path, capsys):
    scores = {}
    for images in (0, 20):
        assert main(["rank", "--supernet", str(supernet_run), "--table", str(nb201_table), "--sample", "4",
                     "--bn-recal-images", str(images), "--out", str(tmp_path / str(images)), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["bn_recal_images"] == images
        scores[images] = [r["score"] for r in json.loads((tmp_path / str(images) / "scores.json").read_text())]
    assert scores[0] != scores[20]


def test_rank_refuses_a_folder_that_is_not_a_run(tmp_path, nb201_table, capsys):
    assert main(["rank", "--supernet", str(tmp_path), "--table", str(nb201_table)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
