"""`search.limits`: named cost models per space, config checks, the older keys, and the search's constraint."""

import math
import random

import pytest
from conftest import TINY_CREAM

from cream.config import RunConfig, SearchConfig, load_config
from cream.cost import models as cost_models_module
from cream.cost.limits import cost_window, limit_windows
from cream.cost.models import cost_models, register_cost_model
from cream.errors import ConfigError
from cream.search import search
from cream.spaces import get_space
from cream.spaces.nb201 import NB201Space
from cream.workflows.search import search_feasible, search_windows


def test_each_space_offers_its_analytic_counts_and_named_macs_conventions():
    assert list(cost_models(NB201Space())) == ["params", "macs"]
    mobilenet = get_space(TINY_CREAM)
    models = cost_models(mobilenet)
    assert list(models) == ["params", "macs", "macs_ptflops", "macs_ptflops_search"]
    arch = mobilenet.sample(random.Random(1))
    assert models["macs"](mobilenet, arch) == mobilenet.cost(arch)["macs"]
    assert models["macs_ptflops"](mobilenet, arch) == mobilenet.cost(arch, convention="ptflops")["macs"]
    assert models["macs_ptflops_search"](mobilenet, arch) == mobilenet.cost(arch, convention="ptflops-search")["macs"]
    assert models["macs_ptflops"](mobilenet, arch) > models["macs"](mobilenet, arch)  # BN, SE pool, biases too


def test_a_registered_cost_model_can_be_limited(monkeypatch):
    monkeypatch.setattr(cost_models_module, "_REGISTERED", {})
    convs = ("nor_conv_3x3", "nor_conv_1x1")
    register_cost_model("nb201", "latency_ms", lambda space, arch: sum(op in convs for op in arch["ops"]))
    space = NB201Space()
    assert "latency_ms" in cost_models(space)
    feasible = cost_window(space, {"latency_ms": (0, 1)})
    out = search("random", space, lambda arch: 0.0, feasible=feasible, budget=30, seed=0)
    assert all(sum(op in convs for op in r["arch"]["ops"]) <= 1 for r in out.records)


def test_an_unknown_cost_is_one_line_listing_the_offered_ones():
    with pytest.raises(ConfigError) as e:
        search_feasible(SearchConfig(limits={"latency": [0, 5]}), NB201Space())
    assert str(e.value) == ("search.limits: cost 'latency' is not one that space 'nb201' reports; "
                            "it offers: params, macs")


def test_infeasible_archs_are_never_scored():
    space = get_space(TINY_CREAM)
    s = load_config(RunConfig, None, ["search.limits={macs_ptflops: [null, 8.5e+5], params: [0, null]}"]).search
    lo_hi = search_windows(s)
    assert lo_hi == {"macs_ptflops": (0.0, 8.5e5)}  # [0, null] leaves both ends open: no limit
    feasible = search_feasible(s, space)
    scored = []
    out = search("random", space, lambda arch: scored.append(arch) or 0.0, feasible=feasible, budget=10, seed=0)
    assert scored and len(scored) == len(out.records)
    assert all(space.cost(a, convention="ptflops")["macs"] <= 8.5e5 for a in scored)
    assert any(space.cost(space.sample(random.Random(i)), convention="ptflops")["macs"] > 8.5e5 for i in range(50))


def test_open_ends_and_units():
    windows = limit_windows({"params": [None, 1e5], "macs": [2e6, 0], "macs_ptflops": [0, None]})
    assert windows == {"params": (0.0, 1e5), "macs": (2e6, math.inf)}
    # "5e6" is a string to YAML 1.1; it is read as the number it spells
    assert load_config(RunConfig, None, ["search.limits={params: [5e6, 6e6]}"]).search.limits == {
        "params": [5e6, 6e6]}


def test_the_older_keys_in_millions_still_work_but_not_with_limits():
    old = load_config(RunConfig, None, ["search.params_max=0.012", "search.macs_min=1.5"]).search
    assert search_windows(old) == {"params": (0.0, 12_000.0), "macs": (1.5e6, math.inf)}
    with pytest.raises(ConfigError, match="'search.params_min/params_max/macs_min/macs_max'.*'search.limits'"):
        load_config(RunConfig, None, ["search.params_max=0.012", "search.limits={params: [0, 12000]}"])


@pytest.mark.parametrize("value", ["5", "[1, 2, 3]", "[-1, 5]", "[6, 5]", "[abc, 5]", "[true, 5]", "{a: 1}"])
def test_a_bad_limit_names_its_key(value):
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, None, [f"search.limits={{params: {value}}}"])
    assert "'search.limits.params'" in str(e.value) and "\n" not in str(e.value)


def test_a_bad_limit_stops_cream_run_before_training(tmp_path, capsys):
    from cream.cli import main

    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--set", "search.limits={macs_ptflops: [0, 1.0e+6]}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cream: error: search.limits: cost 'macs_ptflops' is not one that space 'vit-digits'")
    assert not (out / "supernet").exists()
