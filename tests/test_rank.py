import json

import numpy as np
import pytest
from scipy import stats

from cream.errors import ConfigError, DataError
from cream.report.plots import plot_pareto, plot_rank_scatter
from cream.search.pareto import pareto_front
from cream.search.rank import (
    compare_score_files,
    kendall_tau,
    precision_at_k,
    rank_stats,
    spearman_rho,
    stratified_sample,
    supernet_quality,
    top_kendall_tau,
)
from cream.spaces.base import arch_key


def test_correlations_hand_computed_and_scipy():
    true = [1, 2, 3, 4, 5]
    swapped = [1, 2, 4, 3, 5]  # one discordant pair of 10
    assert kendall_tau(true, swapped) == pytest.approx(0.8)
    assert spearman_rho(true, swapped) == pytest.approx(1 - 6 * 2 / (5 * 24))
    assert kendall_tau(true, true[::-1]) == pytest.approx(-1.0)
    x, y = [0.3, 0.1, 0.9, 0.4, 0.4, 0.7], [1.0, 0.2, 0.8, 0.5, 0.1, 0.9]
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_precision_at_k():
    true = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]  # true top-3: items 0, 1, 2
    pred = [9, 1, 8, 0, 0, 7, 0, 0, 0, 0]  # predicted top-3: items 0, 5, 2
    assert precision_at_k(true, pred, 3) == pytest.approx(2 / 3)
    assert precision_at_k(true, pred, 0.3) == pytest.approx(2 / 3)
    assert precision_at_k(true, pred, 1) == 1.0
    assert precision_at_k(true, pred, 10) == 1.0
    with pytest.raises(ConfigError, match="top-k = 1.0"):
        precision_at_k(true, pred, 1.0)
    with pytest.raises(ConfigError, match="top-k = 11"):
        precision_at_k(true, pred, 11)
    out = rank_stats(true, pred, ks=(3, 0.5))
    # predicted top-5: items 0, 2, 5, 1, 3 (ties go to the earlier item)
    assert out["n"] == 10 and out["precision_at_k"] == {"3": pytest.approx(2 / 3), "0.5": 0.8}


def test_top10_tau_overlap_and_pick_against_scipy():
    rng = np.random.default_rng(0)
    true = rng.normal(size=200)
    pred = true + rng.normal(scale=1.0, size=200)
    top = np.argsort(-true)[:20]  # the true top 10 %
    assert top_kendall_tau(true, pred) == pytest.approx(stats.kendalltau(true[top], pred[top]).statistic)
    assert top_kendall_tau(true, pred) < 0.3 < stats.kendalltau(true, pred).statistic  # the top is ranked worse
    out = rank_stats(list(true), list(pred), ks=(10, 0.25))
    assert out["kendall_tau"] == pytest.approx(stats.kendalltau(true, pred).statistic)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(true, pred).statistic)
    for key, k in (("10", 10), ("0.25", 50)):
        overlap = len(set(np.argsort(-true)[:k]) & set(np.argsort(-pred)[:k])) / k
        assert out["precision_at_k"][key] == pytest.approx(overlap)
    best = int(np.argmax(pred))
    assert out["pick"] == {"position": best, "true": pytest.approx(true[best]), "best_true": pytest.approx(true.max()),
                           "regret": pytest.approx(true.max() - true[best])}
    assert rank_stats([1, 2, 3, 4], [4, 3, 2, 1])["top10_kendall_tau"] == pytest.approx(-1.0)  # the top two, swapped


def test_supernet_quality_compares_with_trivial_proxies():
    true = [70.0, 80.0, 85.0, 90.0, 60.0]
    costs = [{"macs": m, "params": p} for m, p in ((2, 20), (3, 30), (4, 40), (5, 50), (1, 10))]
    out = supernet_quality(true, [1.0, 0.0, 3.0, 2.0, 4.0], costs)  # a poor supernet: MACs rank perfectly
    assert out["proxies"]["macs"]["kendall_tau"] == pytest.approx(1.0) == out["proxies"]["params"]["kendall_tau"]
    assert out["kendall_tau"] == pytest.approx(stats.kendalltau(true, [1.0, 0.0, 3.0, 2.0, 4.0]).statistic)
    assert len(out["warnings"]) == 2 and "trivial proxy 'macs'" in out["warnings"][0]
    assert out["largest"] == {"position": 3, "cost": {"macs": 5, "params": 50}, "true": 90.0, "pred": 2.0}
    assert out["smallest"]["position"] == 4 and out["smallest"]["true"] == 60.0
    assert out["pick"]["position"] == 4 and out["pick"]["regret"] == 30.0
    assert supernet_quality(true, true, costs)["warnings"] == []
    with pytest.warns(stats.ConstantInputWarning):
        assert len(supernet_quality(true, [1.0] * 5, costs)["warnings"]) == 2  # constant scores rank nothing


def test_stratified_sample_covers_the_range():
    values = [10.0, 11.0] + [90 + i / 1000 for i in range(1000)]
    picked = stratified_sample(values, size=20, seed=0)
    assert len(picked) == len(set(picked)) == 20 and {0, 1} <= set(picked)
    assert picked == stratified_sample(values, size=20, seed=0) != stratified_sample(values, size=20, seed=1)
    assert stratified_sample(values, size=len(values)) == list(range(len(values)))
    with pytest.raises(ConfigError, match="sample size"):
        stratified_sample(values, size=0)


def test_compare_score_files(tmp_path):
    true = tmp_path / "true.json"
    true.write_text(json.dumps({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "x": 0.0}))
    pred = tmp_path / "pred.csv"
    pred.write_text("arch,score\na,0.1\nb,0.3\nc,0.2\nd,0.4\ny,9\n")
    out = compare_score_files(true, pred, ks=(2,))
    assert out["n"] == 4 and out["only_in_true"] == 1 and out["only_in_pred"] == 1
    assert out["kendall_tau"] == pytest.approx(4 / 6)
    assert out["precision_at_k"] == {"2": 0.5}  # true top-2 {d, c}, predicted {d, b}
    records = tmp_path / "records.json"
    rows = [{"arch": {"ops": [i]}, "score": s} for i, s in ((1, 1), (2, 3), (3, 2))]
    records.write_text(json.dumps({"records": rows}))
    assert compare_score_files(records, records)["spearman_rho"] == pytest.approx(1.0)
    keyed = tmp_path / "keyed.json"  # the same archs keyed by arch_key: each record must find its key
    keyed.write_text(json.dumps({arch_key({"ops": [i]}): float(i) for i in (1, 2, 3)}))
    out = compare_score_files(keyed, records)
    assert out["n"] == 3 and out["kendall_tau"] == pytest.approx(1 / 3)
    with pytest.raises(DataError, match="does not exist"):
        compare_score_files(tmp_path / "nope.json", pred)
    with pytest.raises(DataError, match="share 0 archs"):
        compare_score_files(true, records)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,acc\na,1\n")
    with pytest.raises(DataError, match="needs CSV columns"):
        compare_score_files(bad, pred)


def test_pareto_front_and_plots(tmp_path):
    points = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (3.0, 0.7), (0.5, 0.1), (4.0, 0.9), (1.0, 0.5)]
    assert pareto_front(points) == [4, 0, 2, 5]
    records = [{"arch": {}, "score": s, "cost": {"params": int(c * 1e6), "macs": 1}} for c, s in points]
    for path in (plot_pareto(records, tmp_path / "p.png"),
                 plot_rank_scatter([1, 2, 3], [1, 3, 2], tmp_path / "r.png")):
        assert path.read_bytes()[:4] == b"\x89PNG"
