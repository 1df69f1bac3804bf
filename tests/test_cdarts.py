"""CDARTS on the mixed NB201 supernet: the joint loss against a hand computation (every distance), op
weights copied both ways, the joint step's gradients, SIGKILL resume and arch.json."""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch
from conftest import sets
from test_darts import TINY
from test_gdas_setn import _cfg, _engine, faults, resume_matches_uninterrupted

from cream.errors import ConfigError
from cream.spaces.nb201 import OPS
from cream.train.cdarts import joint_loss
from cream.train.checkpoint import list_checkpoints, load
from cream.train.strategies import make_strategy

LOGITS_S = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
LOGITS_E = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, -2.0]])
Y = torch.tensor([0, 1])


def _softmax(row: list[float], t: float) -> list[float]:
    z = [math.exp(v / t) for v in row]
    return [v / sum(z) for v in z]


@pytest.mark.parametrize("kind", ["kl", "cosine", "mse", "smoothl1"])
def test_joint_loss_matches_a_hand_computation(kind):
    lam, t = 0.5, 2.0
    ce = sum(-math.log(_softmax(LOGITS_S[i].tolist(), 1)[Y[i]]) + -math.log(_softmax(LOGITS_E[i].tolist(), 1)[Y[i]])
             for i in range(2)) / 2
    p_s = [_softmax(r, t) for r in LOGITS_S.tolist()]
    p_e = [_softmax(r, t) for r in LOGITS_E.tolist()]
    pairs = [(a, b) for rs, re in zip(p_s, p_e, strict=True) for a, b in zip(rs, re, strict=True)]  # (p_S, p_E)
    if kind == "kl":  # nn.KLDivLoss(): mean over all 6 elements of p_E · (log p_E − log p_S)
        d = sum(e * (math.log(e) - math.log(s)) for s, e in pairs) / 6
    elif kind == "cosine":
        cos = [sum(a * b for a, b in zip(rs, re, strict=True))
               / math.sqrt(sum(a * a for a in rs) * sum(b * b for b in re)) for rs, re in zip(p_s, p_e, strict=True)]
        d = 1 - sum(cos) / 2
    elif kind == "mse":
        d = sum((s - e) ** 2 for s, e in pairs) / 6
    else:
        d = sum(0.5 * (s - e) ** 2 if abs(s - e) < 1 else abs(s - e) - 0.5 for s, e in pairs) / 6
    expected = ce / lam + lam * t * t * d + 0.25
    got = joint_loss(LOGITS_S, LOGITS_E, Y, lam, t, kind, torch.tensor(0.25))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # neither side is detached: both networks' logits get gradients from the distance
    s, e = LOGITS_S.clone().requires_grad_(True), LOGITS_E.clone().requires_grad_(True)
    gs, ge = torch.autograd.grad(joint_loss(s, e, Y, lam, t, kind), [s, e])
    assert gs.abs().sum() > 0 and ge.abs().sum() > 0


def _op_state(net, arch):
    chosen = [f".edges.{i}.{op}." for i, op in enumerate(arch["ops"]) if op != "none"]
    return {k: v for k, v in net.state_dict().items() if k.startswith("cells.") and any(c in k for c in chosen)}


def test_eval_network_shares_the_stem_and_copies_op_weights_both_ways():
    engine = _engine("cdarts", "train.epochs=3", "strategy.kwargs={pretrain_epochs: 0, regular: true}")
    net, st = engine.model, engine.strategy
    assert st.eval_net.stem is net.stem and st.genotype == net.derive()
    assert st.eval_net.arch == st.genotype  # built at once (no pretraining), forward = extract(genotype)'s
    x, _ = engine.next_batch("val")
    net.eval(), st.eval_net.eval()
    assert torch.allclose(st.eval_net(x), net.extract(st.genotype).eval()(x), atol=1e-6)
    net.train()
    images, targets = next(iter(engine.train_loader))
    start_alpha = net.alphas.detach().clone()
    search_grads = []
    st.eval_optimizer.register_step_pre_hook(lambda *a: search_grads.append(
        {n for n, p in net.named_parameters() if p.grad is not None}))
    engine.train_step(images, targets)  # joint step + search-weight step
    assert not torch.equal(start_alpha, net.alphas)
    # the joint step gave gradients to α and the shared stem only, never to the search network's own weights
    assert search_grads[0] == {"alphas", "stem.0.weight", "stem.1.weight", "stem.1.bias"}
    eval_state, search_state = _op_state(st.eval_net, st.genotype), _op_state(net, st.genotype)
    assert eval_state and any(not torch.equal(eval_state[k], search_state[k]) for k in eval_state)
    # the end of a search epoch: eval → search, then α moves so the genotype changes, and search → eval
    old = dict(st.genotype)
    with torch.no_grad():
        net.alphas.zero_()
        net.alphas[:, OPS.index("nor_conv_1x1")] = 1.0
    st.rederive()
    after = _op_state(net, old)
    assert all(torch.equal(after[k], v) for k, v in eval_state.items())  # eval's ops now in the search net
    assert st.genotype == {"ops": ["nor_conv_1x1"] * 6} != old and st.eval_net.arch == st.genotype
    new_eval, new_search = _op_state(st.eval_net, st.genotype), _op_state(net, st.genotype)
    assert new_eval and all(torch.equal(v, new_search[k]) for k, v in new_eval.items())
    assert st.regulariser() > 0
    with pytest.raises(ConfigError, match="'strategy.kwargs.distance' = 'l2' is not allowed"):
        make_strategy(_cfg("cdarts", "strategy.kwargs={distance: l2}").strategy, net.space, 0)
    with pytest.raises(ConfigError, match="leaves no search epoch"):
        _engine("cdarts", "train.epochs=2", "strategy.kwargs={pretrain_epochs: 1, warmup_epochs: 1}")


def test_cdarts_resumes_after_sigkill_bit_identically_and_writes_arch_json(tmp_path):
    extra = ["strategy.name=cdarts", "strategy.kwargs={pretrain_epochs: 1, warmup_epochs: 1, regular: true}",
             "train.epochs=3", "train.ckpt_every_steps=2", "train.keep_checkpoints=20"]
    args = ["supernet", "--out", str(tmp_path / "killed"), *sets(TINY + extra)]
    assert faults.cream_forked(args, "step:13")[0] == -signal.SIGKILL  # in the search epoch, after step 12's ckpt
    ckpts = tmp_path / "killed" / "checkpoints"
    last = load(list_checkpoints(ckpts)[-1])
    assert last["progress"]["batch_in_epoch"] == 2 and last["strategy"]["genotype"] is not None
    a, doc = resume_matches_uninterrupted(tmp_path, extra, steps=15)
    assert set(a["strategy_optimizers"]) == {"arch", "eval"} and a["strategy_optimizers"]["eval"]["state"]
    assert doc["arch"] == a["strategy"]["genotype"]
    epochs = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
              if "genotype" in line]
    assert [("eval_net_top1" in r, r["genotype"] is None) for r in epochs] == [(False, False), (True, False),
                                                                              (True, False)]
