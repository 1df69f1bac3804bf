"""Every shipped YAML loads: run configs into `RunConfig` (their space builds, their model exists), space files
into a space."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import timm
import yaml

import cream.models  # noqa: F401  (registers cream_* etc. with timm)
from cream.config import RunConfig, load_config, read_yaml
from cream.spaces import get_space
from cream.spaces.vit import PUBLISHED_SPACES, published_archs
from cream.train.strategies import make_strategy
from cream.workflows.search import search_feasible
from cream.workflows.supernet import resolve_space

REPO = Path(__file__).resolve().parents[1]
YAMLS = sorted([*REPO.glob("configs/**/*.yaml"), *REPO.glob("src/cream/presets/*.yaml")])


def _is_space_file(path: Path) -> bool:
    data = yaml.safe_load(path.read_text()) or {}
    return "family" in data or "preset" in data


def _check_space(spec) -> None:
    space = get_space(spec)
    arch = space.sample(random.Random(0))
    assert space.validate(arch) == arch and space.cost(arch)["params"] > 0


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(REPO)) for p in YAMLS])
def test_yaml_loads_and_builds(path):
    if _is_space_file(path):
        _check_space(str(path))
        return
    if "clip" in (yaml.safe_load(path.read_text()) or {}):  # a `cream clip distill` config
        from cream.clip.config import ClipRunConfig
        from cream.workflows.clip import check_config

        check_config(load_config(ClipRunConfig, path))
        return
    cfg = load_config(RunConfig, path)
    if cfg.space:
        _check_space(dict(cfg.space))
        space = resolve_space(cfg, cfg.space.get("num_classes", 10))  # its input size is the data's
        search_feasible(cfg.search, space)  # its cost limits name costs the space reports
        make_strategy(cfg.strategy, space, cfg.train.seed)  # its parameters fit
        if cfg.arch:
            assert space.validate(cfg.arch) == cfg.arch
    else:
        assert cfg.model.name in timm.list_models(cfg.model.name), cfg.model.name


def test_inline_spos_space_equals_the_space_file():
    cfg = load_config(RunConfig, REPO / "configs/spos/supernet-cifar-8layer.yaml")
    assert get_space(dict(cfg.space)).config == get_space(str(REPO / "configs/spos/cifar-8layer.yaml")).config


@pytest.mark.parametrize("name,size", [("014", 64), ("043", 96), ("114", 160), ("287", 224), ("481", 224),
                                       ("604", 224)])
def test_retrain_recipes_name_their_model_at_its_input_size(name, size):
    cfg = load_config(RunConfig, REPO / f"configs/cream/retrain-{name}.yaml")
    assert cfg.model.name == f"cream_{name}" and cfg.data.image_size == size
    assert timm.models.get_pretrained_cfg(cfg.model.name).input_size == (3, size, size)
    assert cfg.optim.sched == ("step" if size < 160 else "cosine")


def test_autoformer_recipes_exist_and_build_the_published_models():
    published = {"tiny": 5_867_944, "small": 22_891_432, "base": 53_691_688}
    for size, params in published.items():
        for stage in ("supernet", "search", "retrain"):
            assert (REPO / f"configs/autoformer/{stage}-{size}.yaml").is_file()
        cfg = load_config(RunConfig, REPO / f"configs/autoformer/retrain-{size}.yaml")
        assert cfg.arch == published_archs()[size] and cfg.space["preset"] == PUBLISHED_SPACES[size]
        assert get_space(dict(cfg.space)).cost(cfg.arch)["params"] == params  # spec §4, see test_vit_space
        supernet = read_yaml(REPO / f"configs/autoformer/supernet-{size}.yaml")
        search = load_config(RunConfig, REPO / f"configs/autoformer/search-{size}.yaml", base=supernet)
        assert search_feasible(search.search, get_space(dict(search.space)))(cfg.arch)  # its limits admit it
