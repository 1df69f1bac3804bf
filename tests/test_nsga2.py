"""NSGA-II (pymoo) multi-objective search: limits, the front, resume, and that it beats random search."""

import json

import numpy as np
import pytest
from pymoo.indicators.hv import HV

from cream.cost import models
from cream.cost.limits import cost_window
from cream.errors import CheckpointError, ConfigError
from cream.search import make_search
from cream.spaces.nb201 import NB201Space, arch_to_index
from cream.tabular import NB201Table


def _score(arch) -> float:
    """A synthetic score that trades off against MACs: convolutions help, with a per-cell wobble."""
    ops = arch["ops"]
    return 2.0 * ops.count("nor_conv_3x3") + ops.count("nor_conv_1x1") + (arch_to_index(arch) % 7) / 10


def _dominated(r, o, objectives) -> bool:
    """`o` is as good as `r` in score and every cost, and better in one."""
    ge = o["score"] >= r["score"] and all(o["cost"][c] <= r["cost"][c] for c in objectives)
    gt = o["score"] > r["score"] or any(o["cost"][c] < r["cost"][c] for c in objectives)
    return ge and gt


def test_front_is_exactly_the_non_dominated_records_and_limits_all_hold():
    space = NB201Space()
    windows = {"params": (0.2e6, 0.9e6), "macs": (30e6, 120e6)}
    feasible = cost_window(space, windows)
    result = make_search("nsga2", space, _score, feasible=feasible, budget=60, seed=3,
                         objectives=["macs", "params"], population=10).run()
    assert len(result.records) == 60 and result.stopped == "budget"
    assert all(lo <= r["cost"][c] <= hi for r in result.records for c, (lo, hi) in windows.items())
    objectives = ["macs", "params"]
    expected = {i for i, r in enumerate(result.records)
                if not any(_dominated(r, o, objectives) for o in result.records)}
    assert set(result.front) == expected and len(expected) >= 2
    assert result.to_dict()["front"] == result.front


def test_resume_ends_where_an_uninterrupted_search_ends(tmp_path):
    space = NB201Space()
    feasible = cost_window(space, {"params": (0.3e6, 1.0e6)})
    kwargs = {"feasible": feasible, "budget": 50, "seed": 1, "objectives": ["macs"], "population": 8}
    whole = make_search("nsga2", space, _score, **kwargs).run()
    state = tmp_path / "state.json"
    first = make_search("nsga2", space, _score, state_path=state, **kwargs)
    for _ in range(3):
        first.step()
    assert json.loads(state.read_text())["extra"]["refused"]  # some proposals were outside the limit
    resumed = make_search("nsga2", space, _score, state_path=state, **kwargs).run(resume=True)
    assert resumed.to_dict() == whole.to_dict()
    other = make_search("nsga2", space, _score, state_path=state, **{**kwargs, "population": 9})
    with pytest.raises(CheckpointError, match="offspring = 8; this search has 9"):
        other.run(resume=True)


def test_small_space_is_exhausted_without_repeats():
    space = NB201Space().restrict({f"ops[{e}]": ["none", "skip_connect"] for e in range(6)})
    result = make_search("nsga2", space, _score, budget=100, seed=0, objectives=["params"], population=6).run()
    keys = [tuple(r["arch"]["ops"]) for r in result.records]
    assert result.stopped == "exhausted" and len(keys) == len(set(keys)) == space.num_archs() == 64


def test_bad_objective_is_one_line():
    with pytest.raises(ConfigError, match="nsga2 objectives: cost 'latency_x'.*params"):
        make_search("nsga2", NB201Space(), _score, budget=10, objectives=["latency_x"])
    with pytest.raises(ConfigError, match="objectives = 'macs'"):
        make_search("nsga2", NB201Space(), _score, budget=10, objectives="macs")


def test_nsga2_front_beats_random_on_the_table(nb201_table, monkeypatch):
    """Accuracy vs a device's latency on NAS-Bench-201: a larger hypervolume than random search's after 100
    queries (mean of 5 seeds; the full comparison is benchmarks/mo_nb201.py)."""
    table = NB201Table(nb201_table)
    acc, latency = table.column("cifar10_val_12ep"), table.column("lat_ms_pixel3")
    monkeypatch.setitem(models._REGISTERED, "nb201", dict(models._REGISTERED.get("nb201", {})))  # undone after
    models.register_cost_model("nb201", "test_lat_ms_pixel3", lambda space, arch: float(latency[arch_to_index(arch)]))
    hv = HV(ref_point=np.array([1.0, 1.0]))

    def volume(records) -> float:
        idx = [arch_to_index(r["arch"]) for r in records]
        return float(hv(np.stack([1 - acc[idx] / 100, latency[idx] / latency.max()], axis=1)))

    def score(arch) -> float:
        return float(acc[arch_to_index(arch)])

    volumes = {m: np.mean([volume(make_search(m, NB201Space(), score, budget=100, seed=s, **kw).run().records)
                           for s in range(5)])
               for m, kw in (("random", {}), ("nsga2", {"objectives": ["test_lat_ms_pixel3"]}))}
    assert volumes["nsga2"] > volumes["random"]
