"""CDARTS on the staged DARTS space: the ensemble output against a hand computation, op weights copied both
ways, the stage progression freezing earlier stages, SIGKILL resume, and arch.json feeding a retrain."""

from __future__ import annotations

import json
import random
import signal

import pytest
import torch
from conftest import nested_equal, sets
from test_gdas_setn import faults

from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.errors import ArchError, ConfigError
from cream.models import build_model
from cream.models.darts import DartsNetCIFAR, count_params
from cream.models.darts_stages import StagedDartsNet
from cream.run_dir import RunDir
from cream.spaces import get_space
from cream.spaces.darts import DARTS_V2, EDGES
from cream.supernets import build_supernet
from cream.supernets.cdarts_darts import ensemble_output
from cream.train.checkpoint import list_checkpoints, load
from cream.train.engine import Engine, seed_everything
from cream.train.strategies import make_strategy
from cream.workflows.supernet import new_supernet, resolve_space, train_supernet

SPACE = {"family": "darts_stages", "input_size": 8, "channels": 4, "search_cells": [1, 1], "eval_cells": [1, 2]}
# 20 digits at 8 px: 10 to train on (one step an epoch), 10 held out
TINY = [f"space={json.dumps(SPACE)}", "data.name=digits", "data.image_size=8", "data.train_per_class=2",
        "data.val_fraction=0.5", "data.batch_size=10", "data.eval_batch_size=10", "train.threads=1",
        "train.deterministic=true", "strategy.name=cdarts", "optim.opt=sgd", "optim.lr=0.05", "optim.sched=cosine",
        "train.log_every=1", "model.kwargs={head_channels: [8, 16]}"]


def _engine(*extra: str) -> Engine:
    cfg = load_config(RunConfig, None, [*TINY, *extra])
    seed_everything(0, True, 1)
    splits = build_splits(cfg.data)
    space = resolve_space(cfg, splits.num_classes)
    return Engine(cfg, new_supernet(cfg, space), splits, None, make_strategy(cfg.strategy, space, 0))


def test_ensemble_output_matches_a_hand_computation():
    a, b, c = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, -1.0]]), torch.tensor([[3.0, 0.5]])
    pi = torch.tensor([0.2, -0.4, 1.0])
    w = [v / sum(torch.exp(pi).tolist()) for v in torch.exp(pi).tolist()]
    cat = ensemble_output([a, b, c], pi, summed=False)
    assert cat.shape == (3, 2) and torch.allclose(cat, torch.tensor([[w[0] * 1, w[0] * 2], [0.0, -w[1]],
                                                                     [w[2] * 3, w[2] * 0.5]]))
    summed = ensemble_output([a, b, c], pi, summed=True)
    assert torch.allclose(summed, torch.tensor([[w[0] + 3 * w[2], 2 * w[0] - w[1] + 0.5 * w[2]]]))
    # the controller's em is that of its two auxiliary heads and its classifier
    torch.manual_seed(0)
    net = build_supernet(get_space({**SPACE, "search_cells": [1, 1, 1], "eval_cells": [1, 1, 1]}), "mixed",
                         ensemble_param=True, head_channels=[8, 16])
    assert net.pi.requires_grad and [net.head_at, len(net.aux_heads)] == [[0, 1], 2]
    with torch.no_grad():
        net.pi.copy_(pi)
    x = torch.randn(2, 3, 8, 8)
    logits, em = net.forward_search(x)
    assert em.shape == (6, 10) and torch.allclose(em[4:], w[2] * logits)


def test_op_weights_are_copied_both_ways():
    torch.manual_seed(0)
    net = build_supernet(get_space({**SPACE, "search_cells": [2, 2], "eval_cells": [2, 3]}), "mixed",
                         head_channels=[8, 16])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.genotypes = [DARTS_V2, DARTS_V2]
    net.copy_to_eval(1)
    search, evals = net.search_stages[1], net.eval_stages[1]
    pairs = DARTS_V2["normal"]
    edge, op = EDGES.index((pairs[0][1], 2)), pairs[0][0]
    # eval normal cells 0, 1 from search normal cells 0, 1; the extra cell 2 from the last search normal cell
    for i, j in ((0, 0), (1, 1), (2, 1)):
        for a, b in zip(evals[i].edges[edge][op].parameters(), search[j].edges[edge][op].parameters(), strict=True):
            assert torch.equal(a, b)
    assert torch.equal(evals[1].pre0[1].weight, search[1].pre0[1].weight)  # same inputs: preprocessing too
    unused = next(o for o in net.eval_stages[1][0].edges[edge] if o not in ("none", op, "max_pool_3x3",
                                                                             "avg_pool_3x3", "skip_connect"))
    assert not torch.equal(next(evals[0].edges[edge][unused].parameters()),
                           next(search[0].edges[edge][unused].parameters()))  # ops off the genotype stay
    x = torch.randn(2, 3, 8, 8)
    net.train()
    net.forward_eval(x)[0].sum().backward()
    with torch.no_grad():
        for p in evals.parameters():
            if p.grad is not None:
                p.sub_(p.grad + 1)
    net.copy_to_search(1)  # back: each search cell from the eval cell at its position (not the extra one)
    for j in (0, 1):
        for a, b in zip(search[j].edges[edge][op].parameters(), evals[j].edges[edge][op].parameters(), strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(next(search[1].edges[edge][op].parameters()), next(evals[2].edges[edge][op].parameters()))


def test_stages_are_searched_in_order_and_earlier_ones_freeze():
    engine = _engine("train.epochs=6", "train.eval_every_epochs=3",
                     "strategy.kwargs={pretrain_epochs: 1, warmup_epochs: 1, regular: true}")
    net, st = engine.model, engine.strategy
    assert set(engine.owned) == {"arch0", "arch1", "eval"} and [st.phase(e) for e in range(6)] == \
        ["pretrain", "warmup", "search"] * 2
    with pytest.raises(ConfigError, match="'train.epochs' = 5 must split evenly over the 2 stages"):
        _engine("train.epochs=5")
    images, targets = next(iter(engine.train_loader))
    alpha0, eval_w = net.alphas[0].detach().clone(), net.eval_classifier.weight.detach().clone()
    engine.train_step(images, targets)  # pretrain: the search network only; nothing built yet
    assert torch.equal(net.alphas[0], alpha0) and net.genotypes == [None, None]
    engine._end_epoch(1.0)
    assert net.genotypes == [net.derive(0), net.derive(1)]  # built for every stage being searched
    search_w = net.search_classifier.weight.detach().clone()
    engine.train_step(images, targets)  # warm-up: the evaluation network only
    assert torch.equal(net.search_classifier.weight, search_w) and not torch.equal(net.eval_classifier.weight, eval_w)
    engine._end_epoch(1.0)
    engine.train_step(images, targets)  # search: the joint step moves α of both stages (stage 0 is searched)
    assert not torch.equal(net.alphas[0], alpha0) and not torch.equal(net.alphas[1], alpha0) and st.regulariser() > 0
    engine._end_epoch(1.0)
    assert net.stage == 1  # stage 0 is frozen from here on
    frozen, alpha0 = net.genotypes[0], net.alphas[0].detach().clone()
    arch0 = str(st.arch_optimizers[0].state_dict())
    search0 = [p.detach().clone() for p in net.search_stages[0].parameters()]
    eval0 = [p.detach().clone() for p in net.eval_stages[0].parameters()]
    engine._end_epoch(1.0)  # stage 1's pretrain and warm-up epochs, without their steps
    engine._end_epoch(1.0)
    engine.train_step(images, targets)  # stage 1's search: stage 0 runs as evaluation cells in both networks
    engine._end_epoch(1.0)
    assert net.genotypes[0] == frozen and net.arch()["stages"][0] == frozen and torch.equal(net.alphas[0], alpha0)
    assert str(st.arch_optimizers[0].state_dict()) == arch0 and st.arch_optimizers[1].state  # arch0 never again
    assert all(torch.equal(a, b) for a, b in zip(search0, net.search_stages[0].parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(eval0, net.eval_stages[0].parameters(), strict=True))


def test_cdarts_darts_resumes_after_sigkill_bit_identically_and_its_arch_retrains(tmp_path):
    one_cell = json.dumps({**SPACE, "eval_cells": [1, 1]})
    extra = ["strategy.kwargs={pretrain_epochs: 0}", "train.epochs=2", "train.eval_every_epochs=5",
             f"space={one_cell}"]
    args = ["supernet", "--out", str(tmp_path / "killed"), *sets(TINY + extra)]
    assert faults.cream_forked(args, "step:2")[0] == -signal.SIGKILL  # in stage 1, after stage 0's checkpoint
    last = load(list_checkpoints(tmp_path / "killed" / "checkpoints")[-1])
    assert last["progress"]["step"] == 1 and last["strategy"]["stage"] == 1
    ref = RunDir.create(str(tmp_path / "ref"), "supernet")
    train_supernet(load_config(RunConfig, None, [*TINY, *extra]), ref)
    assert faults.cream_forked(["supernet", "--resume", str(tmp_path / "killed")])[0] == 0
    a, b = load(list_checkpoints(ref.checkpoints)[-1]), load(list_checkpoints(tmp_path / "killed" / "checkpoints")[-1])
    assert a["progress"] == b["progress"] and a["progress"]["step"] == 2
    for key in ("model", "optimizer", "strategy", "strategy_optimizers", "rng"):
        assert nested_equal(a[key], b[key]), key
    doc = json.loads((ref.path / "arch.json").read_text())
    assert doc == json.loads((tmp_path / "killed" / "arch.json").read_text())
    assert set(a["strategy_optimizers"]) == {"arch0", "arch1", "eval"} and a["strategy_optimizers"]["arch1"]["state"]
    assert doc["arch"]["stages"] == a["strategy"]["genotypes"] and doc["space"]["family"] == "darts_stages"
    space = get_space(doc["space"])
    model = build_model(space, doc["arch"], channels=4, auxiliary=True)  # 8x8 into the head at 16 px
    assert isinstance(model, StagedDartsNet) and model.auxiliary_head is not None
    model.train()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10) and model.aux_logits.shape == (2, 10)
    with pytest.raises(ArchError, match="must list 2 genotypes"):
        space.validate({"stages": doc["arch"]["stages"][:1]})


def test_one_genotype_in_every_stage_is_darts_cifar():
    arch = {"stages": [DARTS_V2] * 3}
    space = get_space("cdarts-darts")  # C=16 by default
    mixed = {"stages": [DARTS_V2, *space.sample(random.Random(0))["stages"][1:]]}
    with torch.device("meta"):
        staged = StagedDartsNet(arch, channels=36, cells=(7, 7, 6))
        plain = DartsNetCIFAR(DARTS_V2, channels=36, layers=20)
        assert count_params(staged) == count_params(plain) == 3_349_342
        for a in (arch, mixed):
            assert space.cost(a)["params"] == count_params(build_model(space, a))
