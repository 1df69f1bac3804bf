"""Train and test standalone models: what `cream retrain`, `cream test` and `cream run` call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cream.config import RunConfig, to_dict
from cream.data import build_splits
from cream.errors import CheckpointError
from cream.profiling import create_model
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.train.engine import Engine, seed_everything


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The configured timm model for `num_classes` at the configured image size."""
    kwargs: dict[str, Any] = dict(cfg.model.kwargs)
    kwargs.setdefault("num_classes", num_classes)
    if cfg.model.drop_path:
        kwargs.setdefault("drop_path_rate", cfg.model.drop_path)
    if cfg.model.drop:
        kwargs.setdefault("drop_rate", cfg.model.drop)
    model = create_model(cfg.model.name, **kwargs)
    return model


def train_standalone(cfg: RunConfig, run: RunDir, *, resume: bool = False,
                     model: nn.Module | None = None) -> dict[str, Any]:
    """Train `cfg.model` (or `model`) on the configured data, test it, and write the run folder."""
    start = time.perf_counter()
    t = cfg.train
    seed_everything(t.seed, t.deterministic, t.threads)
    splits = build_splits(cfg.data)
    model = model if model is not None else build_model(cfg, splits.num_classes)
    engine = Engine(cfg, model, splits, run)
    if engine.dist.is_main and not resume:
        run.write_yaml("config.yaml", to_dict(cfg))
    if resume:
        engine.resume()
    fit = engine.fit()
    test = engine.evaluate(splits.test)
    summary: dict[str, Any] = {"model": cfg.model.name, "test_top1": test["top1"], "test_top5": test["top5"],
                               "test_loss": test["loss"], "steps": fit["steps"],
                               "skipped_steps": fit["skipped_steps"]}
    if engine.ema is not None:
        ema = engine.evaluate(splits.test, engine.ema.module)
        summary["test_top1_ema"] = ema["top1"]
    summary["wall_s"] = round(time.perf_counter() - start, 2)
    if engine.dist.is_main:
        save_weights(engine.model, run.file("model.safetensors"))
        if engine.ema is not None:
            save_weights(engine.ema.module, run.file("model_ema.safetensors"))
        run.write_json("summary.json", summary)
        write_report(run, summary)
    return summary


def test_weights(cfg: RunConfig, weights: Path, model: nn.Module | None = None) -> dict[str, Any]:
    """Top-1/top-5 of saved weights on the test split of the configured data."""
    seed_everything(cfg.train.seed, threads=cfg.train.threads)
    splits = build_splits(cfg.data)
    model = model if model is not None else build_model(cfg, splits.num_classes)
    load_weights(model, weights)
    engine = Engine(cfg, model, splits, None)
    res = engine.evaluate(splits.test)
    return {"test_top1": res["top1"], "test_top5": res["top5"], "test_loss": res["loss"],
            "images": len(splits.test), "weights": str(weights)}


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_model

    tmp = path.with_name(f".{path.name}.tmp")
    save_model(model, str(tmp))
    tmp.replace(path)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a safetensors (or torch, weights_only) state dict, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
    except Exception as e:  # noqa: BLE001 - any decoding failure means an unreadable file
        raise CheckpointError(f"weights file '{path}' cannot be read: {str(e).splitlines()[0]}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"weights file '{path}' does not fit the model: missing {missing[:3]}"
                              f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                              f"{'...' if len(unexpected) > 3 else ''}")
