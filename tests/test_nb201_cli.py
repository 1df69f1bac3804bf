import json

import pytest

from cream.cli import main
from cream.search import METHODS


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bench_runs_every_method_and_is_reproducible(capsys, nb201_table, method):
    argv = ["bench", "nb201", "--table", str(nb201_table), "--method", method, "--queries", "30", "--seeds", "3",
            "--json"]
    first, second = run_json(capsys, argv), run_json(capsys, argv)
    assert first == second
    assert first["method"] == method and first["queries"] == 30 and first["seeds"] == 3
    assert first["search_metric"] == "cifar10_val_12ep" and first["report_metric"] == "cifar10_test_200ep"
    assert [p["queries"] for p in first["curve"]] == [25, 30]
    assert (first["mean"], first["std"]) == (first["final"]["mean"], first["final"]["std"])
    assert first["curve"][-1]["mean"] == first["mean"] <= 94.3733
    assert len(first["picks"]) == 3


def test_bench_seeds_differ_and_latency_limit_holds(capsys, nb201_table):
    from cream.tabular import NB201Table

    base = ["bench", "nb201", "--table", str(nb201_table), "--queries", "20", "--json"]
    one = run_json(capsys, [*base, "--seeds", "1"])
    four = run_json(capsys, [*base, "--seeds", "4"])
    assert four["picks"][0] == one["picks"][0] and len(set(four["picks"])) > 1
    fast = run_json(capsys, [*base, "--seeds", "4", "--latency-device", "pixel3", "--latency-limit-ms", "10"])
    lat = NB201Table(nb201_table).column("lat_ms_pixel3")
    assert all(lat[i] <= 10 for i in fast["picks"])


def test_bench_text_table(capsys, nb201_table):
    assert main(["bench", "nb201", "--table", str(nb201_table), "--queries", "50", "--seeds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("regularized on NAS-Bench-201, 2 seeds")
    assert [line.split()[0] for line in lines[2:5]] == ["25", "50", "optimum:"]


def test_bench_errors_are_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CREAM_SHARED_DATA", raising=False)
    assert main(["bench", "nb201"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pass --table PATH" in err
    (tmp_path / "t.csv").write_text("index,arch_str\n")
    assert main(["bench", "nb201", "--table", str(tmp_path / "t.csv")]) == 2
    assert "lacks columns" in capsys.readouterr().err


def test_bench_refuses_a_test_column_as_search_metric(capsys, nb201_table):
    assert main(["bench", "nb201", "--table", str(nb201_table), "--search-metric", "cifar10_test_12ep"]) == 2
    assert "leak the test set" in capsys.readouterr().err


def test_rank_score_files(capsys, tmp_path):
    truth = {f"a{i}": float(i) for i in range(10)}
    scores = [{"arch": f"a{i}", "score": float(i if i not in (3, 4) else 7 - i)} for i in range(10)]
    scores.append({"arch": "extra", "score": 1.0})
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    out = run_json(capsys, ["rank", "--scores", str(tmp_path / "scores.json"), "--truth", str(tmp_path / "truth.json"),
                            "--out", str(tmp_path / "o"), "--json"])
    assert out["n"] == 10 and out["only_in_pred"] == 1 and out["only_in_true"] == 0
    assert out["kendall_tau"] == pytest.approx(1 - 2 * 1 / 45)  # one discordant pair of 45
    assert out["precision_at_k"] == {"0.05": 1.0, "0.1": 1.0, "0.2": 1.0, "0.5": 1.0}
    assert (tmp_path / "o" / "rank.png").stat().st_size > 1000
    assert json.loads((tmp_path / "o" / "rank.json").read_text())["kendall_tau"] == out["kendall_tau"]


def test_rank_csv_truth_and_argument_errors(capsys, tmp_path):
    (tmp_path / "t.csv").write_text("arch,score\na,1\nb,2\nc,3\n")
    (tmp_path / "p.csv").write_text("arch,score\na,3\nb,2\nc,1\n")
    out = run_json(capsys, ["rank", "--scores", str(tmp_path / "p.csv"), "--truth", str(tmp_path / "t.csv"),
                            "--out", str(tmp_path), "--json"])
    assert out["kendall_tau"] == pytest.approx(-1.0)
    assert main(["rank", "--scores", str(tmp_path / "p.csv")]) == 2
    assert "give --scores FILE and --truth FILE, or --supernet RUN" in capsys.readouterr().err
    assert main(["rank", "--supernet", str(tmp_path), "--scores", "x"]) == 2
    assert "not both" in capsys.readouterr().err
