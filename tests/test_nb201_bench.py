import statistics

import numpy as np
import pytest
from scipy import stats

from cream.errors import ConfigError, DataError
from cream.spaces.nb201 import index_to_arch
from cream.tabular import NB201Table, run_bench


@pytest.fixture(scope="module")
def table(nb201_table):
    return NB201Table(nb201_table)


def test_sanity_figures(table):
    c10 = table.column("cifar10_test_200ep")
    assert len(table) == len(c10) == 15_625
    assert int(np.argmax(c10)) == 6111 and c10[6111] == 94.3733
    optima = (("cifar100_test_200ep", 9930, 73.5133), ("imagenet16_test_200ep", 857, 47.3111),
              ("cifar10_val_12ep", 13714, 84.892))
    for column, index, value in optima:
        values = table.column(column)
        assert int(np.argmax(values)) == index and values[index] == value
    assert float(np.median(c10)) == pytest.approx(90.745)
    assert float(c10.mean()) == pytest.approx(87.06, abs=0.005)
    assert int((c10 == 10.0).sum()) == 341
    rho = stats.spearmanr(table.column("cifar10_val_12ep"), c10).statistic
    assert rho == pytest.approx(0.772, abs=0.0005)
    assert len(table.devices) == 27 and "pixel3" in table.devices


def test_query_by_arch_string_or_index(table):
    arch = index_to_arch(6111)
    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert table.query(arch, "cifar10_test_200ep") == table.query(text, "cifar10_test_200ep") == 94.3733
    assert table.query(6111, "lat_ms_pixel3") == table.column("lat_ms_pixel3")[6111]
    with pytest.raises(ConfigError, match="column 'cifar10_test' is unknown"):
        table.query(6111, "cifar10_test")


def test_bad_tables(tmp_path, nb201_table):
    with pytest.raises(DataError, match="does not exist"):
        NB201Table(tmp_path / "missing.csv")
    lines = nb201_table.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.csv"
    bad.write_text(lines[0].replace("cifar10_val_12ep", "cifar10_valid") + "".join(lines[1:]))
    with pytest.raises(DataError, match=r"lacks columns \['cifar10_val_12ep'\]"):
        NB201Table(bad)
    bad.write_text("".join(lines[:3] + lines[4:]))
    with pytest.raises(DataError, match="has 15624 rows"):
        NB201Table(bad)
    bad.write_text("".join([lines[0], lines[2], lines[1]] + lines[3:]))
    with pytest.raises(DataError, match="row 1 is out of the official index order"):
        NB201Table(bad)


@pytest.mark.parametrize("method", ["random", "regularized", "evolution"])
def test_run_bench_reproducible_and_clean(table, method):
    a = run_bench(table, method, 60, [0, 1, 2], checkpoints=(10, 30))
    b = run_bench(table, method, 60, [0, 1, 2], checkpoints=(10, 30))
    assert a == b
    assert [c["queries"] for c in a["curve"]] == [10, 30, 60]
    assert a["curve"][-1]["mean"] == a["final"]["mean"]
    finals = [table.query(i, "cifar10_test_200ep") for i in a["picks"]]
    assert a["final"] == {"mean": statistics.fmean(finals), "std": statistics.pstdev(finals)}
    # The report metric never steers the search: the picks do not depend on it.
    other = run_bench(table, method, 60, [0, 1, 2], report_metric="cifar100_test_200ep", checkpoints=())
    assert other["picks"] == a["picks"]
    assert run_bench(table, method, 60, [3, 4, 5], checkpoints=())["picks"] != a["picks"]


def test_run_bench_latency_and_leak_guard(table):
    out = run_bench(table, "evolution", 80, 3, latency_device="pixel3", latency_limit_ms=5.0)
    lat = table.column("lat_ms_pixel3")
    assert all(lat[i] <= 5.0 for i in out["picks"])
    assert lat[out["optimum"]["index"]] <= 5.0
    with pytest.raises(ConfigError, match="would leak the test set"):
        run_bench(table, "random", 50, 1, search_metric="cifar10_test_12ep")
    with pytest.raises(ConfigError, match="latency_device = 'tpu' is unknown"):
        run_bench(table, "random", 50, 1, latency_device="tpu", latency_limit_ms=3.0)
