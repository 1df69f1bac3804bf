"""Cream's supernet training: op probabilities, the prioritized board, meta-matching, resume, board search."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter

import pytest
import torch
import yaml
from conftest import nested_equal
from torch import nn

from cream.config import RunConfig, StrategyConfig, load_config, with_overrides
from cream.data import build_splits, train_loader
from cream.errors import ConfigError, CreamError
from cream.nn.batchnorm import recalibrate_bn
from cream.run_dir import RunDir
from cream.search import BoardSearch
from cream.spaces import get_space
from cream.spaces.base import arch_key
from cream.supernets import build_supernet
from cream.train.board import BoardEntry, MatchingNetwork, PathBoard
from cream.train.checkpoint import checkpoint_path, load
from cream.train.cream import Cream
from cream.train.engine import Engine, seed_everything
from cream.train.evaluate import evaluate
from cream.train.strategies import make_strategy
from cream.workflows.search import search_supernet
from cream.workflows.supernet import load_supernet, train_supernet

PRE_PROB = {"ir_k3_e4_se": 0.05, "ir_k3_e6_se": 0.2, "ir_k5_e4_se": 0.05, "ir_k5_e6_se": 0.5,
            "ir_k7_e4_se": 0.05, "ir_k7_e6_se": 0.15}
TINY = ["space={preset: cream, layers: [1, 1, 1, 1, 1], input_size: 16}", "data.train_per_class=12",
        "data.batch_size=16", "data.eval_batch_size=128", "train.threads=1", "train.deterministic=true",
        "optim.opt=sgd", "optim.lr=0.05", "optim.weight_decay=0.0001", "optim.smoothing=0.1", "train.epochs=3"]
CREAM = ["strategy.name=cream",
         "strategy.kwargs={meta_start_epoch: 0, update_every: 3, board_size: 3, "
         f"probs: {json.dumps(PRE_PROB)}}}"]


def _cfg(*extra: str) -> RunConfig:
    return load_config(RunConfig, None, [*TINY, *CREAM, *extra])


@pytest.fixture(scope="module")
def cream_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cream") / "supernet"
    summary = train_supernet(_cfg(), RunDir.create(str(out), "supernet"))
    return out, summary


# --- sampling ----------------------------------------------------------------------------------
def test_sampling_follows_the_op_probabilities():
    space = get_space("cream", layers=[2, 2, 1, 1, 1], input_size=16, allow_skip=True, num_classes=10)
    assert "skip" in space.config.stages[1].ops[1]
    rng = random.Random(0)
    counts = Counter(op for _ in range(2000) for st in space.sample(rng, probs=PRE_PROB)["ops"][1:6] for op in st)
    assert sum(counts.values()) == 14000 and "skip" not in counts  # not listed: never drawn
    for op, p in PRE_PROB.items():  # 14000 draws: 4 standard deviations at most
        assert abs(counts[op] / 14000 - p) < 4 * (p * (1 - p) / 14000) ** 0.5, op
    arch = space.sample(rng, probs={"ir_k3_e4_se": 1.0})
    assert arch["ops"][0] == ["ds_k3_se"] and arch["ops"][6] == ["cn_k1"]
    assert all(op == "ir_k3_e4_se" for st in arch["ops"][1:6] for op in st)


@pytest.mark.parametrize("probs,message", [
    ({"ir_k9_e4": 1.0}, "must map op names of the space"),
    ({"ir_k3_e4_se": -1.0}, "non-negative weights"),
    ({"skip": 1.0}, r"layer ops\[1\]\[0\] .* weight 0"),
])
def test_bad_op_probabilities_are_one_line_config_errors(probs, message):
    space = get_space("cream", layers=[2, 1, 1, 1, 1], allow_skip=True)
    with pytest.raises(ConfigError, match=message):
        make_strategy(StrategyConfig("uniform", {"probs": probs}), space, 0)
    with pytest.raises(ConfigError, match=message):
        make_strategy(StrategyConfig("cream", {"probs": probs}), space, 0)


def test_uniform_with_probs_is_deterministic_per_step_and_spaces_without_probs_refuse_them():
    space = get_space("cream", layers=[2, 2, 2, 2, 2])
    a, b = (make_strategy(StrategyConfig("uniform", {"probs": PRE_PROB}), space, 3) for _ in range(2))
    assert [a.arch_for_step(s) for s in range(5)] == [b.arch_for_step(s) for s in range(5)]
    assert a.arch_for_step(0) != a.arch_for_step(1)
    with pytest.raises(ConfigError, match="does not fit strategy 'uniform'.*probs"):
        make_strategy(StrategyConfig("uniform", {"probs": PRE_PROB}), get_space("nb201"), 0)
    # Cream takes any single-path space: paths are costed in the space's own convention where it has no ptflops
    nb201 = make_strategy(StrategyConfig("cream", {}), get_space("nb201"), 0)
    assert nb201.macs_convention is None and make_strategy(StrategyConfig("cream", {}), space, 0).macs_convention
    cell = {"ops": ["nor_conv_3x3"] * 6}
    assert nb201.path_macs(cell) == get_space("nb201").cost(cell)["macs"]
    with pytest.raises(ConfigError, match=r"strategy.kwargs.pick' = 'best' is not allowed"):
        make_strategy(StrategyConfig("cream", {"pick": "best"}), space, 0)
    for key in ("board_size", "meta_lr"):  # YAML's true is not a number here
        with pytest.raises(ConfigError, match=rf"strategy.kwargs.{key}' = True is not allowed"):
            make_strategy(StrategyConfig("cream", {key: True}), space, 0)


# --- board -------------------------------------------------------------------------------------
def _arch(i: int) -> dict:
    return {"ops": [[f"op{i}"]]}


def _offer(board: PathBoard, i: int, score: float, macs: int) -> bool:
    if not board.accepts(_arch(i), score, macs):
        return False
    board.add(BoardEntry(_arch(i), score, macs, torch.zeros(1)))
    return True


def _board(board: PathBoard) -> list[tuple[int, float, int]]:
    return [(int(e.arch["ops"][0][0][2:]), e.score, e.macs) for e in board.entries]


def test_board_admission_and_order():
    board = PathBoard(size=3, gap=5.0)
    assert _offer(board, 0, 50.0, 100) and _offer(board, 1, 60.0, 200) and _offer(board, 2, 60.0, 300)
    assert _board(board) == [(2, 60.0, 300), (1, 60.0, 200), (0, 50.0, 100)]  # ties: larger MACs first
    assert _offer(board, 3, 52.0, 90)  # beats the worst at fewer MACs
    assert _board(board) == [(2, 60.0, 300), (1, 60.0, 200), (3, 52.0, 90)]
    assert not _offer(board, 4, 57.0, 95)  # neither 5 points better nor cheaper
    assert not _offer(board, 4, 52.0, 80)  # cheaper, but not better
    assert _offer(board, 5, 57.5, 500)  # more than 5 points better
    assert _board(board) == [(2, 60.0, 300), (1, 60.0, 200), (5, 57.5, 500)]

    cheap_first = PathBoard(size=3, tie_break="smaller")
    for i, macs in enumerate((300, 200, 250)):
        _offer(cheap_first, i, 60.0, macs)
    assert [m for _, _, m in _board(cheap_first)] == [200, 250, 300]


def test_board_deduplicates_paths_and_survives_full_ties():
    board = PathBoard(size=3)
    _offer(board, 1, 60.0, 200)
    _offer(board, 2, 55.0, 100)
    assert not _offer(board, 1, 59.0, 200)  # a worse measurement of a path on the board
    assert _offer(board, 2, 70.0, 100)  # a better one replaces its entry
    assert _board(board) == [(2, 70.0, 100), (1, 60.0, 200)]

    repeats = PathBoard(size=3, dedup=False)  # the original: one path may hold several slots
    for _ in range(3):
        assert _offer(repeats, 7, 60.0, 200)  # full ties sort (the original raised comparing tensors)
    assert _board(repeats) == [(7, 60.0, 200)] * 3


# --- meta-matching network --------------------------------------------------------------------
def test_matching_network_scores_each_entry_and_gets_gradients():
    meta = MatchingNetwork(num_classes=10, images=4, generator=torch.Generator().manual_seed(0))
    assert meta.layer.weight.shape == (1, 40) and meta.layer.weight.abs().max() <= 1
    assert torch.equal(meta.layer.bias, torch.zeros(1))
    diff = torch.randn(3, 4, 10)
    scores = meta(diff)
    assert scores.shape == (3,)
    torch.testing.assert_close(scores[1], meta.layer.weight[0] @ diff[1].flatten() + meta.layer.bias[0])
    scores.sum().backward()
    torch.testing.assert_close(meta.layer.weight.grad[0], diff.flatten(1).sum(0))
    assert meta.layer.bias.grad.item() == 3


def _engine(*extra: str) -> tuple[Engine, Cream]:
    cfg = _cfg(*extra)
    seed_everything(0, True, 1)
    splits = build_splits(cfg.data)
    space = get_space(dict(cfg.space, num_classes=splits.num_classes))
    strategy = make_strategy(cfg.strategy, space, 0)
    return Engine(cfg, build_supernet(space), splits, None, strategy), strategy


def _fill_board(engine: Engine, strategy: Cream, images: torch.Tensor, targets: torch.Tensor) -> None:
    for step in range(3):
        arch = strategy.arch_for_step(step)
        out = engine.model(images, arch=arch)
        strategy.offer(arch, images, targets, out, nn.functional.cross_entropy(out, targets))


@pytest.mark.parametrize("legacy", [False, True])
def test_meta_update_trains_only_the_matching_network(legacy):
    engine, strategy = _engine(f"strategy.kwargs.legacy_hypergrad={str(legacy).lower()}")
    images, targets = next(iter(engine.train_loader))
    _fill_board(engine, strategy, images, targets)
    assert len(strategy.board) == 3
    gates = sum(isinstance(m, nn.Hardsigmoid) for m in engine.model.modules())
    model_before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    meta_before = [p.detach().clone() for p in strategy.meta.parameters()]
    strategy.meta_update(images, targets, strategy.arch_for_step(10))
    changed = [not torch.equal(a, b) for a, b in zip(meta_before, strategy.meta.parameters(), strict=True)]
    assert all(changed) and strategy.meta_updates == 1
    after = engine.model.state_dict()  # weights and BN running statistics untouched
    assert all(torch.equal(model_before[k], after[k]) for k in after)
    assert gates > 0 and sum(isinstance(m, nn.Hardsigmoid) for m in engine.model.modules()) == gates  # restored
    assert all(p.grad is None for p in strategy.meta.parameters())


def test_teacher_choice_and_weight():
    engine, strategy = _engine()
    images, targets = next(iter(engine.train_loader))
    _fill_board(engine, strategy, images, targets)
    arch = strategy.arch_for_step(10)
    scores = strategy.match_scores(arch).detach()
    teacher, weight = strategy.select_teacher(arch)
    assert teacher is strategy.board.entries[int(scores.argmax())]
    assert weight == pytest.approx(float(torch.sigmoid(-scores.max())))
    strategy.legacy_weight = True  # the original weighted by the last entry's score
    assert strategy.select_teacher(arch)[1] == pytest.approx(float(torch.sigmoid(-scores[-1])))
    strategy.pick = "top1"
    assert strategy.select_teacher(arch) == (strategy.board.entries[0], 0.5)


# --- whole runs --------------------------------------------------------------------------------
def test_cream_supernet_trains_on_digits(cream_run):
    out, summary = cream_run
    board = json.loads((out / "board.json").read_text())
    assert summary["strategy"] == "cream" and 1 <= len(board) <= 3
    assert [e["score"] for e in board] == sorted((e["score"] for e in board), reverse=True)
    space = get_space({"preset": "cream", "layers": [1, 1, 1, 1, 1], "input_size": 16, "num_classes": 10})
    for e in board:
        assert e["macs"] == space.cost(e["arch"], convention="ptflops-search")["macs"]
        assert e["params"] == space.cost(e["arch"])["params"]
    last = RunDir(out).read_metrics()[-1]
    assert last["epoch"] == 2 and last["meta_updates"] >= 2 and last["board_size"] == len(board)
    assert "val_board_best_top1" in last


def test_uniform_supernet_with_op_probabilities_trains_on_digits(tmp_path):
    cfg = load_config(RunConfig, None, [*TINY, "train.epochs=1", "strategy.name=uniform",
                                        f"strategy.kwargs={{probs: {json.dumps(PRE_PROB)}}}"])
    summary = train_supernet(cfg, RunDir.create(str(tmp_path / "u"), "supernet"))
    assert summary["strategy"] == "uniform" and summary["steps"] > 0
    assert (tmp_path / "u" / "supernet.safetensors").is_file() and not (tmp_path / "u" / "board.json").exists()
    with pytest.raises(CreamError, match="holds no board.json; search method 'board' needs a supernet trained"):
        search_supernet(with_overrides(cfg, {"search": {"method": "board"}}), tmp_path / "u",
                        RunDir.create(str(tmp_path / "s"), "search"))


def test_resume_from_a_mid_run_checkpoint_is_bit_identical(tmp_path):
    cfg = _cfg("train.ckpt_every_steps=5", "train.keep_checkpoints=20")
    ref = RunDir.create(str(tmp_path / "ref"), "supernet")
    train_supernet(cfg, ref)
    final = sorted(ref.checkpoints.glob("step-*.pt"))[-1]
    mid = checkpoint_path(ref.checkpoints, 10)  # epoch 1, mid-epoch: board filled, one meta update done
    state = load(mid)
    assert state["progress"]["epoch"] == 1 and 0 < state["progress"]["batch_in_epoch"]
    assert state["strategy"]["board"] and state["strategy"]["meta_updates"] >= 1

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(ref.file("config.yaml"), resumed / "config.yaml")
    shutil.copy(mid, resumed / "checkpoints" / mid.name)
    train_supernet(cfg, RunDir.create(str(resumed), "supernet", resume=True), resume=True)

    a, b = load(final), load(resumed / "checkpoints" / final.name)
    assert a["progress"] == b["progress"]
    assert a["strategy"]["meta_updates"] > state["strategy"]["meta_updates"]
    for key in ("model", "optimizer", "strategy", "strategy_optimizers"):
        assert nested_equal(a[key], b[key]), key
    assert (ref.file("board.json")).read_text() == (resumed / "board.json").read_text()


def test_board_search_picks_the_best_board_path_and_extraction_matches(cream_run, tmp_path):
    out, _ = cream_run
    board = json.loads((out / "board.json").read_text())
    cfg = _cfg("search.method=board", "search.bn_recal_images=32", f"init={out}")
    summary = search_supernet(cfg, out, RunDir.create(str(tmp_path / "s"), "search"))
    found = json.loads((tmp_path / "s" / "arch.json").read_text())
    records = json.loads((tmp_path / "s" / "search.json").read_text())["records"]
    assert [r["arch"] for r in records] == [e["arch"] for e in board]
    assert summary["method"] == "board" and found["score"] == max(r["score"] for r in records)
    assert found["arch"] == next(r["arch"] for r in records if r["score"] == found["score"])  # first on ties

    # The chosen path, BN-recalibrated as the search did, extracted: same outputs and the same score.
    splits = build_splits(cfg.data)
    net = load_supernet(cfg, out, splits.num_classes)
    recalibrate_bn(net, train_loader(splits.train, 16, seed=cfg.search.seed), 32, arch=found["arch"])
    child = net.extract(found["arch"]).eval()
    net.eval()
    x = torch.stack([splits.val[i][0] for i in range(8)])
    with torch.no_grad():
        torch.testing.assert_close(child(x), net(x), rtol=0, atol=1e-5)
    assert evaluate(child, splits.val, batch_size=128)["top1"] == found["score"]


def test_board_search_scores_the_board_in_order_skips_infeasible_paths_and_resumes(tmp_path):
    space = get_space("cream", layers=[1, 1, 1, 1, 1], input_size=16, num_classes=10)
    rng = random.Random(0)
    paths = [space.sample(rng) for _ in range(5)]
    table = {arch_key(p): s for p, s in zip(paths, [0.3, 0.5, 0.5, 0.9, 0.1], strict=True)}
    calls, interrupted = [], []

    def score(arch):
        if len(calls) == 2 and not interrupted:  # killed while scoring the third path
            interrupted.append(True)
            raise KeyboardInterrupt
        calls.append(arch)
        return table[arch_key(arch)]

    kwargs = {"board": [{"arch": p} for p in paths], "feasible": lambda a: a != paths[3],
              "state_path": tmp_path / "state.json"}
    with pytest.raises(KeyboardInterrupt):
        BoardSearch(space, score, **kwargs).run()
    result = BoardSearch(space, score, **kwargs).run(resume=True)
    assert calls == [paths[0], paths[1], paths[2], paths[4]]  # each feasible path scored once
    assert [r["arch"] for r in result.records] == calls and result.stopped == "board"
    assert result.best["arch"] == paths[1]  # ties go to the path ranked higher on the board


@pytest.mark.parametrize("space", [
    "{family: nb201, channels: 4, cells_per_stage: 1, input_size: 16}",
    "{family: vit, embed_dims: [16, 24], depths: [1, 2], num_heads: [1, 2], mlp_ratios: [2.0, 3.0], head_dim: 8, "
    "img_size: 16, patch_size: 4, max_relative_position: 4}",
])
def test_cream_trains_any_single_path_supernet(tmp_path, space):
    """Board, matching network and meta updates on NB201 cells and ViT slices, costed in the space's own MACs."""
    cfg = load_config(RunConfig, None, [*TINY, f"space={space}", "train.epochs=2", "strategy.name=cream",
                                        "strategy.kwargs={meta_start_epoch: -1, update_every: 2, board_size: 2}"])
    summary = train_supernet(cfg, RunDir.create(str(tmp_path / "run"), "supernet"))
    board = json.loads((tmp_path / "run" / "board.json").read_text())
    space_ = get_space({**yaml.safe_load(space), "num_classes": 10})
    assert summary["strategy"] == "cream" and 1 <= len(board) <= 2
    assert all(e["macs"] == space_.cost(e["arch"])["macs"] for e in board)
    last = RunDir(tmp_path / "run").read_metrics()[-1]
    assert last["meta_updates"] >= 2 and "val_board_best_top1" in last
