"""Models without supernets: `build_model(space, arch)` is the class `extract` returns, timm builds any searched
arch, and testing a retrained run reads nothing but that run."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import timm
import torch
from conftest import TINY_CREAM
from safetensors.torch import save_model

from cream.cli import main
from cream.errors import ConfigError
from cream.models import build_model, load_exported
from cream.spaces import get_space
from cream.supernets import build_supernet

VIT = {"family": "vit", "name": "vit-test", "embed_dims": [16, 24], "depths": [1, 2], "num_heads": [1, 2],
       "mlp_ratios": [2.0, 3.0], "head_dim": 8, "img_size": 16, "patch_size": 4, "max_relative_position": 4,
       "num_classes": 10}
NB201 = {"family": "nb201", "channels": 4, "cells_per_stage": 1, "input_size": 16}
SPACES = {"vit": (VIT, 16), "mobilenet": (TINY_CREAM, 32), "nb201": (NB201, 16)}


@pytest.mark.parametrize("family", sorted(SPACES))
def test_build_model_is_what_extract_returns(family):
    spec, size = SPACES[family]
    space = get_space(spec)
    torch.manual_seed(0)
    net = build_supernet(space).eval()
    x = torch.randn(2, 3, size, size)
    for seed in range(3):
        arch = space.sample(random.Random(seed))
        extracted, built = net.extract(arch), build_model(space, arch).eval()
        assert type(built) is type(extracted)
        assert {k: v.shape for k, v in built.state_dict().items()} == \
               {k: v.shape for k, v in extracted.state_dict().items()}
        built.load_state_dict(extracted.state_dict())
        with torch.no_grad():
            assert torch.allclose(built(x), net(x, arch=arch), atol=1e-5, rtol=0)


def test_timm_creates_a_searched_arch_by_space_and_arch_or_from_an_exported_file(tmp_path):
    space = get_space(VIT)
    arch = space.sample(random.Random(1))
    model = timm.create_model("cream_searched", space=VIT, arch=arch).eval()
    assert type(model) is type(build_model(space, arch))
    path = tmp_path / "m.safetensors"
    save_model(model, str(path), metadata={"arch": json.dumps(arch), "space": json.dumps(VIT),
                                           "num_classes": "10", "image_size": "16"})
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(timm.create_model("cream_searched", file=str(path)).eval()(x), expected)
        assert torch.equal(load_exported(path).eval()(x), expected)
    with pytest.raises(ConfigError, match="needs space=... and arch=..."):
        timm.create_model("cream_searched", space=VIT)


def test_testing_an_inherited_retrain_does_not_read_the_supernet_run(tmp_path, capsys):
    common = ["--set", "space=" + json.dumps({k: v for k, v in VIT.items() if k != "num_classes"}),
              "--set", "data.train_per_class=20", "--set", "train.threads=1", "--set", "data.batch_size=32",
              "--set", "train.epochs=1"]
    supernet, retrain = tmp_path / "supernet", tmp_path / "retrain"
    assert main(["supernet", "--out", str(supernet), "--json", *common]) == 0
    arch = get_space(VIT).smallest()
    assert main(["retrain", "--out", str(retrain), "--json", *common, "--set", f"arch={json.dumps(arch)}",
                 "--set", f"init={supernet}"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    shutil.rmtree(supernet)
    assert main(["test", str(retrain), "--json"]) == 0
    tested = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tested["test_top1"] == trained["test_top1"]
