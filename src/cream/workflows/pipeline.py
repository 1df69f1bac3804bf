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
from cream.workflows.supernet import train_supernet
from cream.workflows.train_model import train_standalone


def run_pipeline(cfg: RunConfig, run: RunDir) -> dict[str, Any]:
    """The whole one-shot pipeline in `run`: supernet/ → search/ → retrain/ (train the winner, test it).

    Each stage has its own run folder; a stage is finished once its summary.json, written last, exists.
    In a resumed run, finished stages are kept and the first unfinished one continues from its checkpoint
    or search state (or starts again, if it was killed before its first one).
    """
    start = time.perf_counter()
    search_feasible(cfg.search, get_space(dict(cfg.space)))  # a bad cost limit fails now, not after training
    run.write_yaml("config.yaml", to_dict(cfg))  # a resumed run records its --set keys that do not change results

    sup_dir = run.path / "supernet"
    if not stage_finished(sup_dir):
        sup_run, sup_resume = open_stage(sup_dir, cfg)
        train_supernet(cfg, sup_run, resume=sup_resume)

    search_dir = run.path / "search"
    if not stage_finished(search_dir):
        search_cfg = with_overrides(cfg, {}, init=str(sup_dir))
        search_run, search_resume = open_stage(search_dir, search_cfg)
        search_supernet(search_cfg, sup_dir, search_run, resume=search_resume)
    found = json.loads((search_dir / "arch.json").read_text())

    retrain_dir = run.path / "retrain"
    retrain_cfg = with_overrides(cfg, cfg.retrain, arch=found["arch"], retrain={})
    if stage_finished(retrain_dir):
        retrained = json.loads((retrain_dir / "summary.json").read_text())
    else:
        retrain_run, retrain_resume = open_stage(retrain_dir, retrain_cfg)
        retrained = train_standalone(retrain_cfg, retrain_run, resume=retrain_resume)

    summary = {"space": cfg.space.get("preset", cfg.space.get("family", "custom")),
               "best_arch": json.dumps(found["arch"]), "params": found["cost"]["params"],
               "macs": found["cost"]["macs"], "inherited_val_top1": found["score"],
               "retrained_test_top1": retrained["test_top1"], "test_top1": retrained["test_top1"],
               "wall_s": round(time.perf_counter() - start, 2)}
    run.write_json("summary.json", summary)
    write_report(run, summary, ["## Search", "![score vs params](search/search.png)",
                                "Stages: `supernet/`, `search/` (every evaluated arch in search.json), `retrain/`."])
    return summary


def stage_finished(stage: Path) -> bool:
    return (stage / "summary.json").is_file()


def open_stage(path: Path, cfg: RunConfig) -> tuple[RunDir, bool]:
    """A stage's run folder, and whether it resumes (it does once its config.yaml, written first, exists)."""
    resume = (path / "config.yaml").is_file()
    return RunDir.create(str(path), path.name, resume=resume, config=to_dict(cfg)), resume
