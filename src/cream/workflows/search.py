"""Search a trained supernet's space with inherited weights (`cream search`)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cream.config import RunConfig, SearchConfig, to_dict, with_space_classes
from cream.cost.limits import Feasible, Window, cost_window, limit_windows, millions_window
from cream.cost.lut import LatencyPredictor, LatencyTable, predicted_vs_measured, register_latency_file
from cream.data import Splits, build_splits
from cream.errors import CreamError
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.search import search
from cream.search.inherited import InheritedScorer
from cream.search.nsga2 import DEFAULT_OBJECTIVES
from cream.spaces.base import Arch, Space
from cream.train.distributed import barrier, init_distributed, split_map
from cream.train.engine import pick_device, seed_everything
from cream.workflows.supernet import SUPERNET_WEIGHTS, load_supernet, write_timm_supernet


def load_scorer(cfg: RunConfig, supernet_run: Path) -> tuple[InheritedScorer, Splits]:
    """The data of `cfg` (seeded with `search.seed`) and a scorer over the supernet trained in `supernet_run`.

    Shared by `cream search` and `cream rank --supernet`, so both score an arch the same way.
    """
    seed_everything(cfg.search.seed, threads=cfg.train.threads)
    splits = build_splits(cfg.data)
    net = load_supernet(cfg, supernet_run, splits.num_classes)
    return InheritedScorer(net, splits, cfg, pick_device(cfg.train.device)), splits


def score_batch(scorer: InheritedScorer, dataset: Any = None) -> Callable[[list[Arch]], list[float]]:
    """Score a batch of archs on `dataset` (default: the scorer's validation split), split across torchrun's
    processes, every process receiving every score in order.

    Each arch is scored whole (full split, same BN-recalibration images) by one process, so its score is
    the one a single process computes."""
    d = init_distributed(scorer.device.type)
    score = scorer if dataset is None else (lambda arch: scorer.score(arch, dataset))
    return lambda archs: split_map(lambda arch: float(score(arch)), archs, d)


def search_windows(s: SearchConfig) -> dict[str, Window]:
    """The configured cost windows of a search in absolute units (only the limited costs): `search.limits`,
    or the older params / MACs keys in millions."""
    if s.limits:
        return limit_windows(s.limits)
    windows = {"params": millions_window(s.params_min, s.params_max), "macs": millions_window(s.macs_min, s.macs_max)}
    return {k: w for k, w in windows.items() if w is not None}


def register_cost_files(s: SearchConfig, space: Space) -> dict[str, LatencyTable | LatencyPredictor]:
    """Offer each latency table or predictor of `search.cost_files` as a cost of `space` (checked to fit it)."""
    return {name: register_latency_file(space, name, path) for name, path in s.cost_files.items()}


def search_feasible(s: SearchConfig, space: Space) -> Feasible | None:
    """The search's constraint on `space` (None without limits); refuses a cost the space does not report.

    The costs of `search.cost_files` are registered first, so limits may name them."""
    register_cost_files(s, space)
    return _limits_feasible(s, space)


def _limits_feasible(s: SearchConfig, space: Space) -> Feasible | None:
    windows = search_windows(s)
    return cost_window(space, windows, where="search.limits") if windows else None


def search_supernet(cfg: RunConfig, supernet_run: Path, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """Search the space `supernet_run` ended with, using its supernet; write arch.json, search.json and search.png.

    arch.json records that space (`Space.to_config`), so a retrain of the arch rebuilds the same one.
    """
    from cream.report.plots import plot_pareto

    start = time.perf_counter()
    s = cfg.search
    scorer, splits = load_scorer(cfg, supernet_run)
    space = scorer.net.space
    d = init_distributed(scorer.device.type)
    barrier(d)  # every rank has looked at the run directory (`cream run` decides what to resume) before rank 0 writes
    run.write_yaml("config.yaml", to_dict(with_space_classes(cfg, splits.num_classes)))  # records --set on resume
    cost_files = register_cost_files(s, space)
    feasible = _limits_feasible(s, space)  # checked before any arch is scored
    common: dict[str, Any] = {"feasible": feasible, "budget": s.budget, "seed": s.seed,
                              "state_path": run.file("search_state.json"), "scoring": scoring(cfg, supernet_run),
                              "score_many": score_batch(scorer), "writer": run.write}
    if s.method == "board":  # Cream: score the supernet run's final board and keep the best (spec §5.6)
        common["board"] = read_board(supernet_run)
    searching = time.perf_counter()
    result = search(s.method, space, scorer, resume=resume, **common, **s.kwargs)
    search_s = time.perf_counter() - searching
    if not result.records:
        raise CreamError(f"the search evaluated no arch: no arch of the space meets the limits {search_windows(s)}")
    # copies: the test accuracy belongs to the "top" list only, not to search.json's records and best
    chosen = result.top(s.test_top_k)
    tests = score_batch(scorer, scorer.test)([rec["arch"] for rec in chosen])
    top = [{**rec, "test_top1": t} for rec, t in zip(chosen, tests, strict=True)]
    best = result.best
    arch_doc = {**arch_file(best, space), "test_top1": top[0]["test_top1"] if top else None}
    run.write_json("arch.json", arch_doc)
    run.write_json("search.json", {**result.to_dict(), "top": top})
    sections = [f"Best arch: `{json.dumps(best['arch'])}`"]
    if result.front is not None:  # a multi-objective search: one arch file per member of the front
        sections.append(write_front(run, result.records, result.front, space))
    if run.write:
        cost = s.kwargs.get("objectives", DEFAULT_OBJECTIVES)[0] if result.front is not None else "params"
        plot_pareto(result.records, run.file("search.png"), cost=cost, front=result.front,
                    chosen=result.best_at[-1])
    # the chosen arch's latency as its table or predictor saw it, and as measured now with the same protocol
    latency = {f"best_{k}": v for k, v in predicted_vs_measured(space, best["arch"], cost_files).items()}
    summary = {"method": s.method, "queries": len(result.records), "best_score": best["score"],
               "best_params": best["cost"]["params"], "best_macs": best["cost"]["macs"], **latency,
               "best_test_top1_inherited": arch_doc["test_top1"], "search_s": round(search_s, 2),
               "wall_s": round(time.perf_counter() - start, 2)}
    run.write_json("summary.json", summary)
    sections += [f"{name}: predicted {latency[f'best_{name}_predicted']:.3f} ms, measured "
                 f"{latency.get(f'best_{name}_measured', float('nan')):.3f} ms" for name in s.cost_files]
    write_report(run, summary, [*sections, "![score vs cost](search.png)"])
    barrier(d)  # the files exist for every rank once the search returns
    return summary


def arch_file(record: dict[str, Any], space: Space) -> dict[str, Any]:
    """What an arch file holds: the arch, the space it belongs to (so a retrain rebuilds the same one), score
    and costs."""
    return {"arch": record["arch"], "space": space.to_config(), "score": record["score"], "cost": record["cost"]}


def write_front(run: RunDir, records: list[dict[str, Any]], front: list[int], space: Space) -> str:
    """`front/NN.json` (an arch file) for each member of a Pareto front, and `front.json` listing them;
    returns the report's table of the front."""
    listing = []
    if run.write:
        run.file("front").mkdir(exist_ok=True)
    for n, pos in enumerate(front):
        name = f"front/{n:02d}.json"
        run.write_json(name, arch_file(records[pos], space))
        listing.append({"file": name, "position": pos, "score": records[pos]["score"], "cost": records[pos]["cost"]})
    run.write_json("front.json", listing)
    costs = list(listing[0]["cost"]) if listing else []
    lines = ["Pareto front:", "", "| file | score | " + " | ".join(costs) + " |", "|---" * (2 + len(costs)) + "|"]
    lines += [f"| {e['file']} | {e['score']:.4f} | " + " | ".join(f"{e['cost'][c]:.4g}" for c in costs) + " |"
              for e in listing]
    return "\n".join(lines)


def search_timm(cfg: RunConfig, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """Search a `from_timm` space without training: the converted supernet (its largest arch is the timm model)
    is written into `run` itself (`write_timm_supernet`), which is then the search's supernet run and the
    source that `cream export` extracts the found arch from."""
    if not (run.path / SUPERNET_WEIGHTS).is_file():
        write_timm_supernet(cfg, run)
    barrier(init_distributed(pick_device(cfg.train.device).type))
    return search_supernet(cfg, run.path, run, resume=resume)


def scoring(cfg: RunConfig, supernet_run: Path) -> dict[str, Any]:
    """How an arch is scored, recorded in the search state: a search resumed with other scoring settings,
    data or supernet weights is refused, since its archs would not be comparable."""
    with open(Path(supernet_run) / SUPERNET_WEIGHTS, "rb") as f:
        weights = hashlib.file_digest(f, "sha256").hexdigest()
    data = {k: v for k, v in to_dict(cfg.data).items() if k not in ("workers", "cache", "cache_dir")}
    return {"eval_images": cfg.search.eval_images, "bn_recal_images": cfg.search.bn_recal_images,
            "amp": cfg.train.amp, "channels_last": cfg.train.channels_last, "data": data,
            "supernet_sha256": weights}


def read_board(supernet_run: Path) -> list[dict[str, Any]]:
    """The final prioritized board of a supernet trained with strategy 'cream' (best path first)."""
    path = Path(supernet_run) / "board.json"
    if not path.is_file():
        raise CreamError(f"'{supernet_run}' holds no board.json; search method 'board' needs a supernet "
                         "trained with strategy 'cream'")
    return json.loads(path.read_text())
