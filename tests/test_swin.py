"""The hierarchical (Swin-style) S3 space, its supernet, the released archs and any timm Swin as a supernet."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformer

from cream.cost import count_params, measure_macs
from cream.cost.limits import cost_window
from cream.errors import ArchError, ConfigError, CreamError
from cream.models import build_model
from cream.search import search
from cream.spaces import get_space
from cream.spaces.base import read_arch_file
from cream.spaces.swin import RELEASED
from cream.supernets import build_supernet
from cream.supernets.from_timm import supernet_from_timm
from cream.supernets.swin import SwinSupernet, swin_from_timm

REPO = Path(__file__).resolve().parents[1]
SHIFTED = {"depth": [2, 1, 2, 1], "embed_dim": [16, 48, 48, 96], "num_heads": [2, 2, 3, 4],
           "mlp_ratio": [3.0, 2.0, 4.0, 4.0], "window_size": [4, 8, 4, 2]}  # stage 1: shifted 4x4 windows


def supernet(space) -> SwinSupernet:
    torch.manual_seed(0)
    return build_supernet(space).eval()


def test_cpu_space_extracts_equal_outputs_and_analytic_costs():
    net = supernet(get_space("autoformerv2-cpu"))
    x = torch.randn(2, 3, 32, 32)
    rng = random.Random(0)
    for arch in [SHIFTED, net.space.largest(), net.space.smallest(), *(net.space.sample(rng) for _ in range(4))]:
        net.set_arch(arch)
        model = net.extract(arch).eval()
        assert type(model) is SwinTransformer
        with torch.no_grad():
            assert torch.allclose(model(x), net(x), atol=1e-5, rtol=0)
        cost = net.space.cost(arch)
        assert cost == {"params": count_params(model), "macs": measure_macs(model, (3, 32, 32))}
    net.set_arch(SHIFTED)
    assert [b.shift for b in net.layers[0].blocks] == [0, 2] and net.layers[1].blocks[0].window == 8


def test_tiny_preset_random_archs_extract_equal_outputs():
    net = supernet(get_space("autoformerv2-tiny"))
    x = torch.randn(1, 3, 224, 224)
    for arch in (net.space.sample(random.Random(1)),):
        model = net.extract(arch).eval()
        with torch.no_grad():
            assert torch.allclose(model(x), net(x, arch=arch), atol=1e-5, rtol=0)
        assert net.space.cost(arch)["params"] == count_params(model)


def test_supernet_trains_on_an_arch_path_only():
    net = supernet(get_space("autoformerv2-cpu")).train()
    net.set_arch(SHIFTED)
    net(torch.randn(2, 3, 32, 32)).logsumexp(-1).mean().backward()
    used = {id(p) for p in net.path_parameters()}
    grads = {id(p) for p in net.parameters() if p.grad is not None}
    assert grads <= used and net.layers[1].blocks[1].mlp.fc1.weight.grad is None
    table = net.layers[0].blocks[0].attn.relative_position_bias_table  # super window 8, active 4, 2 of 2 heads
    assert table.grad[(15 * 4 + 4)].abs().sum() > 0 and table.grad[0].abs().sum() == 0
    assert "layers.0.blocks.0.attn.relative_position_bias_table" in net.no_weight_decay()  # as timm's Swin


@pytest.mark.parametrize("key", ["tiny", "small", "base"])
def test_released_archs_load_strictly_into_timm(key):
    preset, timm_name, _, _ = RELEASED[key]
    arch, doc = read_arch_file(str(REPO / f"configs/autoformerv2/s3-{key}.json"))
    space = get_space(doc["space"])
    assert space.name == preset and space == get_space(preset) and doc["timm_model"] == timm_name
    with torch.device("meta"):  # shapes and names only: no weights are needed for a strict load
        model = build_supernet(space).extract(arch)
        reference = timm.create_model(timm_name, weight_init="skip")
    reference.load_state_dict(model.state_dict(), strict=True)
    assert count_params(model) == count_params(reference) == space.cost(arch)["params"] == doc["cost"]["params"]
    assert {28: "tiny", 50: "small", 71: "base"}[round(count_params(reference) / 1e6)] == key  # 28M/50M/71M


def test_space_contract_round_trips_and_moves_ranges():
    space = get_space("autoformerv2-cpu")
    dims = space.dimensions()
    assert dims["stage1.window_size"] == [4, 8] and dims["stage4.window_size"] == [2]  # clipped to the map
    assert get_space(json.loads(json.dumps(space.to_config()))) == space
    moved = space.with_dimensions({"stage1.embed_dim": [24, 32], "stage3.depth": [2, 3]})
    assert moved.dimensions()["stage1.embed_dim"] == [24, 32] and moved.super_arch()["depth"][2] == 3
    assert get_space(moved.to_config()) == moved and moved.dimensions()["stage2.depth"] == dims["stage2.depth"]
    narrow = space.restrict({"stage1.embed_dim": [16]})
    assert narrow.super_arch() == space.super_arch() and narrow.num_archs() * 2 == space.num_archs()
    assert space.with_dimensions({"stage1.window_size": [8, 12, 16]}).dimensions()["stage1.window_size"] == [8, 16]
    with pytest.raises(ConfigError, match="stage1.window_size"):
        space.with_dimensions({"stage1.window_size": [3, 5]})
    with pytest.raises(ConfigError, match="stage9.depth"):
        space.with_dimensions({"stage9.depth": [1]})
    with pytest.raises(ConfigError, match=r"stage1.mlp_ratio = \['x'\]"):
        space.with_dimensions({"stage1.mlp_ratio": ["x"]})
    with pytest.raises(ConfigError, match="window_sizes"):
        get_space("autoformerv2-cpu", window_sizes=[[3], [4], [4], [2]])  # 3 does not tile the 16x16 map
    with pytest.raises(ArchError, match="stage2.num_heads"):
        space.validate({**SHIFTED, "num_heads": [2, 7, 3, 4]})


def test_timm_swin_tiny_from_a_weights_file_becomes_a_supernet_and_searches_under_60_percent_macs(tmp_path):
    torch.manual_seed(0)
    original = timm.create_model("swin_tiny_patch4_window7_224", weight_init="skip").eval()  # PyTorch's init
    save_file(original.state_dict(), tmp_path / "swin_t.safetensors")
    fresh = timm.create_model("swin_tiny_patch4_window7_224", weight_init="skip")
    space, net = supernet_from_timm(fresh, weights=str(tmp_path / "swin_t.safetensors"))
    net.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        reference = original(x)
        assert torch.allclose(net(x), reference, atol=1e-5, rtol=0)
    largest = space.cost(space.largest())["macs"]
    assert largest == measure_macs(original, (3, 224, 224))
    limit = 0.6 * largest

    def agreement(arch):  # inherited weights: how close the subnet stays to the original model
        with torch.no_grad():
            return -(net(x, arch=arch) - reference).pow(2).mean().item()

    result = search("random", space, agreement, feasible=cost_window(space, {"macs": (0, limit)}), budget=2)
    small = net.extract(result.best["arch"]).eval()
    assert type(small) is SwinTransformer and measure_macs(small, (3, 224, 224)) <= limit


def test_any_timm_swin_module_is_a_supernet_by_name_or_module():
    torch.manual_seed(0)
    original = SwinTransformer(img_size=32, patch_size=2, embed_dim=16, depths=(2, 1, 1, 1), num_heads=(2, 2, 4, 4),
                               head_dim=8, window_size=(4, 4, 4, 2), num_classes=10).eval()
    space, net = supernet_from_timm(original, width_fractions=(0.5, 1.0), depths=[[1, 2], [1], [1], [1]])
    assert space.dimensions()["stage2.embed_dim"] == [16, 32] and space.dimensions()["stage1.depth"] == [1, 2]
    with pytest.raises(ConfigError, match="depths"):
        supernet_from_timm(original, depths=[[1], [1], [1], [1]])  # stage 1's largest must stay 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), original(x), atol=1e-5, rtol=0)
    with pytest.raises(CreamError, match="SwinTransformer"):
        swin_from_timm(torch.nn.Linear(2, 2))
    _, by_name = swin_from_timm("swin_tiny_patch4_window7_224")  # a timm name builds the model
    assert type(by_name.extract(by_name.space.smallest())) is SwinTransformer


def test_build_model_is_the_extracted_class():
    space = get_space("autoformerv2-cpu")
    model = build_model(space, SHIFTED)
    assert type(model) is SwinTransformer and model.embed_dim == [16, 48, 48, 96]
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)


def test_space_search_moves_a_hierarchical_space_on_digits(tmp_path, capsys):
    """Acceptance 3 on the Swin family: `cream space-search` on the CPU-sized S3 space (its kill/resume is
    tested on a ViT space in test_space_search.py; the workflow does not depend on the family)."""
    from cream.cli import main

    cfg = {"data": {"name": "digits", "image_size": 32, "batch_size": 64, "train_per_class": 24,
                    "test_per_class": 4, "val_fraction": 0.2},
           "space": {"preset": "autoformerv2-cpu"}, "optim": {"lr": 0.005, "warmup_epochs": 0},
           "train": {"epochs": 1, "threads": 1, "deterministic": True, "ckpt_every_steps": 1, "log_every": 50,
                     "eval_every_epochs": 1},
           "search": {"budget": 3, "eval_images": 0, "test_top_k": 1,
                      "kwargs": {"generations": 2, "population": 2, "parents": 2, "mutations": 1, "crossovers": 1}},
           "space_search": {"steps": 1, "dimensions": ["stage1.embed_dim"],
                            "random_archs": 2, "evolution_budget": 2, "top_k": 1,
                            "evolution": {"population": 2, "parents": 2, "mutations": 1, "crossovers": 1}}}
    (tmp_path / "ss.yaml").write_text(json.dumps(cfg))
    assert main(["space-search", str(tmp_path / "ss.yaml"), "--out", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["initial_dimensions"] != summary["final_dimensions"]
    first = get_space(json.loads((tmp_path / "run" / "steps" / "0" / "space.json").read_text()))
    assert first == get_space("autoformerv2-cpu", num_classes=10)
