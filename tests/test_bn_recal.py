"""BatchNorm recalibration for candidates with inherited weights."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import TINY_CREAM
from torch import nn

from cream.errors import ConfigError
from cream.nn.batchnorm import bn_recalibrated, preserved_bn_stats, recalibrate_bn
from cream.spaces import get_space
from cream.supernets import build_supernet

SPACE = TINY_CREAM




@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    space = get_space(SPACE)
    net = build_supernet(space)
    rng = random.Random(0)
    with torch.no_grad():  # give every BN non-trivial statistics
        for _ in range(3):
            net(torch.randn(8, 3, 32, 32) * 2 + 1, arch=space.sample(rng))
    return net


def _calib(n_batches=3, batch=8, size=32):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, size, size, generator=g) * 3 - 1, torch.zeros(batch))
            for _ in range(n_batches)]


def _stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_running_stats_are_cumulative_averages():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.Dropout(0.5))
    batches = [torch.randn(5, 3, 8, 8) for _ in range(4)]
    model.eval()
    used = recalibrate_bn(model, batches, num_images=17)  # 5 + 5 + 5 + 2
    assert used == 17
    with torch.no_grad():
        feats = [model[0](b) for b in (batches[0], batches[1], batches[2], batches[3][:2])]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).flatten(1).var(1) for f in feats]).mean(0)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert bn.num_batches_tracked.item() == 4 and bn.momentum == 0.3
    assert not model.training and not model[2].training  # modes restored


def test_only_the_active_path_is_recalibrated(supernet):
    space = supernet.space
    arch = space.sample(random.Random(5))
    before = _stats(supernet)
    supernet.train()
    recalibrate_bn(supernet, _calib(), 16, arch=arch)
    after = _stats(supernet)
    assert supernet.training and all(m.training for m in supernet.modules())
    active = {f"blocks.{g.stage}.{g.index}.{arch['ops'][g.stage][g.index]}." for g in space.geometry}
    for key in before:
        in_path = not key.startswith("blocks.") or any(key.startswith(p) for p in active)
        assert torch.equal(before[key], after[key]) != in_path, key
    supernet.load_state_dict({**supernet.state_dict(), **before})


def test_recalibrated_child_equals_recalibrated_supernet_path(supernet):
    space = supernet.space
    rng = random.Random(7)
    x = torch.randn(4, 3, 32, 32)
    supernet.train()
    before = _stats(supernet)
    for _ in range(2):
        arch = space.sample(rng)
        child = supernet.extract(arch)
        with bn_recalibrated(supernet, _calib(), 20, arch=arch) as net, torch.no_grad():
            expected = net.eval()(x)
        recalibrate_bn(child, _calib(), 20)
        with torch.no_grad():
            torch.testing.assert_close(child.eval()(x), expected, rtol=0, atol=1e-6)
    after = _stats(supernet)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the supernet's stats are back
    assert supernet.training  # and its mode


def test_keep_stats_uses_the_supernet_statistics(supernet):
    arch = supernet.space.sample(random.Random(9))
    x = torch.randn(2, 3, 32, 32)
    supernet.eval()
    with torch.no_grad():
        with bn_recalibrated(supernet, _calib(), 16, arch=arch, keep_stats=True) as net:
            kept = net(x)
        with bn_recalibrated(supernet, _calib(), 16, arch=arch) as net:
            recal = net(x)
        assert torch.equal(supernet(x), kept) and not torch.equal(kept, recal)


def test_preserved_stats_survive_errors_and_bad_input(supernet):
    before = _stats(supernet)
    with pytest.raises(RuntimeError), preserved_bn_stats(supernet):
        recalibrate_bn(supernet, _calib(), 8)
        raise RuntimeError("interrupted")
    assert all(torch.equal(before[k], v) for k, v in _stats(supernet).items())
    with pytest.raises(ConfigError, match="num_images = 0"):
        recalibrate_bn(supernet, _calib(), 0)
