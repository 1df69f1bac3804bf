"""The EfficientViT-MSRA space, its single-path supernet, the published M0-M5 archs and a search under MACs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import timm
import torch
from timm.models.efficientvit_msra import EfficientVitMsra

from cream.cli import main
from cream.cost import count_params, measure_macs
from cream.cost.lut import LatencyPredictor, save_latency_model
from cream.errors import ArchError, ConfigError
from cream.models import build_model, load_exported
from cream.spaces import get_space
from cream.spaces.base import read_arch_file
from cream.spaces.efficientvit import PUBLISHED, PUBLISHED_COSTS
from cream.supernets import build_supernet
from cream.supernets.efficientvit import EfficientVitSupernet

REPO = Path(__file__).resolve().parents[1]
# stage 1: a 6x6 map in padded 4x4 windows, 2 of 2 heads at value width 12 (super 24), kernels cut from 5
WINDOWED = {"depth": [2, 1, 2], "embed_dim": [24, 24, 48], "num_heads": [2, 3, 2], "kernels": [3, 5, 3]}


def perturbed_supernet() -> EfficientVitSupernet:
    """The CPU-sized supernet with non-trivial BN statistics, BN affines (timm zeroes the last BN of each
    residual branch) and attention biases, so that extraction must carry them all and every branch is live."""
    torch.manual_seed(0)
    net = build_supernet(get_space("efficientvit-cpu"))
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith(("running_mean", "bn.bias", "attention_biases")):
                t.normal_(0, 0.5)
            elif name.endswith(("running_var", "bn.weight")):
                t.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def cpu_net() -> EfficientVitSupernet:
    return perturbed_supernet().eval()


def test_extracted_archs_equal_the_supernet_and_the_analytic_costs(cpu_net):
    space = cpu_net.space
    x = torch.randn(1, 3, 96, 96)
    for arch in (WINDOWED, space.largest(), space.smallest()):
        model = cpu_net.extract(arch).eval()
        assert type(model) is EfficientVitMsra
        with torch.no_grad():
            assert torch.allclose(model(x), cpu_net(x, arch=arch), atol=1e-5, rtol=0)
        assert space.cost(arch) == {"params": count_params(model), "macs": measure_macs(model, (3, 96, 96))}
    assert cpu_net.arch == space.largest()  # `forward(x, arch=...)` left the selection alone


def test_single_path_training_touches_only_the_arch_slices():
    net = perturbed_supernet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.set_arch(WINDOWED)
    net(torch.randn(2, 3, 96, 96)).logsumexp(-1).mean().backward()
    used = {id(p) for p in net.path_parameters()}
    assert {id(p) for p in net.parameters() if p.grad is not None} <= used
    attn = net.stages[2].blocks[0].mixer.m.attn  # 2 of 3 heads, value width 24 of 24
    assert attn.qkvs[2].conv.weight.grad is None and net.stages[1].blocks[1].dw0.m.conv.weight.grad is None
    assert attn.qkvs[1].conv.weight.grad.abs().sum() > 0
    kernel = net.stages[0].blocks[0].mixer.m.attn.dws[0].conv.weight.grad  # head 1's kernel 3 of super 5
    assert kernel[:, :, 1:4, 1:4].abs().sum() > 0 and kernel[:, :, 0].abs().sum() == 0
    after = net.state_dict()
    stem_bn = "patch_embed.conv4.bn.running_mean"  # 24 of 24 channels active: all updated
    head_bn = "head.bn.running_mean"  # 48 of 48 too
    mid = "stages.1.downsample.res2.0.m.bn.running_mean"  # stage 2's width is 24 of 32: the rest is untouched
    assert not torch.equal(after[stem_bn], before[stem_bn]) and not torch.equal(after[head_bn], before[head_bn])
    assert torch.equal(after[mid][24:], before[mid][24:]) and not torch.equal(after[mid][:24], before[mid][:24])
    assert "stages.0.blocks.0.mixer.m.attn.attention_biases" in net.no_weight_decay()


@pytest.fixture(scope="module")
def meta_net() -> EfficientVitSupernet:
    with torch.device("meta"):  # shapes and names only: a strict load needs no weights
        return build_supernet(get_space("efficientvit-msra"))


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_published_archs_load_strictly_into_timm(meta_net, key):
    arch, doc = read_arch_file(str(REPO / f"configs/efficientvit/{key}.json"))
    space = get_space(doc["space"])
    assert space == meta_net.space and arch == PUBLISHED[key] and doc["timm_model"] == f"efficientvit_{key}"
    with torch.device("meta"):
        model = meta_net.extract(arch)
        reference = timm.create_model(doc["timm_model"])
    reference.load_state_dict(model.state_dict(), strict=True)
    params = count_params(reference)
    assert count_params(model) == params == space.cost(arch)["params"] == doc["cost"]["params"]
    published_params, published_macs = PUBLISHED_COSTS[key]  # the README's M params and M FLOPs (= MACs)
    assert abs(params / 1e6 - published_params) < 0.1 and round(doc["cost"]["macs"] / 1e6) == published_macs


def test_space_contract_round_trips_restricts_and_moves_ranges():
    space = get_space("efficientvit-msra")
    assert get_space(json.loads(json.dumps(space.to_config()))) == space
    assert space.super_head_dims == (96, 96, 192) and space.super_kernel == 7
    rng = random.Random(0)
    for _ in range(50):  # sampling, mutation and crossover keep every stage's width divisible by its heads
        a, b = space.sample(rng), space.sample(rng)
        for arch in (a, space.mutate(a, rng), space.crossover(a, b, rng)):
            assert space.validate(arch) == arch
    with pytest.raises(ArchError, match=r"stage1: embed_dim 64 is not divisible by num_heads 3"):
        space.validate({**PUBLISHED["m0"], "num_heads": [3, 4, 4]})
    with pytest.raises(ArchError, match="head2.kernel"):
        space.validate({**PUBLISHED["m0"], "kernels": [5, 4, 5, 5]})
    narrow = space.restrict({"stage1.embed_dim": [64], "head4.kernel": [3]})
    assert narrow.super_embed_dims == space.super_embed_dims and narrow.pairs(0) == [(64, 2), (64, 4)]
    small = get_space("efficientvit-cpu").restrict({**{f"stage{s}.depth": [1] for s in (1, 2, 3)},
                                                    **{f"head{i}.kernel": [3] for i in (1, 2, 3)}})
    brute = {json.dumps(small.sample(random.Random(i))) for i in range(1000)}
    assert len(brute) == small.num_archs() == 4 * 3 * 3  # the valid (width, heads) pairs of each stage
    moved = space.with_dimensions({"stage3.num_heads": [4, 6], "stage3.embed_dim": [384, 480]})
    assert moved.super_num_heads == (4, 4, 6) and len(moved.kernels) == 6 and moved.super_embed_dims[2] == 480
    assert get_space(moved.to_config()) == moved
    with pytest.raises(ConfigError, match=r"space.embed_dims\[0\] = \[64\] has no width divisible"):
        get_space("efficientvit-msra", embed_dims=[[64], [128], [192]], num_heads=[[3], [4], [4]])
    with pytest.raises(ConfigError, match="even kernels"):
        get_space("efficientvit-cpu", kernels=[[3, 4]] * 3)


def test_build_model_is_the_extracted_class():
    space = get_space("efficientvit-cpu")
    model = build_model(space, WINDOWED)
    assert type(model) is EfficientVitMsra and model.pretrained_cfg["input_size"] == (3, 96, 96)
    assert count_params(model) == space.cost(WINDOWED)["params"]
    with pytest.raises(ConfigError, match="drop_path"):
        build_model(space, WINDOWED, drop_path_rate=0.1)


def test_cream_supernet_and_search_under_macs_and_latency_limits_on_digits(tmp_path):
    """The tiny config end to end: a Cream supernet (board of paths) then an evolution search whose archs all
    stay under a MACs limit and under a latency limit of a predictor file (`search.cost_files`; latencies
    made up here, as timing is not what is tested), exported as a timm EfficientVitMsra."""
    cfg = str(REPO / "configs/efficientvit/supernet-cpu.yaml")
    small = ["--set", "data.image_size=32", "--set", "space.img_size=32", "--set", "data.train_per_class=4",
             "--set", "train.epochs=1", "--set", "train.threads=1"]
    assert main(["supernet", cfg, "--out", str(tmp_path / "sn"), "--json", *small]) == 0
    space = get_space("efficientvit-cpu", img_size=32, num_classes=10)
    limit = (space.cost(space.smallest())["macs"] + space.cost(space.largest())["macs"]) // 2
    timed = [space.sample(random.Random(i)) for i in range(6)]
    predictor = LatencyPredictor(space.to_config(), None, timed, [space.cost(a)["macs"] / 1e5 for a in timed])
    save_latency_model(predictor, tmp_path / "lat.json")
    ms = 0.6 * space.cost(space.largest())["macs"] / 1e5
    assert main(["search", "--supernet", str(tmp_path / "sn"), "--out", str(tmp_path / "search"), "--json",
                 "--set", f"search.cost_files={{latency_ms: {tmp_path / 'lat.json'}}}",
                 "--set", f"search.limits={{macs: [null, {limit}], latency_ms: [null, {ms}]}}",
                 "--set", "search.budget=4",
                 "--set", "search.eval_images=16", "--set", "search.bn_recal_images=16",
                 "--set", "search.test_top_k=0"]) == 0
    records = json.loads((tmp_path / "search" / "search.json").read_text())["records"]
    assert len(records) == 4 and all(r["cost"]["macs"] <= limit for r in records)
    assert all(predictor.predict(space, r["arch"]) <= ms for r in records)
    found = json.loads((tmp_path / "search" / "arch.json").read_text())
    assert main(["export", str(tmp_path / "sn"), "--arch", str(tmp_path / "search" / "arch.json"),
                 "--out", str(tmp_path / "found.safetensors")]) == 0
    model = load_exported(str(tmp_path / "found.safetensors"))
    assert type(model) is EfficientVitMsra and measure_macs(model, (3, 32, 32)) == found["cost"]["macs"] <= limit
