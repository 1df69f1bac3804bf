"""The shrinking strategy on a tiny NB201 space (digits): the drop rule, space.json, SIGKILL resume, and what
search, retrain and export read afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_at_checkpoint, resume_matches, validates

from cream.cli import main
from cream.config import RunConfig, load_config
from cream.errors import ConfigError
from cream.run_dir import RunDir
from cream.spaces import get_space
from cream.train.checkpoint import list_checkpoints, load
from cream.train.shrink import Shrink
from cream.train.uniform import step_rng
from cream.workflows.supernet import load_supernet, resolve_space, train_supernet

OPS = ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
SPACE = f"space={{preset: nb201, channels: 4, cells_per_stage: 1, input_size: 16, edge_ops: {json.dumps([OPS] * 6)}}}"
TINY = [SPACE, "strategy.name=shrink", "data.train_per_class=30", "data.batch_size=10", "data.eval_batch_size=200",
        "train.epochs=2", "train.threads=1", "train.deterministic=true", "train.log_every=1", "optim.opt=sgd",
        "optim.lr=0.05", "train.ckpt_every_steps=5", "train.keep_checkpoints=50"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _supernet(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cream", "supernet", "--out", str(out), "--json"]
    for item in TINY:
        cmd += ["--set", item]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shrink") / "supernet"
    train_supernet(load_config(RunConfig, None, TINY), RunDir.create(str(out), "supernet"))
    return out


def _spaces(run: Path):
    cfg = load_config(RunConfig, run / "config.yaml")
    return cfg, resolve_space(cfg, 10), get_space(json.loads((run / "space.json").read_text()))


def test_each_epoch_drops_the_op_with_the_worst_mean_loss_on_every_edge(shrunk):
    cfg, wide, narrow = _spaces(shrunk)
    metrics = RunDir(shrunk).read_metrics()
    losses = {m["step"] - 1: m["loss"] for m in metrics if "loss" in m}  # logged after the step counter moved
    ends = [m for m in metrics if "shrink_dropped" in m]
    assert [m["epoch"] for m in ends] == [0, 1] and [m["shrink_dropped"] for m in ends] == [6, 6]
    assert [m["space_archs"] for m in ends] == [3**6, 2**6]

    # Replay the rule from the logged losses: the same paths, the same means, the same drops.
    dropped = json.loads((shrunk / "shrink.json").read_text())["dropped"]
    space, first = wide, 0
    for end in ends:
        sums: dict[tuple[str, str], list[float]] = {}
        for step in range(first, end["step"]):
            for d, (op,) in space.arch_choices(space.sample(step_rng(cfg.train.seed, step))).items():
                sums.setdefault((d, op), []).append(losses[step])
        assert {(d, op) for d, op in sums} == {(d, op) for d, ops in space.choices().items() for op in ops}
        means = {k: sum(v) / len(v) for k, v in sums.items()}
        expected = []
        for d, ops in space.choices().items():
            worst = max(ops, key=lambda op, d=d: means[(d, op)])
            expected.append({"epoch": end["epoch"], "decision": d, "value": worst,
                             "mean_loss": pytest.approx(means[(d, worst)], rel=1e-12)})
        assert [x for x in dropped if x["epoch"] == end["epoch"]] == expected
        space = space.restrict({x["decision"]: [o for o in space.choices()[x["decision"]] if o != x["value"]]
                                for x in expected})
        first = end["step"]
    assert space == narrow and all(len(ops) == 2 for ops in narrow.choices().values())


def test_killed_shrink_run_resumes_bit_identically(shrunk, tmp_path):
    per_epoch = next(m["step"] for m in RunDir(shrunk).read_metrics() if "shrink_dropped" in m)
    victim = _supernet(tmp_path / "killed")
    ckpts = tmp_path / "killed" / "checkpoints"
    kill_at_checkpoint(victim, ckpts, per_epoch + 3)
    assert not (tmp_path / "killed" / "supernet.safetensors").exists(), "the run ended before it was killed"
    state = load(list_checkpoints(ckpts)[-1])
    assert state["progress"]["epoch"] == 1 and state["progress"]["batch_in_epoch"] > 0
    assert get_space(state["strategy"]["space"]).num_archs() == 3**6  # the narrowed space is checkpointed
    assert any(n for pairs in state["strategy"]["stats"].values() for _, n in pairs)

    resume_matches(shrunk, tmp_path / "killed", ("space.json", "shrink.json"))
    timeless = [[{k: v for k, v in m.items() if k != "images_per_s"} for m in RunDir(run).read_metrics()]
                for run in (shrunk, tmp_path / "killed")]
    assert timeless[0] == timeless[1]


def test_search_retrain_and_export_use_the_narrowed_space(shrunk, tmp_path, capsys):
    _, wide, narrow = _spaces(shrunk)
    search = tmp_path / "search"
    assert main(["search", "--supernet", str(shrunk), "--out", str(search), "--set", "search.method=random",
                 "--set", "search.budget=6", "--set", "search.eval_images=50", "--set", "search.test_top_k=1"]) == 0
    records = json.loads((search / "search.json").read_text())["records"]
    assert len(records) == 6 and all(narrow.validate(r["arch"]) == r["arch"] for r in records)
    found = json.loads((search / "arch.json").read_text())
    assert get_space(found["space"]) == narrow
    refused = [a for a in (wide.sample(step_rng(1, i)) for i in range(20)) if not validates(narrow, a)]
    assert len(refused) > 10 and narrow.num_archs() < wide.num_archs()

    # A retrain of arch.json rebuilds the narrowed space, even given a config whose space is written otherwise.
    config = tmp_path / "retrain.yaml"
    config.write_text(f"space: {{preset: nb201, channels: 4, cells_per_stage: 1, input_size: 16}}\ninit: {shrunk}\n")
    retrain = tmp_path / "retrain"
    assert main(["retrain", str(config), "--out", str(retrain), "--arch", str(search / "arch.json"), "--json",
                 "--set", "train.max_steps=2", "--set", "data.train_per_class=30", "--set", "train.threads=1"]) == 0
    assert get_space(load_config(RunConfig, retrain / "config.yaml").space) == narrow
    assert main(["export", str(retrain), "--out", str(tmp_path / "r.safetensors")]) == 0
    capsys.readouterr()

    # Export from the supernet run refuses an arch the shrinking dropped, in one line.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(refused[0]))
    assert main(["export", str(shrunk), "--arch", str(bad), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cream: error: arch field 'ops[") and "\n" not in err
    assert main(["export", str(shrunk), "--arch", str(search / "arch.json"), "--out", str(tmp_path / "y")]) == 0
    assert get_space(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["space"]) == narrow


def test_runs_without_space_json_read_their_config(shrunk, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.yaml", "supernet.safetensors"):
        shutil.copy(shrunk / name, old / name)
    cfg, wide, narrow = _spaces(shrunk)
    assert load_supernet(cfg, old, 10).space == wide
    assert load_supernet(cfg, shrunk, 10).space == narrow


@pytest.mark.parametrize("kwargs, message", [
    ({"min_ops": 0}, r"config key 'strategy.kwargs.min_ops' = 0 must be an integer >= 1"),
    ({"warmup_epochs": -1}, r"config key 'strategy.kwargs.warmup_epochs' = -1 must be an integer >= 0"),
])
def test_bad_shrink_parameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Shrink(get_space("nb201"), **kwargs)
