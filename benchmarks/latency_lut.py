"""How well latency lookup tables and learned predictors predict measured latency (issue 15, acceptance 1-2).

`timed` (default): for a space (the Cream MobileNet space at 224 px, or AutoFormer-T), draw
`--eval` + `--train` distinct random archs and build them all; then, for `--rounds` rounds, time
every layer candidate of the space *and* every arch interleaved (`cream.cost.latency.time_models`:
each timed run is one pass over all of them in a fresh shuffled order), so that the machine's
drift hits table entries and ground truth alike. Each job's value is the median
over rounds of the protocol's statistic. The table (constant from 5 training archs) and
predictors fitted on the training archs then predict the eval archs: Spearman rho and median
absolute relative error. Both statistics (median, min of the timed runs) are reported.

`--nb201`: no timing; the NAS-Bench-201 table's published device latencies as ground truth: per
device, predictors fitted on `--nb201-fit` random cells predict every other cell (Spearman rho;
cells below 0.1 ms, the table's degenerate artefacts, are left out).

With `--rounds 2` or more, `retest_round0_vs_round1` ranks the eval archs' first-round times
against their second-round times: the noise ceiling of this machine for any predictor.

    PYTHONPATH=src python benchmarks/latency_lut.py --space cream [--eval 100 --train 200 --rounds 2]
    PYTHONPATH=src python benchmarks/latency_lut.py --space autoformer-tiny
    PYTHONPATH=src python benchmarks/latency_lut.py --nb201
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import numpy as np
from common import NB201_TABLE
from scipy.stats import spearmanr

from cream.cost.latency import TimingProtocol, environment, time_models
from cream.cost.layers import layer_units
from cream.cost.lut import LatencyPredictor, arch_features, make_regressor, model_input_size, table_from_times
from cream.models import build_model
from cream.spaces import get_space
from cream.spaces.base import arch_key

SPACES = {"cream": {"preset": "cream", "input_size": 224}, "autoformer-tiny": {"preset": "autoformer-tiny"}}


def distinct_archs(space, n: int, rng: random.Random) -> list:
    seen, out = set(), []
    while len(out) < n:
        a = space.sample(rng)
        if arch_key(a) not in seen:
            seen.add(arch_key(a))
            out.append(a)
    return out


def scores(pred: list[float], true: list[float]) -> dict[str, float]:
    rel = [abs(p - t) / t for p, t in zip(pred, true, strict=True)]
    return {"spearman": round(float(spearmanr(pred, true).statistic), 4),
            "median_abs_err": round(statistics.median(rel), 4)}


def timed(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    space = get_space(SPACES[args.space])
    rng = random.Random(args.seed)
    archs = distinct_archs(space, args.eval + args.train, rng)
    evals, trains = archs[:args.eval], archs[args.eval:]
    proto = TimingProtocol(batch=1, threads=args.threads, warmup=args.warmup, repeats=args.repeats, clock=args.clock)
    units = layer_units(space).space_units(space)
    jobs = [("unit", k) for k in units] + [("arch", i) for i in range(len(archs))]
    models = [(units[k].build(), units[k].input_size) for k in units]
    models += [(m, model_input_size(m)) for m in (build_model(space, a) for a in archs)]
    results: dict = {job: [] for job in jobs}
    start = time.perf_counter()
    for r in range(args.rounds):
        for job, t in zip(jobs, time_models(models, proto, seed=args.seed + r), strict=True):
            results[job].append(t)
        print(f"round {r} done {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    out = {"space": args.space, "protocol": proto.to_dict(), "rounds": args.rounds, "eval_archs": len(evals),
           "train_archs": len(trains), "units": len(units), "environment": environment(proto),
           "wall_s": round(time.perf_counter() - start, 1)}
    for stat in ("median", "min"):
        value = {job: statistics.median(t[f"{stat}_ms"] for t in ts) for job, ts in results.items()}
        unit_ms = {k: value[("unit", k)] for k in units}
        arch_ms = [value[("arch", i)] for i in range(len(archs))]
        true_eval, true_train = arch_ms[:args.eval], arch_ms[args.eval:]
        table = table_from_times(space, proto, unit_ms, list(zip(trains[:5], true_train[:5], strict=True)))
        res = {"lut": scores([table.predict(space, a) for a in evals], true_eval),
               "lut_constant_ms": round(table.constant_ms, 3),
               "eval_ms_range": [round(min(true_eval), 2), round(statistics.median(true_eval), 2),
                                 round(max(true_eval), 2)]}
        if args.rounds > 1:  # the noise ceiling: the same archs timed in two rounds, ranked against each other
            first, second = ([results[("arch", i)][r][f"{stat}_ms"] for i in range(args.eval)] for r in (0, 1))
            res["retest_round0_vs_round1"] = scores(first, second)
        if args.train >= 10:
            for est in ("ridge", "gbr"):
                pred = LatencyPredictor(space.to_config(), proto, trains, true_train, est)
                res[f"predictor_{est}"] = scores(pred.predict_many(space, evals), true_eval)
        out[stat] = res
    return out


def nb201(args: argparse.Namespace) -> dict:
    from cream.spaces.nb201 import NB201Space
    from cream.tabular.nb201 import NB201Table

    table = NB201Table(args.table)
    space = NB201Space()
    feats = [arch_features(space, table.arch(i)) for i in range(len(table))]
    out: dict = {"fit_cells": args.nb201_fit, "devices": {}}
    for device in table.devices:
        y = table.column(f"lat_ms_{device}")
        valid = np.flatnonzero(y >= 0.1)
        rng = np.random.default_rng(args.seed)
        fit = rng.choice(valid, size=args.nb201_fit, replace=False)
        rest = np.setdiff1d(valid, fit)
        row = {}
        for est in ("ridge", "gbr"):
            model = make_regressor(est).fit([feats[i] for i in fit], y[fit])
            pred = model.predict([feats[i] for i in rest])
            row[est] = round(float(spearmanr(pred, y[rest]).statistic), 4)
        out["devices"][device] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", choices=sorted(SPACES), default="cream")
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["wall", "process"], default="process",
                    help="process: CPU time of this process (1 thread; the machine is shared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nb201", action="store_true", help="the NAS-Bench-201 device-latency check instead")
    ap.add_argument("--nb201-fit", type=int, default=100)
    ap.add_argument("--table", default=str(NB201_TABLE))
    args = ap.parse_args()
    print(json.dumps(nb201(args) if args.nb201 else timed(args)))


if __name__ == "__main__":
    main()
