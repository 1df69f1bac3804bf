"""Measured latency, lookup tables and predictors as cost models; a search under a latency limit."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import TINY_CREAM

from cream.cli import main
from cream.config import SearchConfig
from cream.cost import models as cost_models_module
from cream.cost.latency import TimingProtocol, summarize, time_model, time_models
from cream.cost.layers import layer_units
from cream.cost.lut import (
    LatencyPredictor,
    build_lut,
    load_latency_model,
    predicted_vs_measured,
    save_latency_model,
)
from cream.errors import ConfigError, CreamError
from cream.search import search
from cream.spaces import get_space
from cream.spaces.nb201 import NB201Space
from cream.workflows.search import search_feasible

# other work on the machine preempts runs: time this process's CPU, and keep the minimum
FAST = TimingProtocol(warmup=3, repeats=10, statistic="min", clock="process")

# two searchable layers, each a cheap or a dear op, so the archs' latencies lie well apart
SPLIT = {
    "family": "mobilenet", "name": "split", "input_size": 32, "num_classes": 10, "act": "relu",
    "stem": {"channels": 16, "stride": 1}, "head": {"channels": 32},
    "stages": [{"channels": 48, "stride": 1, "ops": ["ir_k3_e1"]},
               {"channels": 48, "stride": 1, "layers": 2, "ops": ["ir_k3_e1", "ir_k7_e6"]},
               {"channels": 32, "stride": 1, "ops": ["cn_k1"]}],
}


@pytest.fixture(autouse=True)
def _own_cost_registry(monkeypatch):
    monkeypatch.setattr(cost_models_module, "_REGISTERED", {})


def test_time_model_reports_median_and_spread():
    out = time_model(torch.nn.Conv2d(3, 8, 3), (3, 16, 16), TimingProtocol(warmup=1, repeats=7))
    assert out["runs"] == 7
    assert 0 < out["min_ms"] <= out["p10_ms"] <= out["median_ms"] <= out["p90_ms"]
    assert 0 <= out["iqr_ms"] <= out["p90_ms"] - out["p10_ms"]
    # the statistics themselves, on known times (1..21 ms, shuffled)
    known = summarize([float(t) for t in (7, 1, 21, 14, 3, 19, 10, 2, 16, 5, 12, 20, 8, 4, 18, 11, 6, 15, 9, 17, 13)])
    assert known == {"median_ms": 11.0, "p10_ms": 3.0, "p90_ms": 19.0, "iqr_ms": 10.0, "min_ms": 1.0, "runs": 21}



def test_time_models_interleaves_every_pass_after_all_warm_ups():
    calls: list[tuple[str, int]] = []

    class Probe(torch.nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name, self.n = name, 0

        def forward(self, x):
            calls.append((self.name, self.n))
            self.n += 1
            return x

    probes = [Probe(n) for n in "abc"]
    timed = time_models([(p, (2,)) for p in probes], TimingProtocol(warmup=2, repeats=4))
    assert [t["runs"] for t in timed] == [4, 4, 4]
    warm, passes = calls[:6], calls[6:]
    assert warm == [(n, i) for n in "abc" for i in (0, 1)]  # every warm-up before any timed run
    for k in range(4):  # each pass runs every model once (its own order)
        assert sorted(name for name, _ in passes[3 * k:3 * k + 3]) == ["a", "b", "c"]
    orders = {tuple(name for name, _ in passes[3 * k:3 * k + 3]) for k in range(4)}
    assert len(orders) > 1  # shuffled per pass, not one fixed order

@pytest.mark.parametrize("kwargs, key", [({"batch": 0}, "batch"), ({"device": "tpu"}, "device"),
                                         ({"precision": "fp16"}, "precision"), ({"statistic": "mean"}, "statistic")])
def test_a_bad_protocol_is_one_line(kwargs, key):
    with pytest.raises(ConfigError, match=key) as e:
        TimingProtocol(**kwargs)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="threads = 1") as e:
        TimingProtocol(threads=2, clock="process")
    assert "\n" not in str(e.value)


def test_measure_an_arch_file_from_the_command_line(tmp_path, capsys):
    space = get_space(TINY_CREAM)
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps({"arch": space.sample(random.Random(0)), "space": space.to_config()}))
    assert main(["latency", "measure", "--arch", str(arch_file), "--repeats", "3", "--batch", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["median_ms"] > 0 and out["batch"] == 2 and out["threads"] == 1 and out["precision"] == "fp32"
    assert out["input_size"] == [3, 32, 32]
    assert main(["latency", "measure", "--arch", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_is_refused_in_one_line_without_a_gpu(capsys):
    assert main(["latency", "measure", "--model", "resnet18", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == ("cream: error: --device cuda: no CUDA device is available on this "
                                               "machine; use cpu or onnx")


def test_onnx_runtime_times_the_same_model():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = time_model(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()), (3, 16, 16),
                     TimingProtocol(device="onnx", warmup=1, repeats=3))
    assert out["median_ms"] > 0 and out["runs"] == 3


def test_lut_sums_the_units_of_an_arch_plus_a_measured_constant(tmp_path):
    space = get_space(TINY_CREAM)
    table = build_lut(space, FAST, calibration_archs=2)
    units = layer_units(space).space_units(space)
    assert set(table.units) == set(units) and all(v > 0 for v in table.units.values())
    arch = space.sample(random.Random(3))
    keys = layer_units(space).arch_units(space, arch)
    assert table.predict(space, arch) == pytest.approx(sum(table.units[k] for k in keys) + table.constant_ms)
    residuals = [c["measured_ms"] - c["unit_sum_ms"] for c in table.calibration]
    assert len(residuals) == 2 and table.constant_ms == pytest.approx(sum(residuals) / 2)  # their median
    save_latency_model(table, tmp_path / "lut.json")
    again = load_latency_model(tmp_path / "lut.json")
    assert again.predict(space, arch) == pytest.approx(table.predict(space, arch))
    doc = json.loads((tmp_path / "lut.json").read_text())
    assert doc["protocol"]["statistic"] == "min" and doc["environment"]["torch"] == torch.__version__


def test_predictor_file_refits_to_the_same_predictions(tmp_path):
    space = NB201Space()
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(30)]
    ms = [1.0 + sum(op == "nor_conv_3x3" for op in a["ops"]) for a in archs]  # an additive latency
    pred = LatencyPredictor(space.to_config(), None, archs, ms, "ridge")
    save_latency_model(pred, tmp_path / "p.json")
    again = load_latency_model(tmp_path / "p.json")
    test = [space.sample(rng) for _ in range(5)]
    assert again.predict_many(space, test) == pytest.approx(pred.predict_many(space, test))
    truth = [1.0 + sum(op == "nor_conv_3x3" for op in a["ops"]) for a in test]
    assert again.predict_many(space, test) == pytest.approx(truth, abs=0.15)


def test_a_search_under_a_latency_limit_returns_an_arch_measured_within_it(tmp_path):
    space = get_space(SPLIT)
    table = build_lut(space, FAST, calibration_archs=2)
    save_latency_model(table, tmp_path / "lut.json")
    assert table.units["ir_k7_e6|c48-48|s1|h32"] > 2 * table.units["ir_k3_e1|c48-48|s1|h32"]
    one_dear = {"ops": [["ir_k3_e1"], ["ir_k3_e1", "ir_k7_e6"], ["cn_k1"]]}
    both = {"ops": [["ir_k3_e1"], ["ir_k7_e6", "ir_k7_e6"], ["cn_k1"]]}
    low, high = table.predict(space, one_dear), table.predict(space, both)
    limit = low + 0.75 * (high - low)  # the dearest arch is over it; a measurement of one dear op has room
    s = SearchConfig(limits={"latency_ms": [None, limit]}, cost_files={"latency_ms": str(tmp_path / "lut.json")})
    feasible = search_feasible(s, space)
    macs = lambda arch: float(space.cost(arch)["macs"])  # noqa: E731 - the bigger, the better: the limit binds
    result = search("random", space, macs, feasible=feasible, budget=4, seed=0)
    best = result.best["arch"]
    assert best != both and "ir_k7_e6" in best["ops"][1]
    measured = predicted_vs_measured(space, best, {"latency_ms": table})["latency_ms_measured"]
    assert measured <= limit
    assert search("random", space, macs, budget=4, seed=0).best["arch"] == both  # the limit is what kept it out


def test_bad_latency_files_are_one_line(tmp_path):
    space = get_space(TINY_CREAM)
    missing = SearchConfig(limits={"latency_ms": [0, 5]}, cost_files={"latency_ms": str(tmp_path / "no.json")})
    with pytest.raises(CreamError, match="search.cost_files.latency_ms .* does not exist") as e:
        search_feasible(missing, space)
    assert "\n" not in str(e.value)
    other = get_space({**TINY_CREAM, "input_size": 64})  # same ops, other feature-map sizes
    table = build_lut(other, TimingProtocol(warmup=0, repeats=1), calibration_archs=1)
    save_latency_model(table, tmp_path / "other.json")
    wrong = SearchConfig(limits={"latency_ms": [0, 5]}, cost_files={"latency_ms": str(tmp_path / "other.json")})
    with pytest.raises(ConfigError, match="has no entry for .* layer candidates of space") as e:
        search_feasible(wrong, space)
    assert "\n" not in str(e.value)
    (tmp_path / "junk.json").write_text('{"kind": "something"}')
    with pytest.raises(CreamError, match="has kind 'something'"):
        load_latency_model(tmp_path / "junk.json")
    with pytest.raises(ConfigError, match="no per-layer latency table"):
        build_lut(NB201Space(), FAST)
    with pytest.raises(ConfigError, match="search.cost_files.latency_ms"):
        SearchConfig(cost_files={"latency_ms": 3})


def test_cream_search_bounds_a_latency_table_and_reports_it_measured(tmp_path, capsys):
    space = ("{family: vit, name: vit-lat, embed_dims: [16, 64], depths: [1, 2], num_heads: [1, 2], "
             "mlp_ratios: [1.0, 4.0], head_dim: 8, img_size: 16, patch_size: 4, max_relative_position: 4}")
    common = ["--set", f"space={space}", "--set", "data.train_per_class=10", "--set", "train.threads=1"]
    assert main(["supernet", "--out", str(tmp_path / "sn"), "--json", *common, "--set", "train.epochs=1"]) == 0
    from cream.config import read_yaml

    table = build_lut(get_space(read_yaml(tmp_path / "sn" / "config.yaml")["space"]), FAST, calibration_archs=2)
    save_latency_model(table, tmp_path / "lut.json")
    limit = sorted(table.predict(get_space(table.space), get_space(table.space).sample(random.Random(i)))
                   for i in range(20))[10]
    capsys.readouterr()
    assert main(["search", "--supernet", str(tmp_path / "sn"), "--out", str(tmp_path / "s"), "--json",
                 "--set", "search.budget=4", "--set", "search.eval_images=20", "--set", "search.method=random",
                 "--set", "search.test_top_k=0", "--set", f"search.cost_files={{latency_ms: {tmp_path / 'lut.json'}}}",
                 "--set", f"search.limits={{latency_ms: [null, {limit}]}}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < summary["best_latency_ms_predicted"] <= limit and summary["best_latency_ms_measured"] > 0
    records = json.loads((tmp_path / "s" / "search.json").read_text())["records"]
    assert all(table.predict(get_space(table.space), r["arch"]) <= limit for r in records)
    assert "latency_ms: predicted" in (tmp_path / "s" / "report.md").read_text()


def test_build_lut_and_fit_from_the_command_line(tmp_path, capsys):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(json.dumps(TINY_CREAM))  # JSON is YAML
    fast = ["--warmup", "1", "--repeats", "2", "--json"]
    assert main(["latency", "build-lut", str(space_file), "--out", str(tmp_path / "lut.json"), "--calibration", "1",
                 *fast]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["units"] == len(load_latency_model(tmp_path / "lut.json").units) > 0
    assert main(["latency", "fit", str(space_file), "--out", str(tmp_path / "p.json"), "--archs", "3", *fast]) == 0
    assert json.loads(capsys.readouterr().out)["archs"] == 3
    space = get_space(TINY_CREAM)
    assert load_latency_model(tmp_path / "p.json").predict(space, space.sample(random.Random(0))) > 0
    assert main(["latency", "fit", str(space_file), "--archs", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
