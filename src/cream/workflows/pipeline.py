"""The whole one-shot pipeline (`cream run`): supernet → search → retrain → test, each stage resumable."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cream.config import RunConfig, to_dict, with_overrides
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.spaces import get_space
from cream.workflows.search import search_feasible, search_supernet
from cream.workflows.supernet import SUPERNET_WEIGHTS, train_supernet
from cream.workflows.train_model import train_standalone


def run_pipeline(cfg: RunConfig, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """The whole one-shot pipeline in `run`: supernet/ → search/ → retrain/ (train the winner, test it).

    Each stage has its own run folder. With `resume`, finished stages are kept and the first
    unfinished one continues from its checkpoint or search state.
    """
    start = time.perf_counter()
    search_feasible(cfg.search, get_space(dict(cfg.space)))  # a bad cost limit fails now, not after training
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
