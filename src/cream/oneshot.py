"""One-shot NAS stages: train a supernet, search it with inherited weights, build and export archs.

Data flows one way: config → data + space → supernet → strategy/engine → supernet weights →
search → arch → model. `cream supernet`, `cream search`, `cream retrain --arch`, `cream export`
and `cream run` are thin wrappers around these functions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from cream.config import RunConfig, SearchConfig, to_dict, with_space_classes
from cream.data import Splits, build_splits, train_loader
from cream.errors import ConfigError, CreamError
from cream.registry import build_supernet, get_space
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.search import cost_window, millions_window, search
from cream.spaces.base import Arch, Space
from cream.train.engine import Engine, pick_device, seed_everything
from cream.train.evaluate import evaluate
from cream.train.strategies import make_strategy
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


def new_supernet(cfg: RunConfig, space: Space) -> nn.Module:
    """The supernet of `space`, with `model.kwargs` (and `model.drop_path` as drop_path_rate) for its constructor."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.drop_path:
        kwargs.setdefault("drop_path_rate", cfg.model.drop_path)
    try:
        return build_supernet(space, **kwargs)
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


class InheritedScorer:
    """Scores archs with weights inherited from a supernet, on a held-out split.

    For spaces with BatchNorm, each candidate's statistics can be recalibrated on a few
    training images first (train-mode forwards, no gradient, cumulative averages).
    """

    def __init__(self, net: nn.Module, splits: Splits, cfg: RunConfig, device: torch.device) -> None:
        self.net, self.cfg, self.device = net.to(device), cfg, device
        if splits.val is None:
            raise ConfigError("search needs a held-out validation split: set data.val_fraction > 0")
        self.val = _subset(splits.val, cfg.search.eval_images, cfg.search.seed)
        self.test = splits.test
        self.recal_images = cfg.search.bn_recal_images
        self.recal_loader = train_loader(splits.train, min(cfg.data.batch_size, self.recal_images),
                                         seed=cfg.search.seed) if self.recal_images else None

    def prepare(self, arch: Arch) -> nn.Module:
        self.net.set_arch(arch)
        if self.recal_images:
            from cream.search.bn_recal import recalibrate_bn

            recalibrate_bn(self.net, self.recal_loader, self.recal_images)
        return self.net

    def __call__(self, arch: Arch) -> float:
        return self.score(arch, self.val)

    def score(self, arch: Arch, dataset: Dataset) -> float:
        model = self.prepare(arch)
        return evaluate(model, dataset, batch_size=self.cfg.data.eval_batch_size, device=self.device)["top1"]


def load_scorer(cfg: RunConfig, supernet_run: Path) -> tuple[InheritedScorer, Splits]:
    """The data of `cfg` (seeded with `search.seed`) and a scorer over the supernet trained in `supernet_run`.

    Shared by `cream search` and `cream rank --supernet`, so both score an arch the same way.
    """
    seed_everything(cfg.search.seed, threads=cfg.train.threads)
    splits = build_splits(cfg.data)
    net = load_supernet(cfg, supernet_run, splits.num_classes)
    return InheritedScorer(net, splits, cfg, pick_device(cfg.train.device)), splits


def search_windows(s: SearchConfig) -> dict[str, tuple[float, float]]:
    """The configured params / MACs windows of a search, in absolute counts (only the limited ones)."""
    windows = {"params": millions_window(s.params_min, s.params_max), "macs": millions_window(s.macs_min, s.macs_max)}
    return {k: w for k, w in windows.items() if w is not None}


def search_supernet(cfg: RunConfig, supernet_run: Path, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """Search `cfg.space` with the supernet of `supernet_run`; write arch.json, search.json and search.png."""
    from cream.report.plots import plot_pareto

    start = time.perf_counter()
    s = cfg.search
    scorer, splits = load_scorer(cfg, supernet_run)
    space = scorer.net.space
    if not resume:
        run.write_yaml("config.yaml", to_dict(with_space_classes(cfg, splits.num_classes)))
    windows = search_windows(s)
    feasible = cost_window(space, **windows) if windows else None
    common: dict[str, Any] = {"feasible": feasible, "budget": s.budget, "seed": s.seed,
                              "state_path": run.file("search_state.json")}
    if s.method == "board":  # Cream: score the supernet run's final board and keep the best (spec §5.6)
        common["board"] = read_board(supernet_run)
    result = search(s.method, space, scorer, resume=resume, **common, **s.kwargs)
    if not result.records:
        raise CreamError("the search evaluated no arch: no arch of the space meets the limits "
                         f"params {windows.get('params')} / macs {windows.get('macs')}")
    # copies: the test accuracy belongs to the "top" list only, not to search.json's records and best
    top = [{**rec, "test_top1": scorer.score(rec["arch"], scorer.test)} for rec in result.top(s.test_top_k)]
    best = result.best
    arch_doc = {"arch": best["arch"], "space": cfg.space, "score": best["score"], "cost": best["cost"],
                "test_top1": top[0]["test_top1"] if top else None}
    run.write_json("arch.json", arch_doc)
    run.write_json("search.json", {**result.to_dict(), "top": top})
    plot_pareto(result.records, run.file("search.png"), cost="params")
    summary = {"method": s.method, "queries": len(result.records), "best_score": best["score"],
               "best_params": best["cost"]["params"], "best_macs": best["cost"]["macs"],
               "best_test_top1_inherited": arch_doc["test_top1"], "wall_s": round(time.perf_counter() - start, 2)}
    run.write_json("summary.json", summary)
    write_report(run, summary, [f"Best arch: `{json.dumps(best['arch'])}`", "![score vs params](search.png)"])
    return summary


def read_board(supernet_run: Path) -> list[dict[str, Any]]:
    """The final prioritized board of a supernet trained with strategy 'cream' (best path first)."""
    path = Path(supernet_run) / "board.json"
    if not path.is_file():
        raise CreamError(f"'{supernet_run}' holds no board.json; search method 'board' needs a supernet "
                         "trained with strategy 'cream'")
    return json.loads(path.read_text())


def build_arch_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The standalone model of `cfg.arch` in `cfg.space`: fresh, or inherited from the supernet in `cfg.init`."""
    space = resolve_space(cfg, num_classes)
    arch = space.validate(cfg.arch)
    if cfg.init:
        net = load_supernet(cfg, Path(cfg.init), num_classes)
    else:
        net = new_supernet(cfg, space)
    return net.extract(arch)


def _subset(ds: Dataset, n: int, seed: int) -> Dataset:
    if not n or n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return Subset(ds, idx.tolist())


def run_pipeline(cfg: RunConfig, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """The whole one-shot pipeline in `run`: supernet/ → search/ → retrain/ (train the winner, test it).

    Each stage has its own run folder. With `resume`, finished stages are kept and the first
    unfinished one continues from its checkpoint or search state.
    """
    from cream.config import with_overrides
    from cream.pipeline import train_standalone

    start = time.perf_counter()
    if not resume:
        run.write_yaml("config.yaml", to_dict(cfg))

    sup_dir = run.path / "supernet"
    if not (sup_dir / SUPERNET_WEIGHTS).is_file():
        sup_resume = (sup_dir / "config.yaml").is_file()
        train_supernet(cfg, _stage(sup_dir, sup_resume), resume=sup_resume)

    search_dir = run.path / "search"
    if not (search_dir / "arch.json").is_file():
        search_resume = (search_dir / "config.yaml").is_file()
        search_supernet(with_overrides(cfg, {}, init=str(sup_dir)), sup_dir, _stage(search_dir, search_resume),
                        resume=search_resume)
    found = json.loads((search_dir / "arch.json").read_text())

    retrain_dir = run.path / "retrain"
    retrain_cfg = with_overrides(cfg, cfg.retrain, arch=found["arch"], retrain={})
    retrain_resume = (retrain_dir / "config.yaml").is_file()
    if (retrain_dir / "summary.json").is_file():
        retrained = json.loads((retrain_dir / "summary.json").read_text())
    else:
        retrained = train_standalone(retrain_cfg, _stage(retrain_dir, retrain_resume), resume=retrain_resume)

    summary = {"space": cfg.space.get("preset", cfg.space.get("family", "custom")),
               "best_arch": json.dumps(found["arch"]), "params": found["cost"]["params"],
               "macs": found["cost"]["macs"], "inherited_val_top1": found["score"],
               "retrained_test_top1": retrained["test_top1"], "test_top1": retrained["test_top1"],
               "wall_s": round(time.perf_counter() - start, 2)}
    run.write_json("summary.json", summary)
    write_report(run, summary, ["## Search", "![score vs params](search/search.png)",
                                "Stages: `supernet/`, `search/` (every evaluated arch in search.json), `retrain/`."])
    return summary


def _stage(path: Path, resume: bool) -> RunDir:
    return RunDir.create(str(path), path.name, resume=resume)
