"""NSE: the spec's test vectors (§4.6: gates, estimator, Pareto front, space update, rounds, compaction), the
published NSENets' counts, the supernet's extraction, and `cream nse` end to end: two rounds on a tiny space
(digits), the evolved space written each round, and a SIGKILL mid-round resumed bit for bit."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import pytest
import timm
import torch
import yaml
from conftest import benchmark_module
from safetensors.torch import load_file

from cream.cost import measure
from cream.errors import ConfigError
from cream.models.nse import GENOTYPES, published
from cream.spaces import get_space
from cream.spaces.nse import OP_LISTS, NseSpace, compact, num_rounds
from cream.supernets import build_supernet
from cream.supernets.nse import two_sample_mix
from cream.train.nse import Nse, config_prob, draw_pair, gate_probs, pair_weights
from cream.weights import load_weights
from cream.workflows.nse import band_samples, select_front

faults = benchmark_module("fault_kills")


# --- §4.6 test vectors -------------------------------------------------------------------------------
def test_tv_nse_1_gate_and_configuration_probabilities():
    p = gate_probs(torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64))
    assert p.tolist() == pytest.approx([0.5, 0.730828, 0.269172], abs=1e-6)
    expected = {"000": 0.098359, "101": 0.036227, "110": 0.267054, "011": 0.098359, "111": 0.098359}
    for g, value in expected.items():
        assert float(config_prob(p, [int(c) for c in g])) == pytest.approx(value, abs=1e-6)
    q_s, q_u = pair_weights(p, [1, 0, 1], [1, 1, 0])
    assert (float(q_s), float(q_u)) == pytest.approx((0.119450, 0.880550), abs=1e-6)


def test_tv_nse_2_two_sample_estimator_gradient():
    alpha = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    q_s, q_u = pair_weights(gate_probs(alpha), [1, 0], [0, 1])
    assert (q_s.detach().item(), q_u.detach().item()) == pytest.approx((0.622340, 0.377660), abs=1e-6)
    y = two_sample_mix(torch.tensor(2.0, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64), q_s, q_u)
    assert y.item() == pytest.approx(2.0)  # the forward value is the selected configuration's
    y.backward()
    assert alpha.grad.tolist() == pytest.approx([-0.704361, 0.704379], abs=1e-5)


def test_tv_nse_3_pareto_front_keeps_no_extra():
    pts = {"A": (300, 70.0), "B": (305, 71.0), "C": (310, 70.5), "D": (295, 69.0), "E": (302, 70.8)}
    points = [{"name": n, "cost": c, "top1": t, "kind": "sample"} for n, (c, t) in pts.items()]
    extra = {"name": "X", "cost": 285, "top1": 70.9, "kind": "extra"}
    assert [p["name"] for p in select_front([*points, extra])] == ["B"]
    assert [p["name"] for p in select_front(points)] == ["D", "A", "E", "B"]
    # a previous round's arch loses an exact tie against this round's sample
    tie = [{"name": "old", "cost": 300, "top1": 70.0, "kind": "previous"}, {**points[0]}]
    assert [p["name"] for p in select_front(tie)] == ["A"]


def _update_space() -> NseSpace:
    """NER with one N cell, then the six transition cells; cell 0 and cell 1 as TV-NSE-4 has them."""
    active = [[4, 9, 13, 2, 20], [7, 8]] + [[0, 1]] * 5
    pending = [[5, 11, 0, 1, 3], [1, 2, 3]] + [[2, 3]] * 5
    keep = [[13], []] + [[]] * 5
    return NseSpace(ops="nse27", depths=[1, 0, 0, 0, 0, 0], active=active, pending=pending, keep=keep)


def test_tv_nse_4_prune_and_evolve():
    space = _update_space()
    assert space.kinds == ("N", "R", "R", "R", "E", "R", "E")
    alpha = [[-2.5, 0.3, -2.1, -1.9, 0.0], [-3.0, -2.5]] + [[0.0, 0.0]] * 5
    pruned = space.prune(alpha, -2.0)
    assert pruned.active[0] == (9, 13, 2, 20)  # 4 goes; 13 stays: the previous front uses it
    assert pruned.active[1] == (7, 8)  # a transition cell keeps two ops, whatever their gates
    assert pruned.built == space.built == space.active  # the supernet keeps its shape while its space narrows
    front = [{"cells": [[9], [7], [0], [0], [0], [0], [0]]}, {"cells": [[20], [7, 8], [1], [0], [0], [0], [0]]}]
    evolved = pruned.evolve(front)
    assert evolved.active[0] == (9, 20, 5, 11, 0) and evolved.pending[0] == (1, 3) and evolved.keep[0] == (9, 20)
    assert evolved.active[1] == (7, 8, 1, 2, 3) and evolved.active[2] == (0, 1, 2, 3)
    assert evolved.built == evolved.active  # the next round's supernet holds the new subsets
    assert get_space(json.loads(json.dumps(evolved.to_config()))) == evolved  # space.json round-trips the state


def test_tv_nse_5_rounds():
    assert [num_rounds(m, k) for m, k in ((27, 5), (72, 5), (19, 6))] == [6, 17, 3]
    assert [len(OP_LISTS[n]) for n in ("nse27", "nse72", "nse19")] == [27, 72, 19]
    assert OP_LISTS["nse27"][:3] == ("lb_k3_t1", "lb_k3_t1_d2", "lb_k3_t1_d3") and OP_LISTS["nse27"][9] == "lb_k5_t1"
    assert OP_LISTS["nse27"][21] == "rec_k5_t1" and OP_LISTS["nse72"][27:30] == (
        "lb_k3_t1_g12", "lb_k3_t1_g21", "lb_k3_t1_g22")
    assert OP_LISTS["nse19"][9:13] == ("conv_k3_t1", "conv_k3_t2", "dual_k3_t1", "dual_k3_t2")


def test_tv_nse_6_compaction():
    g = GENOTYPES["nsenet_27"]
    cells = [list(c) for c in g["cells"]]
    for i in (4, 7, 11, 15):
        cells.insert(i, [])
    space = NseSpace(ops="nse27", depths=[1, 3, 3, 3, 3, 3], scale=1.04, active=[c or [0] for c in cells])
    assert len(cells) == 22
    assert compact(space, {"cells": cells}) == ([1, 2, 2, 2, 2, 3], [sorted(c) for c in g["cells"]])
    small, arch = published("nsenet_27")
    assert space.cost({"cells": cells}) == small.cost(arch)  # a skipped cell costs nothing


# --- the published networks ---------------------------------------------------------------------------
def test_nsenet_counts_within_one_percent_of_the_paper():
    model = timm.create_model("nsenet")
    counted = measure(model, (3, 224, 224))
    space, arch = published("nsenet")
    assert counted == space.cost(arch) == {"params": 4_565_024, "macs": 330_953_544}
    assert abs(counted["macs"] / 333e6 - 1) < 0.01
    # the other two genotypes: the spec's counts (ours), analytic = measured
    assert round(published("nsenet_27")[0].cost(published("nsenet_27")[1])["macs"] / 1e5) == 3263
    gpu_space, gpu_arch = published("nsenet_gpu", input_size=64)
    assert measure(timm.create_model("nsenet_gpu"), (3, 64, 64)) == gpu_space.cost(gpu_arch)
    assert round(published("nsenet_gpu")[0].cost(gpu_arch)["macs"] / 1e5) == 14711


# --- the supernet and the space ------------------------------------------------------------------------
TINY_SPACE = {"family": "nse", "ops": ["lb_k3_t1", "lb_k3_t3_d2", "rec_k5_t1", "lb_k3_t2_g22", "dual_k3_t1"],
              "layout": "NER", "depths": [1, 1, 0, 0, 0, 0], "widths": [8, 8, 16, 16, 16, 16, 16],
              "tail_channels": 32, "input_size": 16, "num_classes": 10, "active_size": 3, "seed": 0}


def test_supernet_extracts_equal_networks_with_the_analytic_costs():
    space = get_space(TINY_SPACE)
    net = build_supernet(space, "mixed").eval()
    rng = random.Random(0)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.1, 0.1), bn.running_var.uniform_(0.5, 1.5)
    for _ in range(4):
        arch = space.sample(rng)
        model = net.extract(arch).eval()
        torch.testing.assert_close(model(x), net(x, arch), rtol=0, atol=0)
        assert measure(model, (3, 16, 16)) == space.cost(arch)
    assert net.alpha.dtype == torch.float32 and net.alpha.requires_grad  # not the original's integer α


def test_sampling_and_gate_pairs_respect_the_cell_rules():
    space = get_space(TINY_SPACE)
    rng = random.Random(1)
    for _ in range(50):
        arch = space.validate(space.sample(rng, [[0.05] * len(a) for a in space.active]))
        assert all(ops for kind, ops in zip(space.kinds, arch["cells"], strict=True) if kind != "N")
    for n, residual in ((2, False), (3, True), (7, False)):
        for _ in range(20):
            g_s, g_u = draw_pair([0.3] * n, residual, rng)
            assert g_s != g_u and len(g_s) == n and (residual or (any(g_s) and any(g_u)))


def test_band_sampling_draws_distinct_archs_in_the_band_and_extras_below_it():
    space = get_space({**TINY_SPACE, "input_size": 8})
    nse = Nse(space, band={"drift": 0.01, "target": 0.05, "extra_drift": 0.01}, sample_num=20, extra=5)
    inside, below = band_samples(space, [[0.5] * len(a) for a in space.active], nse, random.Random(0))
    assert len(inside) == 20 and len(below) == 5
    keys = {json.dumps(a) for a in inside + below}
    assert len(keys) == 25
    assert all(40_000 < space.cost(a)["macs"] < 60_000 for a in inside)
    assert all(30_000 < space.cost(a)["macs"] <= 40_000 for a in below)


class _Engine:
    """What `Nse.alpha_step` uses of the engine: the model, held-out batches, autocast, α's optimizer."""

    def __init__(self, net, opt):
        self.model, self.opt = net, opt
        self.autocast = contextlib.nullcontext

    def next_batch(self, split):
        return torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))

    def optimize(self, loss, name):
        self.opt.zero_grad()
        loss.backward(inputs=[self.model.alpha])
        self.opt.step()
        return loss.item()


def test_alpha_steps_close_the_gates_of_costly_ops_under_a_strong_macs_penalty():
    torch.manual_seed(0)
    space = get_space({**TINY_SPACE, "input_size": 8})
    net = build_supernet(space, "mixed")
    nse = Nse(space, band={"drift": 1}, penalty={"macs": {"weight": 1e6, "power": 2, "target": 0}})
    nse.engine = _Engine(net, torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999)))

    def expected_macs() -> float:  # E[Σ gate · cost] under independent gates
        p = gate_probs(net.alpha.detach())
        return sum(float(p[c, o]) * space.op_costs(c)[o][1] for c, ops in enumerate(space.active) for o in ops)

    before = expected_macs()
    for step in range(10):
        assert nse.alpha_step(step) > 0
    assert expected_macs() < before * 0.9
    alpha = net.alpha.detach()
    moved = [float(alpha[c, o]) for c, ops in enumerate(space.active) for o in ops if alpha[c, o] != 0]
    assert len(moved) > len(space.active) and sum(a < 0 for a in moved) > 2 * sum(a > 0 for a in moved)
    inactive = torch.ones_like(net.alpha, dtype=torch.bool)
    for c, ops in enumerate(space.active):
        inactive[c, list(ops)] = False
    assert (alpha[inactive] == 0).all()  # only the active ops' gates take part


def test_bad_nse_parameters_are_one_line_errors():
    space = get_space(TINY_SPACE)
    with pytest.raises(ConfigError, match=r"strategy.kwargs.band.*drift"):
        Nse(space, band={"target": 300})  # mac_drift has no default: the original's configs omit it
    with pytest.raises(ConfigError, match=r"strategy.kwargs.penalty"):
        Nse(space, band={"drift": 5}, penalty={"latency": {"weight": 1, "power": 2, "target": 3}})
    with pytest.raises(ConfigError, match=r"space.active_size = 9"):
        get_space({**TINY_SPACE, "active_size": 9})
    with pytest.raises(ConfigError, match=r"space.ops = 'nse99'"):
        get_space({**TINY_SPACE, "ops": "nse99"})


# --- `cream nse` end to end ----------------------------------------------------------------------------
CONFIG = {
    "space": {**TINY_SPACE, "input_size": 8},
    "strategy": {"name": "nse", "kwargs": {"band": {"drift": 0.015, "target": 0.05},
                                           "penalty": {"macs": {"weight": 1.0, "power": 2, "target": 0.05}},
                                           "sample_num": 3, "extra": 0, "rounds": 2}},
    "data": {"name": "digits", "train_per_class": 12, "val_fraction": 0.3, "batch_size": 16, "eval_batch_size": 200,
             "image_size": 8},
    "train": {"epochs": 1, "threads": 1, "deterministic": True, "log_every": 1, "ckpt_every_steps": 3,
              "keep_checkpoints": 50},
    "optim": {"opt": "sgd", "lr": 0.05},
    "search": {"bn_recal_images": 16, "eval_images": 48},
}


@pytest.fixture(scope="module")
def nse_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nse")
    (folder / "nse.yaml").write_text(yaml.safe_dump(CONFIG))
    assert faults.cream_forked(["nse", str(folder / "nse.yaml"), "--out", str(folder / "ref")])[0] == 0
    return folder


def test_two_rounds_write_the_evolved_space_each_round(nse_run):
    ref = nse_run / "ref"
    start = get_space(CONFIG["space"])
    for r in (0, 1):
        rdir = ref / f"round-{r}"
        trained = get_space(json.loads((rdir / "trained_space.json").read_text()))
        evolved = get_space(json.loads((rdir / "space.json").read_text()))
        front = json.loads((rdir / "front.json").read_text())
        assert front and all(p["kind"] in ("sample", "previous") for p in front)
        assert all(abs(p["cost"] / 1e6 - 0.05) < 0.015 for p in front if p["kind"] == "sample")  # in the band
        assert evolved == trained.evolve([p["arch"] for p in front])  # the space moved on by its front
        assert all(set(a) <= set(s) | set(p) for a, s, p in zip(trained.active, start.active, start.pending,
                                                              strict=True))
        assert get_space(json.loads((rdir / "start_space.json").read_text())) == start
        net = build_supernet(trained, "mixed")  # the pruned space still loads the round's weights
        load_weights(net, rdir / "supernet.safetensors")
        start = evolved
    assert json.loads((ref / "space.json").read_text()) == json.loads((ref / "round-1" / "space.json").read_text())
    last = json.loads((ref / "front.json").read_text())
    best = json.loads((ref / "arch.json").read_text())
    assert best["arch"] in [p["arch"] for p in last] and best["score"] == max(p["top1"] for p in last)
    assert get_space(best["space"]).validate(best["arch"]) == best["arch"]  # the evolved space holds it
    summary = json.loads((ref / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    # each round starts afresh: a new engine (steps from 0) with a new learning-rate schedule
    lrs = [[m["lr"] for m in map(json.loads, (ref / f"round-{r}" / "metrics.jsonl").read_text().splitlines())
            if "lr" in m] for r in (0, 1)]
    assert len(lrs[0]) == len(lrs[1]) == 5 and lrs[0] == lrs[1] and lrs[0][0] != lrs[0][-1]
    # ... and α from 0: round 1's gates are non-zero only where round 1 had ops (Adam leaves the rest at 0),
    # although round 0 moved gates of ops that round 1 no longer has
    alphas = [load_file(ref / f"round-{r}" / "supernet.safetensors")["alpha"] for r in (0, 1)]
    built = get_space(json.loads((ref / "round-1" / "start_space.json").read_text())).built
    outside = torch.ones_like(alphas[1], dtype=torch.bool)
    for c, ops in enumerate(built):
        outside[c, list(ops)] = False
    assert (alphas[1][outside] == 0).all() and (alphas[0][outside] != 0).any()


def test_killed_nse_run_resumes_bit_identically(nse_run):
    ref, out = nse_run / "ref", nse_run / "killed"
    args = ["nse", str(nse_run / "nse.yaml"), "--out", str(out)]
    # a round has 5 steps: killed in round 1 after its checkpoint at step 3, then while scoring round 1
    assert faults.cream_forked(args, "step:9")[0] == -9
    assert (out / "round-0" / "round.json").is_file() and not (out / "round-1" / "round.json").exists()
    assert [p.name for p in (out / "round-1" / "checkpoints").glob("step-*.pt")] == ["step-000000003.pt"]
    assert faults.cream_forked(["nse", "--resume", str(out)], "score:3")[0] == -9
    assert faults.cream_forked(["nse", "--resume", str(out)])[0] == 0
    for r in (0, 1):
        a, b = (load_file(run / f"round-{r}" / "supernet.safetensors") for run in (ref, out))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for name in ("space.json", "front.json", "trained_space.json", "metrics.jsonl"):
            assert (ref / f"round-{r}" / name).read_text() == (out / f"round-{r}" / name).read_text() or \
                name == "metrics.jsonl" and _timeless(ref / f"round-{r}" / name) == _timeless(out / f"round-{r}" / name)
    for name in ("space.json", "front.json", "arch.json"):
        assert (ref / name).read_text() == (out / name).read_text()


def _timeless(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"} for line in lines]
