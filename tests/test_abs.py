"""ABS (spec shrinking_ensembles.md §1): the angle test vectors, scores and drop rules, path vectors on real
supernets, and the strategy end to end (space.json, SIGKILL resume, search in the shrunk space)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import kill_at_checkpoint, resume_matches

from cream.cli import main
from cream.config import RunConfig, load_config
from cream.errors import ConfigError
from cream.run_dir import RunDir
from cream.spaces import get_space
from cream.supernets import build_supernet
from cream.train.abs import Abs, PartStats, PathVectors, angle, cell_parts, drop_ops, score_ops
from cream.train.checkpoint import list_checkpoints, load
from cream.workflows.supernet import train_supernet

T = torch.tensor


def test_tv_abs_1_block_angles():
    fixed = (T([1.0, 2]), T([1, 2.5]))
    l0 = {0: (T([1.0, 0, 1]), T([1.0, 1, 1])), 1: (T([0.0, 1]), T([0.0, -1]))}
    l1 = {0: (T([2.0, -1]), T([2, -0.5]))}
    expected = {(0, 0): 0.325088, (1, 0): 0.626367, (-1, 0): 0.204660, (0, -1): 0.334879}
    for (a, b), value in expected.items():
        parts = [fixed] + ([l0[a]] if a >= 0 else []) + ([l1[b]] if b >= 0 else [])
        assert angle([p[0] for p in parts], [p[1] for p in parts]) == pytest.approx(value, abs=1e-6)


# TV-ABS-2: layer 0 ops {0, 1, 2}, layer 1 ops {0, 1, -1}; -1 = identity
L0, L1 = {0: "ir_k3_e1", 1: "ir_k3_e2", 2: "ir_k3_e3"}, {0: "ir_k3_e1", 1: "ir_k3_e2", -1: "skip"}
PATH_ANGLES = {(0, 0): .90, (0, 1): .80, (0, -1): .50, (1, 0): .70, (1, 1): .62, (1, -1): .20,
               (2, 0): .40, (2, 1): .33, (2, -1): .12}


def _tv2_space():
    return get_space({"family": "mobilenet", "input_size": 8, "stem": {"channels": 8, "stride": 1},
                      "stages": [{"channels": 8, "ops": [list(L0.values()), list(L1.values())]}]})


def _tv2_scores():
    back0, back1 = {v: k for k, v in L0.items()}, {v: k for k, v in L1.items()}

    def angle_of(arch):
        (a, b), = arch["ops"]
        return PATH_ANGLES[(back0[a], back1[b])]

    scores = score_ops(_tv2_space(), angle_of, random.Random(0))
    named = {(0, back0[v]) if d == "ops[0][0]" else (1, back1[v]): s for (d, v), s in scores.items()}
    return scores, named


def test_tv_abs_2_scores_are_exhaustive_means():
    _, named = _tv2_scores()
    ascending = sorted(named, key=named.get)
    assert ascending == [(1, -1), (0, 2), (0, 1), (1, 1), (1, 0), (0, 0)]
    expected = [.2733333, .2833333, .5066667, .5833333, .6666667, .7333333]
    assert [named[c] for c in ascending] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("rule, k, remaining", [
    ("global", 3, [[0], [0, 1]]), ("global", 5, [[0], [0]]), ("per_layer", None, [[0, 1], [0, 1]])])
def test_tv_abs_2_drops(rule, k, remaining):
    space = _tv2_space()
    scores, _ = _tv2_scores()
    dropped = drop_ops(space.choices(), scores, rule, k)
    keep = {d: [v for v in vs if (d, v) not in dropped] for d, vs in space.choices().items()}
    names = [{v: i for i, v in L0.items()}, {v: i for i, v in L1.items()}]
    assert [sorted(names[j][v] for v in keep[f"ops[0][{j}]"]) for j in (0, 1)] == [sorted(r) for r in remaining]
    if rule == "global" and k == 5:
        assert len(dropped) == 4  # (1, 0) and (0, 0) are their layers' last ops: the walk stops short of k


def test_tv_abs_3_nb201_cell_vector():
    ops = ["nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3"]
    parts = cell_parts(ops)
    assert parts == [(0, "nor_conv_3x3"), (2, "avg_pool_3x3"), (5, "nor_conv_3x3"), (0, "nor_conv_3x3"),
                     (4, "nor_conv_1x1")]
    w0 = {0: torch.arange(1.0, 10), 5: torch.arange(10.0, 19), 4: T([5.0])}
    wt = {0: w0[0] * 1.1 + 0.3, 5: w0[5] * 0.9, 4: T([-5.0])}
    pool = torch.full((1, 3, 3), 1 / 9)
    v0 = [pool if op == "avg_pool_3x3" else w0[e] for e, op in parts]
    vt = [pool if op == "avg_pool_3x3" else wt[e] for e, op in parts]
    assert sum(t.numel() for t in v0) == 37
    assert angle(v0, vt) == pytest.approx(0.234699, abs=1e-6)


@pytest.mark.parametrize("spec", ["configs/spos/macro-cifar10.yaml", {"preset": "nb201", "channels": 4,
                                                                       "cells_per_stage": 1, "input_size": 8}])
def test_part_sums_equal_the_concatenated_angle_on_real_supernets(spec):
    torch.manual_seed(0)
    net = build_supernet(get_space(spec))
    vectors = PathVectors(net)
    base = vectors.base_state()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stats, rng = PartStats(vectors, base), random.Random(3)
    for _ in range(5):
        arch = net.space.sample(rng)
        assert stats.angle(arch) == pytest.approx(angle(vectors.vector(arch, base), vectors.vector(arch)), abs=1e-9)
    if net.space.family == "mobilenet":  # identity skips add nothing; projecting skips add their 1x1 conv
        arch = {"ops": [["skip", "skip"], ["skip", "skip", "skip"], ["skip", "skip", "skip"]]}
        assert [p for p in vectors.parts(arch)] == [("fixed",), ("ops[0][0]", "skip"), ("ops[1][0]", "skip"),
                                                    ("ops[2][0]", "skip")]
        assert vectors.tensors(("fixed",))[0] is net.conv_stem.weight
        assert not any(t.ndim == 1 for part in vectors.parts(arch) for t in vectors.tensors(part))  # no BN


def test_sampling_forces_each_op_and_respects_the_macs_limit():
    space = get_space("configs/spos/macro-cifar10.yaml")
    net = build_supernet(space)
    vectors = PathVectors(net)
    assert set(vectors.identity) == {"ops[0][1]", "ops[1][1]", "ops[1][2]", "ops[2][1]", "ops[2][2]"}
    limit = 60e6
    drawn: list = []

    def angle_of(arch):
        drawn.append(arch)
        return float(space.cost(arch)["macs"])

    scores = score_ops(space, angle_of, random.Random(1), sample_num=20, identity=vectors.identity,
                       max_macs=limit, exhaustive_max=0)
    assert len(scores) == 24 and len({json.dumps(a) for a in drawn}) == len(drawn)  # each child once
    assert all(space.cost(a)["macs"] <= limit for a in drawn)
    assert any(a["ops"][1][1] == "skip" for a in drawn)  # random depth reaches identity layers


def test_bad_abs_parameters():
    space = get_space("nb201")
    with pytest.raises(ConfigError, match=r"'strategy.kwargs.schedule' = 'darts' is not allowed"):
        Abs(space, schedule="darts")
    with pytest.raises(ConfigError, match=r"'strategy.kwargs.drop_rule' = 'worst' is not allowed"):
        Abs(space, drop_rule="worst")
    with pytest.raises(ConfigError, match=r"'strategy.kwargs.first_epochs' = 0 is not allowed"):
        Abs(space, first_epochs=0)


OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
KW = {"first_epochs": 1, "later_epochs": 1, "drops_per_step": 4, "stop_size": 20, "rebase_after_drops": 5,
      "sample_num": 30, "exhaustive_max": 0}
TINY = ["space={preset: nb201, channels: 4, cells_per_stage: 1, input_size: 16}", "strategy.name=abs",
        f"strategy.kwargs={json.dumps(KW)}", "data.train_per_class=10", "data.batch_size=10",
        "data.eval_batch_size=200", "train.epochs=3", "train.threads=1", "train.deterministic=true",
        "train.log_every=1", "optim.opt=sgd", "optim.lr=0.05", "train.ckpt_every_steps=5", "train.keep_checkpoints=50"]


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("abs") / "supernet"
    train_supernet(load_config(RunConfig, None, TINY), RunDir.create(str(out), "supernet"))
    return out


def test_abs_run_drops_by_angle_and_writes_the_space(shrunk):
    ends = [m for m in RunDir(shrunk).read_metrics() if "abs_dropped" in m]
    assert [m["abs_dropped"] for m in ends] == [4, 4, 4]
    report = json.loads((shrunk / "abs.json").read_text())
    narrow = get_space(json.loads((shrunk / "space.json").read_text()))
    assert narrow == get_space(report["space"]) and narrow.num_archs() == ends[-1]["space_archs"] < 5**6
    assert report["rebased_after"] == 1  # (1 + 1) x 4 drops > 5
    for step in range(3):  # each step drops the lowest scores, each from a decision that keeps a better op
        dropped = [x for x in report["dropped"] if x["step"] == step]
        assert len(dropped) == 4 and dropped == sorted(dropped, key=lambda x: x["score"])
    assert all(x["value"] not in narrow.choices()[x["decision"]] for x in report["dropped"])


def _supernet(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cream", "supernet", "--out", str(out), "--json"]
    for item in TINY:
        cmd += ["--set", item]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_killed_abs_run_resumes_bit_identically(shrunk, tmp_path):
    per_epoch = next(m["step"] for m in RunDir(shrunk).read_metrics() if "abs_dropped" in m)
    victim = _supernet(tmp_path / "killed")
    kill_at_checkpoint(victim, tmp_path / "killed" / "checkpoints", 2 * per_epoch + 3)  # after the rebase
    state = load(list_checkpoints(tmp_path / "killed" / "checkpoints")[-1])
    assert state["strategy"]["rebased_after"] == 1 and state["strategy"]["base"]
    resume_matches(shrunk, tmp_path / "killed", ("space.json", "abs.json"))


def test_search_runs_in_the_shrunk_space(shrunk, tmp_path):
    narrow = get_space(json.loads((shrunk / "space.json").read_text()))
    out = tmp_path / "search"
    assert main(["search", "--supernet", str(shrunk), "--out", str(out), "--set", "search.method=random",
                 "--set", "search.budget=5", "--set", "search.eval_images=50", "--set", "search.test_top_k=1"]) == 0
    records = json.loads((out / "search.json").read_text())["records"]
    assert records and all(narrow.validate(r["arch"]) == r["arch"] for r in records)


def test_schedules_stages_and_rebase_step():
    space = get_space("configs/spos/macro-cifar10.yaml")
    spos, fair = Abs(space), Abs(space, schedule="fairnas")
    assert [e for e in range(120) if spos.stage_ends(e)] == [99, 104, 109, 114, 119]
    assert spos.cfg["drop_rule"] == "global" and spos.step_drops == 7 and spos.cfg["random_depth"]
    assert fair.cfg["drop_rule"] == "per_layer" and fair.step_drops == 8 and not fair.cfg["random_depth"]
    assert Abs(space, first_epochs=3, later_epochs=2).stage_ends(2) and not Abs(space, first_epochs=3).stage_ends(3)
