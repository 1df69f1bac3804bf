"""The MobileNet choice-block supernet: paths, extraction, training, timm face."""

from __future__ import annotations

import random

import pytest
import timm
import torch
from conftest import TINY_CREAM
from timm.models.mobilenetv3 import MobileNetV3

import cream.models  # noqa: F401
from cream.cost.measure import count_params
from cream.models.cream_mbv3 import published
from cream.spaces import get_space
from cream.supernets import build_supernet
from cream.supernets.mobilenet import MobileNetSupernet

CIFAR = "configs/spos/cifar-8layer.yaml"




def _trained(space, steps=3, seed=0):
    """A supernet whose weights and BN statistics differ from their initial values."""
    torch.manual_seed(seed)
    net = build_supernet(space)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    rng = random.Random(seed)
    size = space.config.input_size
    for _ in range(steps):
        net.set_arch(space.sample(rng))
        loss = net(torch.randn(8, 3, size, size)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.fixture(scope="module")
def tiny():
    space = get_space(TINY_CREAM)
    return space, _trained(space)


def test_registry_builds_the_supernet(tiny):
    space, net = tiny
    assert isinstance(net, MobileNetSupernet) and net.space is space
    # one module per candidate op per layer, nothing unused (spec §8.9)
    assert [len(layer) for stage in net.blocks for layer in stage] == [
        len(c) for st in space.config.stages for c in st.ops]


def test_extract_equals_supernet_path_in_eval(tiny):
    space, net = tiny
    rng = random.Random(1)
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    for _ in range(4):
        arch = space.sample(rng)
        net.set_arch(arch)
        child = net.extract(arch)
        assert isinstance(child, MobileNetV3) and not child.training
        with torch.no_grad():
            torch.testing.assert_close(child(x), net(x), rtol=0, atol=1e-6)
        assert count_params(child) == space.cost(arch)["params"] == sum(
            p.numel() for p in net.path_parameters(arch))
        bn_child, bn_net = child.bn1, net.bn1
        assert torch.equal(bn_child.running_var, bn_net.running_var)
    net.train()


def test_forward_with_a_teacher_arch_leaves_the_selection(tiny):
    space, net = tiny
    rng = random.Random(2)
    student, teacher = space.sample(rng), space.sample(rng)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    net.set_arch(student)
    with torch.no_grad():
        s1, t = net(x), net(x, arch=teacher)
        s2 = net(x)
        net.set_arch(teacher)
        t2 = net(x)
    net.train()
    assert torch.equal(s1, s2) and torch.equal(t, t2) and not torch.equal(s1, t)
    assert net.arch == teacher


def test_only_the_path_gets_gradients(tiny):
    space, net = tiny
    arch = space.sample(random.Random(3))
    net.zero_grad(set_to_none=True)
    net(torch.randn(2, 3, 32, 32), arch=arch).sum().backward()
    with_grad = {id(p) for p in net.parameters() if p.grad is not None}
    assert with_grad == {id(p) for p in net.path_parameters(arch)}
    net.zero_grad(set_to_none=True)


def test_timm_face(tiny):
    space, net = tiny
    x = torch.randn(2, 3, 32, 32)
    feats = net.forward_features(x)
    assert feats.shape == (2, 32, 4, 4)
    assert net.forward_head(feats, pre_logits=True).shape == (2, 64)
    assert net.pretrained_cfg["input_size"] == (3, 32, 32)
    child = net.extract(net.arch)
    assert child.num_features == net.num_features and child.get_classifier().out_features == 10
    assert child.pretrained_cfg["input_size"] == (3, 32, 32)


def test_extract_matches_published_model_layout():
    space, arch = published("cream_014")
    with torch.device("meta"):
        net = build_supernet(space)
        reference = timm.create_model("cream_014")
        child = net.extract(arch)
    assert type(child) is type(reference)
    assert {k: v.shape for k, v in child.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}


def test_cifar_config_trains_and_extracts():
    space = get_space(CIFAR)
    torch.manual_seed(0)
    net = build_supernet(space)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    rng = random.Random(0)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    arch = {"ops": [["skip", "ir_k5_e6"], ["ir_k3_e3", "skip", "ir_k3_e3", "ir_k5_e6"],
                    ["ir_k3_e3", "ir_k5_e6", "skip", "skip"]]}
    for step in range(2):  # a plain SPOS loop: one uniformly sampled path per step
        net.set_arch(arch if step == 0 else space.sample(rng))
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    net.eval()
    net.set_arch(arch)
    child = net.extract(arch)
    assert len([b for s in child.blocks for b in s]) == 6  # skipped layers are left out
    with torch.no_grad():
        torch.testing.assert_close(child(x), net(x), rtol=0, atol=1e-6)
