"""Any timm VisionTransformer as a supernet: its largest arch is the model, its subnets extract to smaller
VisionTransformers with the supernet's output and the analytic MACs, and a search under 60 % of the MACs
returns one inside the limit."""

import random
import re

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from cream.cost.limits import cost_window, limit_windows
from cream.cost.measure import count_params, measure_macs
from cream.errors import ConfigError
from cream.search import search
from cream.supernets.from_timm import supernet_from_timm
from cream.weights import save_weights


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10).eval()


def test_largest_arch_is_the_model_and_subnets_extract_to_timm(vit, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    space, net = supernet_from_timm(vit)
    assert space.dimensions() == {"embed_dim": [96, 144, 192], "depth": [6, 9, 12], "num_heads": [1, 2, 3],
                                  "mlp_ratio": [2.0, 3.0, 4.0]}
    with torch.no_grad():
        expected = vit(x)
        assert torch.allclose(net.eval()(x), expected, atol=1e-5, rtol=0)
        save_weights(vit, tmp_path / "vit.safetensors")  # weights from a file, into a freshly initialised model
        fresh = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10).eval()
        assert not torch.allclose(fresh(x), expected, atol=1e-3)
        _, from_file = supernet_from_timm(fresh, weights=str(tmp_path / "vit.safetensors"))
        assert torch.allclose(from_file.eval()(x), expected, atol=1e-5, rtol=0)
        rng = random.Random(0)
        for arch in [space.smallest()] + [space.sample(rng) for _ in range(2)]:
            small = net.extract(arch).eval()
            assert type(small) is VisionTransformer
            assert torch.allclose(small(x), net(x, arch), atol=1e-5, rtol=0)
            cost = space.cost(arch)
            assert measure_macs(small, (3, 32, 32)) == cost["macs"]
            assert count_params(small) == cost["params"]


def test_search_under_60_percent_of_the_macs(vit):
    space, net = supernet_from_timm(vit)
    net.eval()
    limit = 0.6 * space.cost(space.largest())["macs"]
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        target = net(x)
        # inherited weights, no recalibration: score = closeness of the subnet's logits to the whole model's
        found = search("evolution", space, lambda a: -float(((net(x, a) - target) ** 2).mean()), budget=12, seed=0,
                       feasible=cost_window(space, limit_windows({"macs": [None, limit]})), generations=None,
                       population=6, parents=3, mutations=3, crossovers=3)
        small = net.extract(found.best["arch"]).eval()
        assert type(small) is VisionTransformer and measure_macs(small, (3, 32, 32)) <= limit
        assert torch.allclose(small(x), net(x, found.best["arch"]), atol=1e-5, rtol=0)


def test_unsupported_models_and_choices_are_refused(vit):
    scaled = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10, init_values=1e-5)
    for model, words in ((scaled, "layer scale"), (timm.create_model("resnet10t"), "ResNet is not supported"),
                         (timm.create_model("vit_tiny_patch16_224", img_size=32, global_pool="avg"),
                          "global_pool='avg' (or fc_norm)")):
        with pytest.raises(ConfigError, match=re.escape(words)) as e:
            supernet_from_timm(model)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"embed_dims = \[96, 144\] must have the model's 192"):
        supernet_from_timm(vit, embed_dims=[96, 144])
    space, _ = supernet_from_timm(vit, depths=[4, 12], num_heads=[3])
    assert space.dimensions()["depth"] == [4, 12] and space.dimensions()["num_heads"] == [3]
