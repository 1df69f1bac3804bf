"""Any timm VisionTransformer as a supernet: its largest arch is the model, its subnets extract to smaller
VisionTransformers with the supernet's output and the analytic MACs, and a search under 60 % of the MACs
returns one inside the limit."""

import json
import random
import re

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from cream.cli import main
from cream.cost.limits import cost_window, limit_windows
from cream.cost.measure import count_params, measure_macs
from cream.errors import ConfigError
from cream.models import load_exported
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


def _config(tmp_path, **space) -> str:
    """A run config of the digits data at 32 px whose space is timm's vit_tiny_patch16_224 with the weights of
    vit.safetensors, `space` replacing keys of the space."""
    cfg = {"data": {"name": "digits", "image_size": 32, "train_per_class": 4, "test_per_class": 4,
                    "batch_size": 20},
           "train": {"threads": 1, "epochs": 1, "max_steps": 1},
           "space": {"from_timm": "vit_tiny_patch16_224", "weights": str(tmp_path / "vit.safetensors"),
                     "model_kwargs": {"img_size": 32}, **space}}
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_cli_searches_a_timm_vit_and_exports_a_smaller_one(vit, tmp_path):
    """`cream search CONFIG` (no supernet run) on the converted timm ViT under 60 % of its MACs, then `cream
    export`: a smaller timm VisionTransformer whose weights are the file's (its output is the supernet's)."""
    save_weights(vit, tmp_path / "vit.safetensors")
    space, net = supernet_from_timm(vit)
    limit = int(0.6 * space.cost(space.largest())["macs"])
    search_run, exported = tmp_path / "search", tmp_path / "small.safetensors"
    assert main(["search", _config(tmp_path), "--out", str(search_run),
                 "--set", f"search.limits={{macs: [null, {limit}]}}", "--set", "search.budget=6",
                 "--set", "search.eval_images=20", "--set", "search.test_top_k=1",
                 "--set", "search.kwargs={generations: 2, population: 3, parents: 2, mutations: 2, crossovers: 1}"
                 ]) == 0
    found = json.loads((search_run / "arch.json").read_text())
    assert found["space"]["family"] == "timm-vit" and found["cost"]["macs"] <= limit
    assert main(["export", str(search_run), "--arch", str(search_run / "arch.json"), "--out", str(exported)]) == 0
    small = load_exported(exported).eval()
    assert type(small) is VisionTransformer and measure_macs(small, (3, 32, 32)) == found["cost"]["macs"] <= limit
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(small(x), net.eval()(x, found["arch"]), atol=1e-5, rtol=0)

    # fine-tuning instead: `cream supernet` starts from the timm weights (a step at lr 0 keeps them) in that space
    tuned = tmp_path / "tuned"
    assert main(["supernet", _config(tmp_path), "--out", str(tuned), "--set", "optim.lr=0",
                 "--set", "optim.sched=none"]) == 0
    assert json.loads((tuned / "space.json").read_text()) == space.to_config()
    trained, state = load_file(tuned / "supernet.safetensors"), net.state_dict()
    assert trained.keys() == state.keys() and all(torch.equal(trained[k], state[k]) for k in state)


def test_cli_searches_a_timm_swin(tmp_path):
    """The same path for a (CPU-sized) timm Swin without a weights file: a smaller SwinTransformer within 60 %."""
    shape = {"img_size": 32, "patch_size": 2, "window_size": 4, "embed_dim": 16, "depths": [1, 2, 1, 1],
             "num_heads": [1, 2, 4, 8]}
    limit = int(0.6 * measure_macs(timm.create_model("swin_tiny_patch4_window7_224", num_classes=10, **shape),
                                   (3, 32, 32)))
    config = _config(tmp_path, from_timm="swin_tiny_patch4_window7_224", weights=None, model_kwargs=shape)
    assert main(["search", config, "--out", str(tmp_path / "s"), "--set", f"search.limits={{macs: [null, {limit}]}}",
                 "--set", "search.budget=4", "--set", "search.eval_images=20", "--set", "search.test_top_k=0",
                 "--set", "search.kwargs={generations: 2, population: 2, parents: 1, mutations: 1, crossovers: 1}"
                 ]) == 0
    assert main(["export", str(tmp_path / "s"), "--arch", str(tmp_path / "s" / "arch.json"),
                 "--out", str(tmp_path / "small.safetensors")]) == 0
    small = load_exported(tmp_path / "small.safetensors")
    assert type(small) is SwinTransformer and measure_macs(small, (3, 32, 32)) <= limit


@pytest.mark.parametrize("space, words", [
    ({"from_timm": "vit_nope"}, "space.from_timm' = 'vit_nope' is not a timm model name"),
    ({"from_timm": "resnet10t", "model_kwargs": {}}, "space.from_timm = 'resnet10t': supernet_from_timm: ResNet is "
                                                     "not supported"),
    ({"weights": "missing.safetensors"}, "missing.safetensors' does not exist"),
    ({"weights": "other.safetensors"}, "other.safetensors' does not fit the model: missing"),
    ({"choices": {"depths": [3, 6]}}, "depths = [3, 6] must have the model's 12"),
    ({"pretrained": True}, "space keys ['pretrained'] are unknown with space.from_timm"),
])
def test_cli_refuses_bad_timm_spaces(vit, tmp_path, capsys, space, words):
    save_weights(vit, tmp_path / "vit.safetensors")
    save_weights(torch.nn.Linear(2, 2), tmp_path / "other.safetensors")
    if "weights" in space:
        space = {"weights": str(tmp_path / space["weights"])}
    capsys.readouterr()
    assert main(["search", _config(tmp_path, **space), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()
