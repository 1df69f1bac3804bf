"""End to end on the real data: train a tiny NB201 supernet on CIFAR-10 JPEGs, then rank cells against the table."""

import json
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

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
    from cream.spaces.nb201 import NB201Space, str_to_arch
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

    # The quality report: every figure, and the trivial proxies measured on the same cells.
    pred = [r["score"] for r in records]
    expected = rank_stats(true, pred)
    for key in ("spearman_rho", "top10_kendall_tau", "precision_at_k"):
        assert json.dumps(stats[key]) == json.dumps(expected[key])  # NaN when the tiny supernet ties them
    best = max(range(5), key=lambda i: (pred[i], -i))
    assert stats["pick"]["arch"] == records[best]["arch"] and stats["pick"]["true"] == true[best]
    assert stats["pick"]["regret"] == pytest.approx(max(true) - true[best])
    assert stats["pick"]["table_regret"] == pytest.approx(94.3733 - true[best], abs=1e-3)
    space = NB201Space()
    by_size = sorted(range(5), key=lambda i: (records[i]["cost"]["macs"], records[i]["cost"]["params"]))
    for extreme, i in (("largest", by_size[-1]), ("smallest", by_size[0])):
        assert stats[extreme]["arch"] == records[i]["arch"] and stats[extreme]["true"] == true[i]
        assert stats[extreme]["pred"] == pred[i]
    macs = [space.cost(str_to_arch(r["arch"]))["macs"] for r in records]
    assert stats["proxies"]["macs"]["kendall_tau"] == pytest.approx(scipy_stats.kendalltau(true, macs).statistic)
    worse = [n for n in ("macs", "params") if not stats["kendall_tau"] >= stats["proxies"][n]["kendall_tau"]]
    assert [w.split("'")[1] for w in stats["warnings"]] == worse
    assert main([*argv[:-1], "--out", str(tmp_path / "b")]) == 0  # the terminal report names every figure
    captured = capsys.readouterr()
    for text in ("tau in the true top 10 %", "top-k overlap", "regret", "largest scored arch", "smallest scored arch",
                 "proxy macs", "proxy params", "reference cifar10_val_12ep"):
        assert text in captured.out
    assert captured.err.count("warning: the supernet ranks worse than the trivial proxy") == len(worse)

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
