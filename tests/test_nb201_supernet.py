import random

import pytest
import timm
import torch

import cream
from cream.cost import count_params, measure
from cream.errors import ArchError
from cream.models.nb201 import NB201Net
from cream.spaces.nb201 import NB201Space, index_to_arch

ALL_3X3 = {"ops": ["nor_conv_3x3"] * 6}


@pytest.fixture(scope="module")
def supernet():
    """A small trained supernet (C = 8, 2 cells per stage): weights and BN statistics away from their init."""
    torch.manual_seed(0)
    net = cream.supernet("nb201", channels=8, cells_per_stage=2)
    rng = random.Random(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        net.set_arch(net.space.sample(rng))
        loss = net(torch.randn(4, 3, 16, 16)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.fixture(scope="module")
def full_supernet():
    return cream.supernet("nb201")


@pytest.mark.parametrize("arch", [ALL_3X3, index_to_arch(6111),
                                  {"ops": ["avg_pool_3x3", "skip_connect", "nor_conv_1x1", "none", "none",
                                           "nor_conv_3x3"]}])
def test_analytic_cost_equals_measured_cost_of_the_extracted_model(full_supernet, arch):
    assert measure(full_supernet.extract(arch), (3, 32, 32)) == NB201Space().cost(arch)


def test_analytic_cost_of_other_sizes(supernet):
    arch = index_to_arch(6111)
    assert measure(supernet.extract(arch), (3, 32, 32)) == supernet.space.cost(arch)
    space = NB201Space(num_classes=120, input_size=16)
    assert measure(NB201Net(arch, num_classes=120, input_size=16), (3, 16, 16)) == space.cost(arch)


def test_published_extremes():
    space = NB201Space()
    assert space.cost(ALL_3X3) == {"params": 1_531_546, "macs": 220_119_680}
    assert count_params(NB201Net(ALL_3X3)) == 1_531_546
    assert count_params(NB201Net(6111)) == 1_073_466


def test_extracted_model_equals_the_supernet_in_eval(supernet):
    rng = random.Random(2)
    x = torch.randn(6, 3, 16, 16)
    supernet.eval()
    try:
        for _ in range(4):
            arch = supernet.space.sample(rng)
            supernet.set_arch(arch)
            child = supernet.extract(arch).eval()
            with torch.no_grad():
                assert torch.equal(supernet(x), child(x))
            assert child.arch == arch
            shared = {t.data_ptr() for t in supernet.state_dict().values()}
            assert not any(t.data_ptr() in shared for t in child.state_dict().values())  # copies
    finally:
        supernet.train()


def test_set_arch_selects_the_path_and_rejects_bad_archs(supernet):
    x = torch.randn(2, 3, 16, 16)
    supernet.eval()
    try:
        with torch.no_grad():
            supernet.set_arch(ALL_3X3)
            a = supernet(x)
            supernet.set_arch(index_to_arch(6111))
            b = supernet(x)
            supernet.set_arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                              "nor_conv_3x3~2|")
            assert torch.equal(supernet(x), a) and not torch.equal(a, b)
    finally:
        supernet.train()
    with pytest.raises(ArchError, match="not allowed"):
        supernet.set_arch({"ops": ["conv_5x5"] * 6})


def test_all_none_cell_outputs_the_classifier_bias():
    net = NB201Net({"ops": ["none"] * 6}, channels=4).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 3, 16, 16))
    # Node 3 is zero, so every image gets BN-ReLU of zeros, then the same logits.
    assert torch.allclose(out, out[:1].expand_as(out))


def test_timm_face():
    model = timm.create_model("nb201", num_classes=100, arch=ALL_3X3, channels=8, input_size=16)
    assert model.arch == ALL_3X3 and model.pretrained_cfg["input_size"] == (3, 16, 16)
    x = torch.randn(2, 3, 16, 16)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 4, 4) == (2, 32, 4, 4)
    assert model.forward_head(feats).shape == (2, 100)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 32)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    assert timm.create_model("nb201", channels=4).arch == index_to_arch(6111)
    assert timm.create_model("nb201", arch=1651, channels=4).arch == {"ops": ["none"] * 6}
