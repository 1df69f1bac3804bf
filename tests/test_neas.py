"""NEAS ensembles: the spec's test vectors, the published models' costs, the ensemble space and supernet,
and supernet -> search -> retrain of an ensemble through the CLI on a tiny space (digits)."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from conftest import TINY_CREAM
from safetensors.torch import load_file

from cream.cli import main
from cream.config import RunConfig, load_config
from cream.cost import measure
from cream.errors import ArchError, ConfigError
from cream.models import build_model, load_exported
from cream.models.ensemble import member_loss
from cream.run_dir import RunDir
from cream.spaces import get_space
from cream.spaces.neas import PUBLISHED, arch_from_neas_encoding, neas_encoding, published
from cream.supernets import build_supernet
from cream.train.checkpoint import list_checkpoints, load
from cream.train.ensemble import drop_lowest, ensemble_metrics
from cream.weights import load_weights
from cream.workflows.supernet import train_supernet

TINY = {"family": "ensemble", "member": TINY_CREAM, "members": 2}


def test_tv_neas_1_decodes_the_flat_encoding():
    flat = [16, 2, 0, 3, 2, 0, 2, 5, 0, -1, 3, 0, 2, 0, 0, 3, 5, 4, 0, 5, 0, 5, 4, 0, 3, 5, 2, 5, 0]
    arch = arch_from_neas_encoding(flat)
    op = {0: "ir_k3_e4_se", 2: "ir_k5_e4_se", 3: "ir_k5_e6_se", 4: "ir_k7_e4_se", 5: "ir_k7_e6_se", -1: "skip"}
    assert len(arch["shared"]) == 17  # split s=16, plus the DS layer
    assert arch["shared"] == ["ds_k3_se", *(op[i] for i in [3, 2, 0, 2, 5, 0, -1, 3, 0, 2, 0, 0, 3, 5, 4, 0])]
    assert arch["members"] == [[*(op[i] for i in m), "cn_k1"] for m in ([5, 0, 5, 4], [3, 5, 2, 5])]
    assert neas_encoding(arch) == flat
    with pytest.raises(ArchError, match="does not fit s=16, K=2"):
        arch_from_neas_encoding(flat[:-1])


def test_tv_neas_2_ensemble_accuracy_and_disagreement():
    f1 = [[2, 1, 0], [0, 1, 3], [1, 0, 0], [.2, .1, 0]]
    f2 = [[0, 3, 0], [0, .5, 1], [0, 0, 2.5], [0, .3, 0]]
    m = ensemble_metrics(torch.tensor([f1, f2]), torch.tensor([0, 2, 2, 1]))
    assert m["member_top1"] == [.5, .75] and m["prediction"] == [1, 2, 2, 1]
    assert m["top1"] == .75 and m["disagreement"] == .75


def test_member_loss_is_the_sum_of_member_losses_not_the_loss_of_the_mean():
    logits, y = torch.tensor([[[2., 0.]], [[0., 1.]]]), torch.tensor([1])
    ce = torch.nn.CrossEntropyLoss()
    assert member_loss(ce, logits, y).item() == pytest.approx(ce(logits[0], y).item() + ce(logits[1], y).item())
    assert member_loss(ce, logits, y).item() != pytest.approx(ce(logits.mean(0), y).item())


def test_drop_rules_follow_abs_tv_2():
    angle = {(0, 0): .9, (0, 1): .8, (0, -1): .5, (1, 0): .7, (1, 1): .62, (1, -1): .2, (2, 0): .4, (2, 1): .33,
             (2, -1): .12}
    choices = {"l0": (0, 1, 2), "l1": (0, 1, -1)}
    scores = {("l0", o): sum(a for (a0, _), a in angle.items() if a0 == o) / 3 for o in choices["l0"]}
    scores |= {("l1", o): sum(a for (_, a1), a in angle.items() if a1 == o) / 3 for o in choices["l1"]}
    assert drop_lowest(scores, choices, "global", 3) == {"l0": [0], "l1": [0, 1]}
    assert drop_lowest(scores, choices, "global", 5) == {"l0": [0], "l1": [0]}
    assert drop_lowest(scores, choices, "per_layer", 1) == {"l0": [0, 1], "l1": [0, 1]}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_models_cost_within_one_percent_of_their_names(name):
    space, arch = published(name)
    assert neas_encoding(arch) == PUBLISHED[name][0]
    assert space.cost(arch, convention="ptflops")["macs"] == pytest.approx(PUBLISHED[name][1] * 1e6, rel=0.01)


def test_cream_profile_reports_the_published_macs_within_one_percent(capsys):
    name = "neas_s"  # building and measuring one at 224 px is enough; the analytic counts of all three are above
    capsys.readouterr()
    assert main(["profile", "--model", name, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    space, arch = published(name)
    assert {k: got[k] for k in ("params", "macs")} == space.cost(arch)  # measured on the model = analytic
    assert got["macs_ptflops"] == pytest.approx(PUBLISHED[name][1] * 1e6, rel=0.01)


def test_shared_layers_are_counted_once():
    space = get_space(TINY)
    arch = space.restrict({"split": [5]}).sample(random.Random(3))
    one = [space.member.cost(space.member_arch(arch, k)) for k in range(2)]
    trunk_shared = space.cost(arch)["macs"]
    assert trunk_shared < one[0]["macs"] + one[1]["macs"]
    wider = {"shared": arch["shared"][:1], "members": [arch["shared"][1:] + m for m in arch["members"]]}
    assert space.cost(wider)["macs"] > trunk_shared  # sharing less costs more


def test_space_sample_mutate_crossover_validate_and_round_trip():
    space = get_space(TINY)
    assert space.splits == (1, 3, 5) and get_space(space.to_config()) == space
    rng = random.Random(0)
    a = space.sample(rng)
    splits = set()
    for _ in range(100):
        b = space.mutate(a, rng)
        assert b != a and space.validate(b) == b
        c = space.crossover(a, b, rng)
        assert space.validate(c) == c
        splits.add(len(b["shared"]))
        a = b
    assert splits == {1, 3, 5}
    with pytest.raises(ArchError, match="split"):
        space.validate({"shared": a["shared"][:2], "members": a["members"]})
    with pytest.raises(ArchError, match=r"members\[1\]\[0\]"):
        space.validate({"shared": a["shared"], "members": [a["members"][0], ["nope", *a["members"][1][1:]]]})
    with pytest.raises(ConfigError, match="members"):
        get_space({**TINY, "members": 1})
    assert space.restrict({"split": [3]}).num_archs() < space.num_archs()


@pytest.mark.parametrize("heads", ["shared", "separate"])
def test_supernet_extracts_ensembles_with_equal_outputs_and_counted_costs(heads):
    space = get_space({**TINY, "members": 3})
    net = build_supernet(space, heads=heads)
    rng, x = random.Random(1), torch.randn(2, 3, 32, 32)
    for _ in range(2):
        arch = space.sample(rng)
        net.set_arch(arch)
        net.train()
        net(x, members=True).sum().backward()
        net.eval()
        child = net.extract(arch).eval()
        assert torch.allclose(net(x), child(x), atol=1e-5)
        assert child(x, members=True).shape == (3, 2, 10)
        assert measure(child, (3, 32, 32)) == space.cost(arch)
        assert type(build_model(space, arch)) is type(child)


def test_the_trunk_gradient_is_divided_by_k():
    space = get_space(TINY)
    arch = space.sample(random.Random(2))
    net = build_model(space, arch).eval()
    x = torch.randn(2, 3, 32, 32)
    net(x, members=True).sum().backward()
    with_div = net.trunk.conv_stem.weight.grad.clone()
    net.zero_grad()
    h = net.trunk(x)
    torch.stack([head(h) for head in net.heads]).sum().backward()
    assert torch.allclose(with_div * 2, net.trunk.conv_stem.weight.grad, rtol=1e-4, atol=1e-7)


DATA = ["--set", "data.test_per_class=10", "--set", "data.image_size=16", "--set", "train.threads=1"]
SUPERNET = [*DATA, "--set", f"space={json.dumps(TINY)}", "--set", "data.train_per_class=12",
            "--set", "data.batch_size=10", "--set", "train.epochs=2",
            "--set", "train.deterministic=true", "--set", "strategy.name=ensemble_shrink",
            "--set", "strategy.kwargs={warmup_epochs: 0, samples: 1, drops: 2, val_batches: 1}"]


def test_supernet_shrink_search_retrain_end_to_end(tmp_path, capsys):
    run = tmp_path / "supernet"
    assert main(["supernet", "--out", str(run), "--json", *SUPERNET]) == 0
    dropped = json.loads((run / "shrink.json").read_text())["dropped"]
    assert len(dropped) == 4 and {d["epoch"] for d in dropped} == {0, 1}
    narrow = get_space(json.loads((run / "space.json").read_text()))
    assert narrow.num_archs() < get_space(TINY).num_archs()

    # Resumed from the end of epoch 0 (the space after the first drops is in the checkpoint), epoch 1 is the same.
    again = tmp_path / "again"
    shutil.copytree(run, again)
    last = list_checkpoints(again / "checkpoints")[-1]
    assert get_space(load(last)["strategy"]["space"]) == narrow
    last.unlink()
    (again / "supernet.safetensors").unlink()
    resumed = RunDir.create(str(again), "supernet", resume=True)
    train_supernet(load_config(RunConfig, resumed.file("config.yaml")), resumed, resume=True)
    a, b = load_file(run / "supernet.safetensors"), load_file(again / "supernet.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "shrink.json").read_text() == (again / "shrink.json").read_text()

    search = tmp_path / "search"
    limit = 1_100_000
    assert main(["search", "--supernet", str(run), "--out", str(search), "--set", "search.budget=6",
                 "--set", f"search.limits={{macs: [null, {limit}]}}", "--set", "search.eval_images=40",
                 "--set", "search.kwargs={generations: 2, population: 3, parents: 2, mutations: 2, crossovers: 1}",
                 "--set", "search.test_top_k=1"]) == 0
    found = json.loads((search / "arch.json").read_text())
    assert narrow.validate(found["arch"]) == found["arch"] and narrow.cost(found["arch"])["macs"] <= limit

    capsys.readouterr()
    retrain = tmp_path / "retrain"
    assert main(["retrain", "--out", str(retrain), "--arch", str(search / "arch.json"), "--json",
                 "--set", "train.max_steps=3", "--set", "data.train_per_class=20", *DATA]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == "arch" and 0 <= summary["test_top1"] <= 1
    assert len(summary["test_member_top1"]) == 2 and 0 <= summary["test_disagreement"] <= 1

    exported = tmp_path / "ensemble.safetensors"
    assert main(["export", str(retrain), "--out", str(exported)]) == 0
    model, x = load_exported(exported).eval(), torch.randn(2, 3, 16, 16)
    retrained = build_model(narrow, found["arch"]).eval()
    load_weights(retrained, retrain / "model.safetensors")
    assert torch.equal(model(x), retrained(x))
