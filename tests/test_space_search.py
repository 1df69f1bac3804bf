"""Searching the search space (AutoFormerV2/S3): the space contract, the range moves, and `cream space-search`
end to end on digits, killed with SIGKILL mid-run and resumed to the uninterrupted result bit for bit."""

import json
import re

import pytest
import yaml
from conftest import benchmark_module

from cream.config import RunConfig, from_dict
from cream.errors import ConfigError
from cream.search.space_search import linear_trend, moved_range
from cream.spaces import get_space

faults = benchmark_module("fault_kills")

# 3 training steps an epoch, 2 epochs a supernet; embed dim and MLP ratio move; 2 space steps, then the evolved
# space's supernet and search (the supernets stay near chance: the test checks the mechanics, the benchmark more)
TINY = {
    "data": {"name": "digits", "image_size": 16, "batch_size": 64, "train_per_class": 24, "test_per_class": 4,
             "val_fraction": 0.2},
    "space": {"family": "vit", "name": "vit-s3", "embed_dims": [12, 16], "depths": [1, 2], "num_heads": [1, 2],
              "mlp_ratios": [1.5, 2.0], "head_dim": 8, "img_size": 16, "patch_size": 4, "max_relative_position": 2},
    "optim": {"lr": 0.005, "warmup_epochs": 0},
    "train": {"epochs": 2, "deterministic": True, "threads": 1, "ckpt_every_steps": 1, "log_every": 50,
              "eval_every_epochs": 2},
    "search": {"budget": 4, "eval_images": 0, "test_top_k": 1, "limits": {"params": [None, 9000]},
               "kwargs": {"generations": 2, "population": 2, "parents": 2, "mutations": 1, "crossovers": 1}},
    "space_search": {"steps": 2, "dimensions": ["embed_dim", "mlp_ratio"], "random_archs": 3, "evolution_budget": 3,
                     "top_k": 2,
                     "evolution": {"population": 2, "parents": 2, "mutations": 1, "crossovers": 1}},
}


def test_vit_dimensions_round_trip_and_bad_input():
    space = get_space("autoformer-tiny")
    assert space.dimensions() == {"embed_dim": [192, 216, 240], "depth": [12, 13, 14], "num_heads": [3, 4],
                                  "mlp_ratio": [3.5, 4.0]}
    moved = space.with_dimensions({"embed_dim": [240, 264, 288], "mlp_ratio": [4.0, 4.5]})
    assert moved.dimensions()["embed_dim"] == [240, 264, 288] and moved.dimensions()["depth"] == [12, 13, 14]
    assert moved.super_embed_dim == 288 and moved.super_mlp_ratio == 4.5  # a supernet shape for the new range
    assert get_space(moved.to_config()) == moved
    for bad, words in (({"width": [1]}, "'width'"), ({"depth": [2.5]}, "depth = [2.5]"),
                       ({"num_heads": []}, "num_heads = []"), ({"depth": [0, 1]}, "[0, 1]")):
        with pytest.raises(ConfigError, match=re.escape(words)) as e:
            space.with_dimensions(bad)
        assert "\n" not in str(e.value)


def test_moved_range_follows_the_trend():
    cfg = from_dict(RunConfig, {}).space_search
    assert linear_trend([0, 1, 2], [3.0, 2.0, 1.0]) == pytest.approx((-1.0, 3.0))
    assert moved_range([192, 216, 240], -0.1, cfg) == ([216, 240, 264], "up")
    assert moved_range([3.0, 3.5, 4.0], 0.1, cfg) == ([2.5, 3.0, 3.5], "down")
    assert moved_range([1, 2], 0.1, cfg) == ([1, 2], "keep")  # 0 is no choice
    assert moved_range([8, 16], -0.1, cfg, (None, 20)) == ([8, 16], "keep")  # 24 is out of bounds
    grow = from_dict(RunConfig, {"space_search": {"update": "grow", "step_size": 2, "min_slope": 0.05}}).space_search
    assert moved_range([2, 3], -0.1, grow) == ([2, 3, 4, 5], "grow up")
    assert moved_range([2, 3], -0.01, grow) == ([2, 3], "keep")
    with pytest.raises(ConfigError, match="space_search.bounds.depth"):
        from_dict(RunConfig, {"space_search": {"bounds": {"depth": [5, 2]}}})


def test_space_search_moves_ranges_and_resumes_bit_identical(tmp_path, capfd):
    import cream.report.plots  # noqa: F401 - imported once here, not in every fork
    import cream.workflows.space_search  # noqa: F401

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY, sort_keys=False))
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert faults.cream_forked(["space-search", str(config), "--out", str(ref)])[0] == 0
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["final_dimensions"] != summary["initial_dimensions"]  # at least one dimension moved
    for k in (0, 1):
        step = ref / "steps" / str(k)
        et = json.loads((step / "et.json").read_text())
        assert json.loads((step / "space.json").read_text()) == et["space"]
        assert set(et["dimensions"]) == {"embed_dim", "mlp_ratio"}
        assert all((step / f"trend_{d}.png").stat().st_size > 0 for d in et["dimensions"])
        assert 0.0 <= et["T"] <= 1.0 and 0.0 <= et["E"] <= 1.0
    step1 = json.loads((ref / "steps" / "1" / "space.json").read_text())
    assert step1 == json.loads((ref / "steps" / "0" / "summary.json").read_text())["next_space"]
    found = json.loads((ref / "final" / "search" / "arch.json").read_text())
    assert found["space"] == json.loads((ref / "final" / "supernet" / "space.json").read_text())
    assert found["cost"]["params"] <= 9000

    # killed inside step 1's supernet training (after step 0 finished), then in step 1's measurement
    assert faults.cream_forked(["space-search", str(config), "--out", str(killed)], "step:9")[0] == -9
    assert (killed / "steps" / "0" / "summary.json").is_file() and not (killed / "steps" / "1" / "et.json").exists()
    assert faults.cream_forked(["space-search", "--resume", str(killed)], "score:4")[0] == -9
    assert not (killed / "steps" / "1" / "et.json").exists()
    assert faults.cream_forked(["space-search", "--resume", str(killed)])[0] == 0
    for name in ("steps/0/et.json", "steps/1/et.json", "steps/1/supernet/supernet.safetensors",
                 "final/supernet/supernet.safetensors", "final/search/search.json"):
        assert faults.same_file(ref / name, killed / name), name


def test_bad_space_search_input_is_one_line_before_any_training(tmp_path, capsys):
    from cream.cli import main as cream_main

    config = tmp_path / "tiny.yaml"
    cases = [({**TINY, "space": {}}, "config key 'space' is empty"),
             ({**TINY, "space_search": {"dimensions": ["width"]}}, "names ['width'], which space 'vit-s3' lacks"),
             ({**TINY, "space": {"preset": "nb201"}}, "has no dimensions() / with_dimensions()")]
    for i, (cfg, words) in enumerate(cases):
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert cream_main(["space-search", str(config), "--out", str(tmp_path / f"run{i}")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not (tmp_path / f"run{i}").exists()  # nothing left behind
