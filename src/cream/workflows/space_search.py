"""Search the search space, then the archs of the evolved space (`cream space-search`, AutoFormerV2/S3).

Run folder:

    steps/<k>/supernet/     the supernet of step k's space (a `cream supernet` run)
    steps/<k>/space.json    step k's space; et.json its E, T, E-T and each dimension's trend and move;
    steps/<k>/trend_<dimension>.png; summary.json (written last: the step is done)
    final/supernet/, final/search/   the evolved space's supernet, and the search under `search.limits`

Every stage resumes like a `cream run` stage: a finished one (its summary.json) is kept, an unfinished one
continues from its checkpoint; a step's measurement is recomputed (it is deterministic), so a resumed run
ends as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from cream.config import RunConfig, to_dict, with_overrides
from cream.errors import ConfigError
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.search.space_search import SpaceMeasure, evolvable, evolve_step
from cream.spaces import get_space
from cream.spaces.base import EvolvableSpace
from cream.train.distributed import barrier, init_distributed
from cream.train.engine import pick_device
from cream.workflows.pipeline import open_stage, stage_finished
from cream.workflows.search import load_scorer, score_batch, search_feasible, search_supernet
from cream.workflows.supernet import train_supernet


def space_search(cfg: RunConfig, run: RunDir) -> dict[str, Any]:
    """`cfg.space_search.steps` steps of space evolution from `cfg.space`, then a search of the evolved space."""
    from cream.report.plots import plot_trend

    start = time.perf_counter()
    first = check_space_search(cfg)
    run.write_yaml("config.yaml", to_dict(cfg))  # a resumed run records its --set keys that do not change results
    space_cfg, steps = dict(cfg.space), []
    for k in range(cfg.space_search.steps):
        step_dir = run.path / "steps" / str(k)
        if not stage_finished(step_dir):
            step_cfg = dataclasses.replace(cfg, space=space_cfg)
            trained = _supernet(step_cfg, step_dir / "supernet")
            record = measure_step(step_cfg, trained)
            step_run = RunDir(step_dir, write=run.write)  # under torchrun, rank 0 writes
            step_run.write_json("space.json", record["space"])
            step_run.write_json("et.json", record)
            for dim, trend in record["dimensions"].items():
                if run.write:
                    plot_trend(dim, trend, step_dir / f"trend_{dim}.png")
            moved = {d: t["next"] for d, t in record["dimensions"].items() if t["action"] != "keep"}
            step_run.write_json("summary.json", {"step": k, "E": record["E"], "T": record["T"], "ET": record["ET"],
                                                 "moved": moved, "next_space": record["next_space"]})
            barrier(init_distributed(pick_device(cfg.train.device).type))  # the step's files exist for every rank
        done = json.loads((step_dir / "summary.json").read_text())
        steps.append(done)
        space_cfg = done["next_space"]

    final_cfg = dataclasses.replace(cfg, space=space_cfg)
    sup_dir = _supernet(final_cfg, run.path / "final" / "supernet")
    search_dir = run.path / "final" / "search"
    if not stage_finished(search_dir):
        search_cfg = with_overrides(final_cfg, {}, init=str(sup_dir))
        search_run, resume = open_stage(search_dir, search_cfg)
        search_supernet(search_cfg, sup_dir, search_run, resume=resume)
    found = json.loads((search_dir / "arch.json").read_text())
    final_space = get_space(space_cfg)
    summary = {"steps": len(steps), "E": [s["E"] for s in steps], "T": [s["T"] for s in steps],
               "ET": [s["ET"] for s in steps], "initial_dimensions": first.dimensions(),
               "final_dimensions": evolvable(final_space).dimensions(), "best_arch": json.dumps(found["arch"]),
               "params": found["cost"]["params"], "macs": found["cost"]["macs"],
               "inherited_val_top1": found["score"], "wall_s": round(time.perf_counter() - start, 2)}
    run.write_json("summary.json", summary)
    write_report(run, summary, ["Steps: `steps/<k>/` (space.json, et.json, trend_*.png); "
                                "the evolved space's supernet and search: `final/`."])
    return summary


def check_space_search(cfg: RunConfig) -> EvolvableSpace:
    """The configured space, if a space search can move it and the search limits fit it (one-line errors,
    before any training)."""
    if not cfg.space:
        raise ConfigError("config key 'space' is empty; a space search needs one, e.g. space: {family: vit, ...}")
    space = evolvable(get_space(dict(cfg.space)), cfg.space_search.dimensions)
    search_feasible(cfg.search, space)
    return space


def measure_step(cfg: RunConfig, supernet_run: Path) -> dict[str, Any]:
    """E, T and E-T of the space trained in `supernet_run` and of each dimension's choices, with inherited
    weights (scored as `cream search` scores), and the trends and the next space (`evolve_step`)."""
    scorer, _ = load_scorer(cfg, supernet_run)
    space = evolvable(scorer.net.space, cfg.space_search.dimensions)
    measure = SpaceMeasure(score_batch(scorer), cfg.space_search, search_feasible(cfg.search, space), cfg.search.seed)
    return evolve_step(space, measure, cfg.space_search)


def _supernet(cfg: RunConfig, path: Path) -> Path:
    """The finished supernet run at `path`: kept if done, else trained (continued from its checkpoint)."""
    if not stage_finished(path):
        sup_run, resume = open_stage(path, cfg)
        train_supernet(cfg, sup_run, resume=resume)
    return path
