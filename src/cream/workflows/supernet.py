"""Train a supernet (`cream supernet`), and read a trained one back.

Data flows one way: config → data + space → supernet → strategy/engine → supernet.safetensors.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn

from cream.config import RunConfig, to_dict, with_space_classes
from cream.data import build_splits
from cream.errors import ConfigError, CreamError
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.spaces import get_space
from cream.spaces.base import Space
from cream.supernets import build_supernet
from cream.train.engine import Engine, seed_everything
from cream.train.strategies import make_strategy, supernet_kind
from cream.weights import load_weights, save_weights

SUPERNET_WEIGHTS = "supernet.safetensors"


def resolve_space(cfg: RunConfig, num_classes: int) -> Space:
    """The configured space, with the data's number of classes unless the config sets it."""
    if not cfg.space:
        raise ConfigError("config key 'space' is empty; a supernet needs one, e.g. space: {preset: autoformer-tiny}")
    spec = dict(cfg.space)
    spec.setdefault("num_classes", num_classes)
    space = get_space(spec)
    if getattr(space, "num_classes", num_classes) != num_classes:
        raise ConfigError(f"config key 'space.num_classes' = {space.num_classes} does not match the data, "
                          f"which has {num_classes} classes")
    return space


def arch_model_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Constructor arguments of a space's supernet and of its standalone models: `model.kwargs`, and
    `model.drop_path` as drop_path_rate."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.drop_path:
        kwargs.setdefault("drop_path_rate", cfg.model.drop_path)
    return kwargs


def new_supernet(cfg: RunConfig, space: Space) -> nn.Module:
    """The supernet of `space` of the kind `cfg.strategy` trains (single-path unless the strategy says
    otherwise, e.g. mixed for 'darts'), with `arch_model_kwargs(cfg)` for its constructor."""
    kwargs = arch_model_kwargs(cfg)
    try:
        return build_supernet(space, supernet_kind(cfg.strategy), **kwargs)
    except TypeError as e:
        raise ConfigError(f"config key 'model.kwargs' = {kwargs!r} does not fit the supernet of "
                          f"'{space.name}': {e}") from None


def train_supernet(cfg: RunConfig, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """Train the supernet of `cfg.space` with `cfg.strategy`; write supernet.safetensors and a summary."""
    start = time.perf_counter()
    seed_everything(cfg.train.seed, cfg.train.deterministic, cfg.train.threads)
    splits = build_splits(cfg.data)
    space = resolve_space(cfg, splits.num_classes)
    net = new_supernet(cfg, space)
    strategy = make_strategy(cfg.strategy, space, cfg.train.seed)
    engine = Engine(cfg, net, splits, run, strategy)
    if engine.dist.is_main and not resume:
        run.write_yaml("config.yaml", to_dict(with_space_classes(cfg, splits.num_classes)))
    if resume:
        engine.resume()
    fit = engine.fit()
    summary: dict[str, Any] = {"space": space.name, "strategy": cfg.strategy.name, "steps": fit["steps"]}
    held_out = splits.val if splits.val is not None else splits.test
    split_name = "val" if splits.val is not None else "test"
    if splits.val is not None and engine.last_eval is not None and engine.last_eval[0] == engine.step:
        results = engine.last_eval[1]  # the engine's end-of-training validation, on the same weights
    else:
        results = engine.evaluate_archs(held_out)
    for name, res in results.items():
        summary[f"{split_name}_top1_{name}"] = res["top1"]
    summary["wall_s"] = round(time.perf_counter() - start, 2)
    if engine.dist.is_main:
        save_weights(engine.model, run.file(SUPERNET_WEIGHTS))
        for name, obj in strategy.artifacts().items():
            run.write_json(name, obj)
        run.write_json("summary.json", summary)
        write_report(run, summary)
    return summary


def load_supernet(cfg: RunConfig, supernet_run: Path, num_classes: int) -> nn.Module:
    """The supernet of `cfg.space` with the weights trained in `supernet_run`."""
    weights = Path(supernet_run) / SUPERNET_WEIGHTS
    if not weights.is_file():
        raise CreamError(f"'{supernet_run}' holds no {SUPERNET_WEIGHTS}; is it a finished `cream supernet` run?")
    net = new_supernet(cfg, resolve_space(cfg, num_classes))
    load_weights(net, weights)
    return net
