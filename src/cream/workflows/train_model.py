"""Train and test one standalone model: what `cream retrain`, `cream test` and `cream run`'s last stage call.
With `distill.teacher` set, the model learns from a teacher too (`cream.train.distill.Distill`).

The model is a timm name (`model.name`), or an arch of the config's space (`arch`), built directly
(`cream.models.build_model`) or, with `init`, extracted once from a trained supernet run. Testing
a finished run needs only its own folder: the weights are loaded into a freshly built model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from cream.config import RunConfig, to_dict, with_space_classes
from cream.data import build_splits
from cream.models import build_model
from cream.models.ensemble import EnsembleNet
from cream.profiling import create_model
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.train import checkpoint as ckpt
from cream.train.distributed import barrier
from cream.train.engine import Engine, pick_device, seed_everything
from cream.train.ensemble import MemberLoss, evaluate_members
from cream.train.evaluate import evaluate
from cream.weights import load_weights, save_weights
from cream.workflows.distill import distill_splits, distill_strategy
from cream.workflows.supernet import arch_model_kwargs, inherited_model, resolve_space, run_space


def configured_model(cfg: RunConfig, num_classes: int, inherit: bool = True,
                     train: Dataset | None = None) -> nn.Module:
    """The configured model: `cfg.arch` of `cfg.space` if an arch is set, else the timm model `cfg.model.name`.

    With `inherit` and `cfg.init`, the arch must belong to the space the supernet run in `cfg.init` ended
    with (its space.json) and takes its weights from that run as search scores it (BN recalibrated on
    `search.bn_recal_images` images of `train`: `inherited_model`).
    """
    if cfg.arch:
        space = run_space(cfg, Path(cfg.init), num_classes) if cfg.init else resolve_space(cfg, num_classes)
        arch = space.validate(cfg.arch)
        if inherit and cfg.init:
            return inherited_model(cfg, Path(cfg.init), arch, num_classes, train)
        return build_model(space, arch, **arch_model_kwargs(cfg))
    kwargs = arch_model_kwargs(cfg)
    kwargs.setdefault("num_classes", num_classes)
    if cfg.model.drop:
        kwargs.setdefault("drop_rate", cfg.model.drop)
    return create_model(cfg.model.name, **kwargs)


def train_standalone(cfg: RunConfig, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """Train the configured model on the configured data, test it, and write the run folder."""
    start = time.perf_counter()
    t = cfg.train
    seed_everything(t.seed, t.deterministic, t.threads)
    splits = build_splits(cfg.data)
    resume = ckpt.continues(run, resume)
    # A resumed run restores every weight from its checkpoint: the supernet in `init` is not read again.
    model = configured_model(cfg, splits.num_classes, inherit=not resume, train=splits.train)
    splits = distill_splits(cfg, splits)  # training views replayed from a logit store's seeds, if it names one
    strategy = distill_strategy(cfg, splits)
    if strategy is None and isinstance(model, EnsembleNet):  # NEAS: one loss per member, summed
        strategy = MemberLoss()
    engine = Engine(cfg, model, splits, run, strategy)
    if engine.dist.is_main:  # a resumed run records the --set keys that do not change results
        run.write_yaml("config.yaml", to_dict(with_space_classes(cfg, splits.num_classes)))
    if resume:
        engine.resume()
    fit = engine.fit()
    test = engine.evaluate(splits.test)
    summary: dict[str, Any] = {"model": "arch" if cfg.arch else cfg.model.name, "test_top1": test["top1"],
                               "test_top5": test["top5"], "test_loss": test["loss"], "steps": fit["steps"],
                               "skipped_steps": fit["skipped_steps"]}
    if engine.ema is not None:
        ema = engine.evaluate(splits.test, engine.ema.module)
        summary["test_top1_ema"] = ema["top1"]
    if isinstance(engine.model, EnsembleNet):  # each member alone, and how often members disagree
        members = evaluate_members(engine.model, splits.test, batch_size=cfg.data.eval_batch_size, dist=engine.dist,
                                   workers=cfg.data.workers)
        summary["test_member_top1"], summary["test_disagreement"] = members["member_top1"], members["disagreement"]
    summary["wall_s"] = round(time.perf_counter() - start, 2)
    if engine.dist.is_main:
        save_weights(engine.model, run.file("model.safetensors"))
        if engine.ema is not None:
            save_weights(engine.ema.module, run.file("model_ema.safetensors"))
        run.write_json("summary.json", summary)
        write_report(run, summary)
    barrier(engine.dist)  # the files exist for every rank once training returns
    return summary


def test_weights(cfg: RunConfig, weights: Path) -> dict[str, Any]:
    """Top-1/top-5 of saved weights on the test split of the configured data (no other run is read)."""
    seed_everything(cfg.train.seed, threads=cfg.train.threads)
    splits = build_splits(cfg.data)
    model = configured_model(cfg, splits.num_classes, inherit=False)
    load_weights(model, weights)
    res = evaluate(model.to(pick_device(cfg.train.device)), splits.test, batch_size=cfg.data.eval_batch_size,
                   workers=cfg.data.workers)
    return {"test_top1": res["top1"], "test_top5": res["top5"], "test_loss": res["loss"],
            "images": len(splits.test), "weights": str(weights)}
