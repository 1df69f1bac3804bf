"""`cream nse`: NSE's rounds of search-space evolution (spec §4.1).

Each round r trains a fresh supernet of the current space in `round-<r>/` (its own engine, so its
own warm-up + cosine schedule, optimizers, checkpoints and resume), then:
1. draws `sample_num` distinct archs from the trained gates with cost in the band, plus `extra`
   archs just below it;
2. scores them, and the previous round's front, by top-1 on the held-out split with BN
   recalibrated per candidate (as `cream search` scores inherited weights);
3. takes the Pareto front of (cost, top-1): extras join the dominance test but are never kept,
   previous archs carry a 1e-10 handicap;
4. evolves the space (`NseSpace.evolve`) and writes it as `round-<r>/space.json` and `space.json`.
The next round builds a new supernet of the evolved space: weights and α start afresh. At the end,
`arch.json` holds the last front's most accurate arch (`cream retrain --arch`, `cream export`).

Why a workflow and not a strategy hook: a round restarts the learning-rate schedule and rebuilds
the weights, α and both optimizers, i.e. everything the engine owns; one engine per round gets all
of that (and per-round checkpoints) for free, where a strategy would have to reach into the engine.
A round counts as finished once its `round.json` exists; a killed run resumes in the first round
without one (from its newest checkpoint; its sampling and scoring are seeded, so they are redone
identically).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from cream.config import RunConfig, to_dict, with_space_classes
from cream.data import build_splits
from cream.errors import ConfigError
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.search.inherited import InheritedScorer
from cream.search.pareto import pareto_front
from cream.spaces import get_space
from cream.spaces.base import Arch, arch_key
from cream.spaces.nse import NseSpace
from cream.train import checkpoint as ckpt
from cream.train.engine import Engine, seed_everything
from cream.train.nse import UNIT, Nse
from cream.train.strategies import make_strategy
from cream.weights import save_weights
from cream.workflows.supernet import SPACE_FILE, SUPERNET_WEIGHTS, new_supernet, resolve_space

HANDICAP = 1e-10  # a previous round's arch loses ties against this round's samples


def band_samples(space: NseSpace, probs: list[list[float]], strategy: Nse, rng: random.Random
                 ) -> tuple[list[Arch], list[Arch]]:
    """Distinct archs drawn from the gates: `sample_num` with cost in (target ± drift), and `extra` with cost
    in (target − drift − extra_drift, target − drift]. Stops after `max_tries` draws per wanted arch."""
    b = strategy.band
    lo, hi, low = (b["target"] - b["drift"]) * UNIT, (b["target"] + b["drift"]) * UNIT, \
        (b["target"] - b["drift"] - b["extra_drift"]) * UNIT
    inside: list[Arch] = []
    below: list[Arch] = []
    seen: set[Any] = set()
    for _ in range(strategy.max_tries * (strategy.sample_num + strategy.extra)):
        if len(inside) >= strategy.sample_num and len(below) >= strategy.extra:
            break
        arch = space.sample(rng, probs)
        key = arch_key(arch)
        if key in seen:
            continue
        seen.add(key)
        cost = space.cost(arch)[b["cost"]]
        if lo < cost < hi and len(inside) < strategy.sample_num:
            inside.append(arch)
        elif low < cost <= lo and len(below) < strategy.extra:
            below.append(arch)
    return inside, below


def select_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kept Pareto front of scored points ({cost, top1, kind: sample | extra | previous}), by cost."""
    scores = [(p["cost"], p["top1"] - (HANDICAP if p["kind"] == "previous" else 0.0)) for p in points]
    return [points[i] for i in pareto_front(scores) if points[i]["kind"] != "extra"]


def run_nse(cfg: RunConfig, run: RunDir) -> dict[str, Any]:
    """All rounds of NSE on `cfg.space` (an NSE space) with `cfg.strategy` = nse, continuing the rounds `run`
    already holds (a resumed run); returns the summary."""
    start = time.perf_counter()
    if cfg.strategy.name != "nse":
        raise ConfigError(f"config key 'strategy.name' = {cfg.strategy.name!r}; `cream nse` runs strategy 'nse'")
    seed_everything(cfg.train.seed, cfg.train.deterministic, cfg.train.threads)
    splits = build_splits(cfg.data)
    if splits.val is None:
        raise ConfigError("NSE steps α and scores archs on a held-out split: set data.val_fraction > 0")
    run.write_yaml("config.yaml", to_dict(with_space_classes(cfg, splits.num_classes)))
    space = resolve_space(cfg, splits.num_classes)
    rounds = make_strategy(cfg.strategy, space, cfg.train.seed).rounds
    front: list[dict[str, Any]] = []
    history = []
    for r in range(rounds):
        rdir = RunDir(run.path / f"round-{r}", write=run.write)
        done = rdir.file("round.json")
        if done.is_file():
            record = json.loads(done.read_text())
            space, front = get_space(json.loads(rdir.file(SPACE_FILE).read_text())), record["front"]
            history.append(record["summary"])
            continue
        rdir.checkpoints.mkdir(parents=True, exist_ok=True)
        rdir.write_json("start_space.json", space.to_config())
        seed_everything(cfg.train.seed + r, cfg.train.deterministic, cfg.train.threads)  # a fresh init each round
        strategy = make_strategy(cfg.strategy, space, cfg.train.seed + r)
        engine = Engine(cfg, new_supernet(cfg, space), splits, rdir, strategy)
        if ckpt.continues(rdir, True):  # a round's folder only holds checkpoints of this run
            engine.resume()
        engine.fit()
        trained = strategy.space
        inside, below = band_samples(trained, strategy.gate_sampling_probs(), strategy,
                                     random.Random(f"nse-band:{cfg.train.seed}:{r}"))
        scorer = InheritedScorer(engine.model, splits, cfg, engine.device)
        key = strategy.band["cost"]
        points = [{"arch": a, "kind": kind, "cost": trained.cost(a)[key], "top1": scorer(a)}
                  for kind, archs in (("sample", inside), ("extra", below),
                                      ("previous", [p["arch"] for p in front]))
                  for a in archs]
        front = [{k: p[k] for k in ("arch", "cost", "top1", "kind")} for p in select_front(points)]
        space = trained.evolve([p["arch"] for p in front])
        summary = {"round": r, "samples": len(inside), "extras": len(below), "front_size": len(front),
                   "best_top1": max((p["top1"] for p in front), default=None), "space_archs": space.num_archs(),
                   "steps": engine.step}
        history.append(summary)
        if run.write:
            save_weights(engine.model, rdir.file(SUPERNET_WEIGHTS))
            rdir.write_json("trained_space.json", trained.to_config())
            rdir.write_json(SPACE_FILE, space.to_config())
            rdir.write_json("front.json", front)
            run.write_json(SPACE_FILE, space.to_config())
            rdir.write_json("round.json", {"summary": summary, "front": front})
    result = {"space": space.name, "strategy": "nse", "rounds": history, "front": front,
              "wall_s": round(time.perf_counter() - start, 2)}
    if run.write:
        run.write_json(SPACE_FILE, space.to_config())
        run.write_json("front.json", front)
        if front:  # the front's most accurate arch, in `cream search`'s arch.json format (for retrain, export)
            best = max(front, key=lambda p: (p["top1"], -p["cost"]))
            run.write_json("arch.json", {"arch": best["arch"], "space": space.to_config(), "score": best["top1"],
                                         "cost": space.cost(best["arch"]), "test_top1": None})
        run.write_json("summary.json", {k: v for k, v in result.items() if k != "front"})
        write_report(run, {k: v for k, v in result.items() if k not in ("front", "rounds")})
    return result

