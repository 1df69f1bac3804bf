"""Every shipped recipe under configs/ loads, and the space (and arch) it names builds."""

from pathlib import Path

import pytest
import yaml

from cream.config import RunConfig, load_config
from cream.registry import get_space

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
PRESET = Path(__file__).resolve().parents[1] / "src" / "cream" / "presets" / "run.yaml"


@pytest.mark.parametrize("path", [*CONFIGS, PRESET], ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_loads_and_its_space_builds(path):
    raw = yaml.safe_load(path.read_text())
    if "family" in raw:  # a space file, not a run config
        get_space(str(path))
        return
    cfg = load_config(RunConfig, path)
    if cfg.space:
        space = get_space(dict(cfg.space))
        if cfg.arch:
            assert space.validate(cfg.arch) == cfg.arch


def test_autoformer_recipes_exist():
    names = {p.name for p in CONFIGS if p.parent.name == "autoformer"}
    for size in ("tiny", "small", "base"):
        assert {f"supernet-{size}.yaml", f"search-{size}.yaml", f"retrain-{size}.yaml"} <= names


def test_published_autoformer_retrain_params():
    published = {"tiny": 5_867_944, "small": 22_891_432, "base": 53_691_688}
    for size, params in published.items():
        cfg = load_config(RunConfig, CONFIGS[0].parent.parent / "autoformer" / f"retrain-{size}.yaml")
        assert get_space(dict(cfg.space)).cost(cfg.arch)["params"] == params
