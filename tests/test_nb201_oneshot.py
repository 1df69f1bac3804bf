"""`cream bench nb201-oneshot`: the per-seed runs, their table lookup and the summary (training stubbed:
tests/test_gdas_setn.py and tests/test_darts.py train the strategies themselves), and its argument checks."""

from __future__ import annotations

import json

import pytest

from cream.cli import main
from cream.spaces.nb201 import str_to_arch
from cream.tabular import NB201Table
from cream.workflows import oneshot_bench

CELLS = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
         "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"]


def test_oneshot_bench_looks_each_seed_up_and_summarises(nb201_table, tmp_path, monkeypatch, capsys):
    seen = []

    def fake_seed(cfg, out):  # what a trained seed hands back: its arch.json arch and its wall time
        seen.append((cfg.strategy.name, cfg.train.seed, cfg.data.train_per_class, cfg.train.epochs, out.name))
        return {"arch": str_to_arch(CELLS[cfg.train.seed % 2]), "wall_s": 10.0 + cfg.train.seed}

    monkeypatch.setattr(oneshot_bench, "run_seed", fake_seed)
    args = ["bench", "nb201-oneshot", "--method", "gdas", "--epochs", "3", "--train-images", "400", "--seeds", "3",
            "--table", str(nb201_table), "--data", "unused.tar.gz", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert seen == [("gdas", s, 40, 3, f"seed{s}") for s in range(3)]
    table = NB201Table(nb201_table)
    c10 = [table.query(CELLS[s % 2], "cifar10_test_200ep") for s in range(3)]
    assert [r["arch"] for r in res["per_seed"]] == [CELLS[0], CELLS[1], CELLS[0]]
    assert [r["cifar10"] for r in res["per_seed"]] == c10 and c10[0] > 90 > c10[1]
    assert res["per_seed"][1]["imagenet16"] == table.query(CELLS[1], "imagenet16_test_200ep")
    assert res["cifar10"]["mean"] == pytest.approx(sum(c10) / 3) and res["wall_s"]["mean"] == pytest.approx(11.0)
    assert res["cifar10"]["std"] > 0


def test_oneshot_bench_refuses_bad_arguments(nb201_table, capsys):
    common = ["bench", "nb201-oneshot", "--table", str(nb201_table), "--data", "x.tar.gz"]
    assert main([*common, "--method", "enas"]) == 2
    assert "--method = 'enas' is not available; choose one of ['cdarts', 'darts', 'gdas', 'setn', 'spos']" in \
        capsys.readouterr().err
    assert main([*common, "--method", "setn", "--train-images", "205"]) == 2
    assert "--train-images = 205 must be a multiple of 10" in capsys.readouterr().err
    assert main(["bench", "nb201", "--method", "darts", "--table", str(nb201_table)]) == 2
    assert "--method = 'darts' is not a search method" in capsys.readouterr().err
