"""The DARTS cell space as a registered space: its preset, analytic cost, genotype strings, the mixed search
network's single-path and sampled faces, SETN's candidates, and GDAS/SETN/DARTS runs on it (arch.json, resume)."""

from __future__ import annotations

import json
import random
import signal

import pytest
import torch
from conftest import sets
from test_darts import TINY as NB201_TINY
from test_gdas_setn import faults, resume_matches_uninterrupted

from cream.config import RunConfig, load_config
from cream.cost.measure import measure_macs
from cream.data import build_splits
from cream.errors import ArchError, ConfigError
from cream.models import build_model
from cream.models.darts import DartsNetCIFAR, count_params
from cream.spaces import get_space
from cream.spaces.darts import DARTS_V2, EDGES, OPS, genotype_from_str, genotype_to_str
from cream.supernets import build_supernet
from cream.train.engine import Engine, seed_everything
from cream.train.strategies import make_strategy
from cream.workflows.supernet import new_supernet, resolve_space

SPACE = {"preset": "darts-cifar", "channels": 4, "layers": 3, "search_channels": 4, "search_layers": 3,
         "input_size": 8}
# the NB201 tests' 100 digits, at 8 px
TINY = [f"space={json.dumps(SPACE)}" if item.startswith("space=") else item.replace("image_size=16", "image_size=8")
        for item in NB201_TINY]
#: CDARTS's published CIFAR cell as its code prints it (per node, CDARTS/cells/cifar_genotype.json)
CDARTS_STR = ("Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 1), "
              "('sep_conv_3x3', 2)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('skip_connect', 0), "
              "('skip_connect', 2)]], "
              "normal_concat=range(2, 6), reduce=[[('sep_conv_5x5', 1), ('max_pool_3x3', 0)], [('dil_conv_5x5', 2), "
              "('skip_connect', 0)], [('sep_conv_3x3', 0), ('sep_conv_5x5', 1)], [('sep_conv_3x3', 0), "
              "('dil_conv_5x5', 2)]], reduce_concat=range(2, 6))")


def test_darts_preset_counts_the_evaluation_network_and_reads_genotype_strings():
    space = get_space("darts-cifar")
    assert (space.family, space.channels, space.layers, space.search_channels, space.search_layers) == \
        ("darts", 36, 20, 16, 8)
    assert get_space(space.to_config()) == space
    assert space.cost(DARTS_V2)["params"] == 3_349_342  # what the built network counts (test_darts_space.py)
    assert genotype_from_str(genotype_to_str(DARTS_V2)) == DARTS_V2 == space.validate(genotype_to_str(DARTS_V2))
    cdarts = space.validate(CDARTS_STR)
    assert cdarts["normal"][6:] == [["skip_connect", 0], ["skip_connect", 2]] and cdarts["reduce"][0] == \
        ["sep_conv_5x5", 1]
    small = get_space({**SPACE, "layers": 5, "input_size": 16})
    rng = random.Random(0)
    arch = small.sample(rng)
    for _ in range(20):  # moves and mixes stay in the space
        arch = small.crossover(small.mutate(arch, rng), small.sample(rng), rng)
        small.validate(arch)
    net = build_model(small, arch)
    assert isinstance(net, DartsNetCIFAR) and len(net.cells) == 5
    assert small.cost(arch) == {"params": count_params(net), "macs": measure_macs(net.eval(), (3, 16, 16))}
    narrow = small.restrict({"normal[0].op": ["sep_conv_3x3"], "normal[1].input": [1]})
    assert narrow.num_archs() * 7 * 2 == small.num_archs()  # 7 ops -> 1; inputs (0, 1) -> (1): 2 pairs -> 1
    assert get_space(narrow.to_config()) == narrow
    drawn = [narrow.sample(rng)["normal"][:2] for _ in range(10)]
    assert all(a == ["sep_conv_3x3", 0] and b[1] == 1 for a, b in drawn)
    with pytest.raises(ArchError, match=r"arch field 'normal\[0\].op' = 'skip_connect' is not allowed"):
        narrow.validate(DARTS_V2 | {"normal": [["skip_connect", 0]] + DARTS_V2["normal"][1:]})
    with pytest.raises(ArchError, match="DARTS genotype string .* is malformed"):
        space.validate("Genotype(normal=[], reduce=[])")
    with pytest.raises(ConfigError, match="no two different inputs"):
        small.restrict({"reduce[0].input": [1], "reduce[1].input": [1]})


def test_mixed_darts_supernet_paths_samples_and_setn_candidates():
    space = get_space(SPACE)
    torch.manual_seed(0)
    net = build_supernet(space, "mixed")
    assert net.kind == "mixed" and len(net.cells) == 3 and net.space is space
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        net(x)  # move BN statistics away from their init
    net.eval()
    arch = space.sample(random.Random(3))
    path = net.path_parameters(arch)
    with torch.no_grad():
        assert torch.equal(net(x, arch=arch), net.extract(arch).eval()(x)) and net.arch is None
    assert {id(p) for p in net.extract(arch).parameters()} and sum(p.numel() for p in path) == \
        count_params(net.extract(arch)) and len(net.path_parameters()) == len(list(net.parameters())) - 2
    # GDAS's sampled forward: one op per edge, its straight-through weight carrying α's gradient
    normal = torch.nn.functional.one_hot(torch.tensor([4] * len(EDGES)), len(OPS)).float().requires_grad_(True)
    reduce = torch.nn.functional.one_hot(torch.tensor([1] * len(EDGES)), len(OPS)).float().requires_grad_(True)
    net.set_sampled([(normal, [4] * len(EDGES)), (reduce, [1] * len(EDGES))])
    net(x).sum().backward()
    net.set_sampled(None)
    assert normal.grad[:, 4].abs().sum() > 0 and normal.grad[:, :4].abs().sum() == 0
    assert reduce.grad[:, 1].abs().sum() > 0
    # SETN's candidates: exact top-k by log p; the best is DARTS's derivation
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn_like(a))
    top = net.top_archs(6)
    assert top[0][0] == net.derive() and [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    logp = [a.detach().double().log_softmax(-1) for a in net.arch_parameters()]
    for genotype, score in top:
        assert score == pytest.approx(sum(float(lp[EDGES.index((j, 2 + m // 2)), OPS.index(op)])
                                          for lp, cell in zip(logp, ("normal", "reduce"), strict=True)
                                          for m, (op, j) in enumerate(genotype[cell])), abs=1e-9)
    assert len({genotype_to_str(g) for g, _ in top}) == 6


KWARGS = {"gdas": "{tau_max: 5}", "setn": "{candidates: 3, eval_images: 10}"}


def _engine(strategy: str, *extra: str) -> Engine:
    cfg = load_config(RunConfig, None, [*TINY, f"strategy.name={strategy}", *extra])
    seed_everything(0, True, 1)
    splits = build_splits(cfg.data)
    space = resolve_space(cfg, splits.num_classes)
    return Engine(cfg, new_supernet(cfg, space), splits, None, make_strategy(cfg.strategy, space, 0))


@pytest.mark.parametrize("strategy", ["gdas", "setn"])
def test_gdas_and_setn_step_on_the_darts_space(strategy):
    engine = _engine(strategy, f"strategy.kwargs={KWARGS[strategy]}")
    net = engine.model
    start = [a.detach().clone() for a in net.arch_parameters()]
    images, targets = next(iter(engine.train_loader))
    engine.train_step(images, targets)
    assert all(not torch.equal(s, a) for s, a in zip(start, net.arch_parameters(), strict=True))  # both α moved
    assert engine.stream_batches == {"val": 1} and net.arch is None and net.sampled is None
    if strategy == "setn":
        assert engine.strategy.select()["arch"] in [a for a, _ in net.top_archs(3)]


def test_gdas_on_the_darts_space_resumes_after_sigkill_bit_identically(tmp_path):
    """SETN's and second-order DARTS's runs on this space: benchmarks/darts_space_checks.py (too slow here)."""
    extra = [*TINY, "strategy.name=gdas", f"strategy.kwargs={KWARGS['gdas']}", "train.ckpt_every_steps=2",
             "train.keep_checkpoints=20", "train.max_steps=3"]
    assert faults.cream_forked(["supernet", "--out", str(tmp_path / "killed"), *sets(extra)], "step:3")[0] == \
        -signal.SIGKILL  # after the step-2 checkpoint
    _, doc = resume_matches_uninterrupted(tmp_path, extra, steps=3)
    assert get_space(doc["space"]).family == "darts" and get_space(doc["space"]).validate(doc["arch"]) == doc["arch"]
