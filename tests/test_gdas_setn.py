"""Second-order DARTS, GDAS and SETN on the mixed NB201 supernet: the sampler's straight-through gradient,
SETN's candidates on the spec's test vector (TV-SETN-1), the hypergradient, and SIGKILL resume."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from conftest import benchmark_module, nested_equal, sets
from test_darts import SPACE, TINY

import cream
from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.errors import ConfigError
from cream.nn.batchnorm import frozen_bn_stats
from cream.run_dir import RunDir
from cream.spaces.nb201 import OPS, arch_to_str
from cream.train.checkpoint import list_checkpoints, load
from cream.train.engine import Engine, seed_everything
from cream.train.gdas import gumbel_hard
from cream.train.strategies import make_strategy
from cream.train.uniform import step_rng
from cream.workflows.supernet import new_supernet, resolve_space, train_supernet

faults = benchmark_module("fault_kills")


def _cfg(strategy: str, *extra: str) -> RunConfig:
    return load_config(RunConfig, None, [*TINY, f"strategy.name={strategy}", *extra])


def _engine(strategy: str, *extra: str) -> Engine:
    cfg = _cfg(strategy, *extra)
    seed_everything(0, True, 1)
    splits = build_splits(cfg.data)
    space = resolve_space(cfg, splits.num_classes)
    return Engine(cfg, new_supernet(cfg, space), splits, None, make_strategy(cfg.strategy, space, 0))


def resume_matches_uninterrupted(tmp_path: Path, extra: list[str], steps: int) -> tuple[dict, dict]:
    """Resume the killed run at tmp_path/killed and train the same config uninterrupted at tmp_path/ref; assert
    both end bit-identical (final checkpoint and arch.json). Returns the reference's last checkpoint and arch.json."""
    ref = RunDir.create(str(tmp_path / "ref"), "supernet")
    train_supernet(load_config(RunConfig, None, [*TINY, *extra]), ref)
    assert faults.cream_forked(["supernet", "--resume", str(tmp_path / "killed")])[0] == 0
    a, b = load(list_checkpoints(ref.checkpoints)[-1]), load(list_checkpoints(tmp_path / "killed" / "checkpoints")[-1])
    assert a["progress"] == b["progress"] and a["progress"]["step"] == steps
    for key in ("model", "optimizer", "strategy", "strategy_optimizers", "rng"):
        assert nested_equal(a[key], b[key]), key
    doc = json.loads((ref.path / "arch.json").read_text())
    assert doc["arch"] and doc == json.loads((tmp_path / "killed" / "arch.json").read_text())
    return a, doc


# --- GDAS ----------------------------------------------------------------------------------------
def test_gumbel_hard_is_one_hot_forward_and_soft_backward():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, requires_grad=True)
    c = torch.randn(6, 5)
    weights, chosen = gumbel_hard(logits, 0.7, torch.Generator().manual_seed(3))
    again, chosen_again = gumbel_hard(logits, 0.7, torch.Generator().manual_seed(3))
    assert chosen == chosen_again and torch.equal(weights, again)  # the generator decides the draw
    assert torch.equal(weights.detach(), torch.nn.functional.one_hot(torch.tensor(chosen), 5).float())
    (grad,) = torch.autograd.grad((weights * c).sum(), [logits])
    # the soft sample of the same noise, by hand
    u = torch.rand((6, 5), generator=torch.Generator().manual_seed(3), dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    soft = ((logits.log_softmax(-1) + (-(-u.log()).log()).float()) / 0.7).softmax(-1)
    assert soft.argmax(-1).tolist() == chosen
    (expected,) = torch.autograd.grad((soft * c).sum(), [logits])
    assert torch.allclose(grad, expected, atol=1e-6) and grad.abs().sum() > 0


def test_gdas_steps_one_path_per_edge_and_alpha_gets_the_straight_through_gradient():
    engine = _engine("gdas", "train.epochs=3", "strategy.kwargs={tau_max: 4, tau_min: 1}")
    net, strategy = engine.model, engine.strategy
    assert [strategy.tau()] == [4.0]
    engine.epoch = 2
    assert strategy.tau() == 1.0
    engine.epoch = 0
    [(weights, chosen)] = strategy.sample(0, 1)
    calls = []
    hooks = [block.register_forward_hook(lambda m, i, o, op=op, e=e: calls.append((e, op)))
             for e, edge in enumerate(net.cells[0].edges) for op, block in edge.items()]
    net.set_sampled([(weights, chosen)])
    x, y = engine.next_batch("val")
    loss = torch.nn.functional.cross_entropy(net(x), y)
    for h in hooks:
        h.remove()
    assert sorted(calls) == sorted((e, OPS[c]) for e, c in enumerate(chosen) if OPS[c] != "none")
    (g,) = torch.autograd.grad(loss, [net.alphas])
    ran = [e for e, c in enumerate(chosen) if OPS[c] != "none"]
    assert all(g[e].abs().sum() > 0 for e in ran)
    net.set_sampled(None)
    start = net.alphas.detach().clone()
    images, targets = next(iter(engine.train_loader))
    engine.train_step(images, targets)
    assert not torch.equal(start, net.alphas) and net.sampled is None and engine.stream_batches == {"val": 2}
    with pytest.raises(ConfigError, match="'strategy.kwargs.tau_max' = 0.05 is not allowed"):
        make_strategy(_cfg("gdas", "strategy.kwargs={tau_max: 0.05}").strategy, net.space, 0)


# --- SETN ----------------------------------------------------------------------------------------
def test_setn_top_archs_on_the_spec_test_vector():
    net = cream.supernet(SPACE, kind="mixed")
    with torch.no_grad():
        net.alphas.copy_(torch.tensor([0, .5, 1, 1.5, -.5]).repeat(6, 1))
        net.alphas[3] = torch.tensor([0, 2, 0, 0, 0])
    top = net.top_archs(3)
    assert len(net.space_archs()) == 15_625
    assert arch_to_str(top[0][0]) == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                                      "nor_conv_3x3~1|nor_conv_3x3~2|")
    assert top[0][1] == pytest.approx(-4.668161, abs=1e-6)
    assert [lp for _, lp in top[1:]] == pytest.approx([-5.168161] * 2, abs=1e-6)
    assert math.isclose(torch.logsumexp(net.log_probs(), 0).item(), 0.0, abs_tol=1e-9)  # a distribution


def test_setn_weight_step_is_single_path_and_scores_candidates_on_one_fixed_subset():
    engine = _engine("setn", "strategy.kwargs={candidates: 4, eval_images: 20}")
    net, strategy = engine.model, engine.strategy
    alphas = net.alphas
    images, targets = next(iter(engine.train_loader))
    path = {id(p) for p in net.path_parameters(strategy.space.sample(step_rng(0, 0)))}
    with_grad = []
    engine.optimizer.register_step_pre_hook(lambda *a: with_grad.append(
        {id(p) for p in net.parameters() if p.grad is not None}))
    start = alphas.detach().clone()
    engine.train_step(images, targets)
    assert not torch.equal(start, alphas)
    # the weights stepped on the uniformly sampled path's gradients only (not the relaxed α step's)
    assert with_grad[0] <= path and len(with_grad[0]) > 0 and len(path) < len(list(net.parameters())) - 1
    batches = strategy.score_batches(4)
    assert all(torch.equal(b[0], batches[0][0]) for b in batches) and len(batches[0][1]) == 20
    sel = strategy.select()
    assert sel["arch"] in [a for a, _ in net.top_archs(4)] and 0 <= sel["score"] <= 1
    strategy.legacy_single_batch = True
    legacy = strategy.score_batches(4)
    assert not torch.equal(legacy[0][0], legacy[1][0])  # the original: each candidate its own batch
    with pytest.raises(ConfigError, match="'strategy.kwargs.second_order' = True is not allowed"):
        make_strategy(_cfg("setn", "strategy.kwargs={second_order: true}").strategy, net.space, 0)


# --- second-order DARTS --------------------------------------------------------------------------
def test_second_order_darts_alpha_gradient_is_the_hypergradient():
    engine = _engine("darts", "strategy.kwargs={second_order: true}")
    net = engine.model
    images, targets = next(iter(engine.train_loader))
    held = engine.next_batch("val")
    captured = []
    engine.owned["arch"].optimizer.register_step_pre_hook(lambda *a: captured.append(net.alphas.grad.clone()))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    engine.strategy.second_order_step(images, targets, *held)
    lr = engine.optimizer.param_groups[0]["lr"]
    # by hand: a copy of the net stepped by SGD on the train loss, with α a leaf shared through the step
    net.load_state_dict(state)
    alphas = net.alphas.detach().clone().requires_grad_(True)
    params = {n: p for n, p in net.named_parameters() if n != "alphas"}
    with frozen_bn_stats(net):
        inner = torch.nn.functional.cross_entropy(torch.func.functional_call(net, {**params, "alphas": alphas},
                                                                             (images,)), targets)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
        stepped = {n: p if g is None else p - lr * g for (n, p), g in zip(params.items(), grads, strict=True)}
        out = torch.func.functional_call(net, {**stepped, "alphas": alphas}, (held[0],))
        (expected,) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, held[1]), [alphas])
        (first,) = torch.autograd.grad(torch.nn.functional.cross_entropy(
            torch.func.functional_call(net, {"alphas": alphas}, (held[0],)), held[1]), [alphas])
    assert torch.allclose(captured[0], expected, atol=1e-6)
    assert not torch.allclose(captured[0], first, atol=1e-6)  # the through-the-step term is there


# --- resume --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("strategy", "kwargs"), [("gdas", "{tau_max: 5}"),
                                                  ("setn", "{candidates: 3, eval_images: 20}")])
def test_strategy_resumes_after_sigkill_bit_identically(tmp_path, strategy, kwargs):
    extra = [f"strategy.name={strategy}", f"strategy.kwargs={kwargs}", "train.epochs=2", "train.ckpt_every_steps=2",
             "train.keep_checkpoints=20"]
    args = ["supernet", "--out", str(tmp_path / "killed"), *sets(TINY + extra)]
    assert faults.cream_forked(args, "step:8")[0] == -signal.SIGKILL  # in epoch 1, after the step-6 checkpoint
    ckpts = tmp_path / "killed" / "checkpoints"
    assert load(list_checkpoints(ckpts)[-1])["progress"]["batch_in_epoch"] == 1  # mid-epoch (step 6)
    assert not (tmp_path / "killed" / "arch.json").exists()

    resume_matches_uninterrupted(tmp_path, extra, steps=10)
