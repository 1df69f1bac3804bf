"""Multi-objective search on NAS-Bench-201: NSGA-II (pymoo) vs random search, accuracy vs one device's latency.

Protocol: both methods see `cifar10_val_12ep` (maximised) and the table's measured latency of one
device (`lat_ms_<device>`, minimised, offered to the search as a cost model). After 100 and 300
unique queries, the hypervolume of the archs evaluated so far is taken in normalised objectives
(error and latency each scaled to [0, 1] by the whole table's range; reference point (1, 1)), so
1.0 would be a single arch with the table's best accuracy and lowest latency; the whole table's
own front is given as the ceiling. Also reported: the hypervolume of the same archs' test accuracy
(`cifar10_test_200ep`), which the searches never see. Mean and std over seeds; one run, both
methods side by side. Prints one JSON object.

    PYTHONPATH=src python benchmarks/mo_nb201.py [--table PATH] [--device pixel3] [--seeds 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from common import NB201_TABLE
from pymoo.indicators.hv import HV

from cream.cost.models import register_cost_model
from cream.search import make_search
from cream.spaces.nb201 import NB201Space, arch_to_index
from cream.tabular import NB201Table

CHECKPOINTS = (100, 300)
SEARCH, TEST = "cifar10_val_12ep", "cifar10_test_200ep"


def normalised(values: np.ndarray, worse_high: bool) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo)
    return scaled if worse_high else 1.0 - scaled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(NB201_TABLE))
    ap.add_argument("--device", default="pixel3", help="latency column lat_ms_<device> of the table")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--population", type=int, default=20)
    args = ap.parse_args()

    start = time.perf_counter()
    table = NB201Table(args.table)
    latency = table.column(f"lat_ms_{args.device}")
    cost_name = f"lat_ms_{args.device}"
    register_cost_model("nb201", cost_name, lambda space, arch: float(latency[arch_to_index(arch)]))
    search_acc = table.column(SEARCH)
    lat_n = normalised(latency, worse_high=True)
    err_n = {m: normalised(table.column(m), worse_high=False) for m in (SEARCH, TEST)}
    hv = HV(ref_point=np.array([1.0, 1.0]))

    def hypervolume(indices: list[int], metric: str) -> float:
        return float(hv(np.stack([err_n[metric][indices], lat_n[indices]], axis=1)))

    def score(arch: dict) -> float:
        return float(search_acc[arch_to_index(arch)])

    space = NB201Space()
    runs = {"random": {}, "nsga2": {"objectives": [cost_name], "population": args.population}}
    out: dict = {m: {f"{metric}@{q}": [] for metric in (SEARCH, TEST) for q in CHECKPOINTS} for m in runs}
    for method, kwargs in runs.items():
        for seed in range(args.seeds):
            result = make_search(method, space, score, budget=max(CHECKPOINTS), seed=seed, **kwargs).run()
            indices = [arch_to_index(r["arch"]) for r in result.records]
            for q in CHECKPOINTS:
                for metric in (SEARCH, TEST):
                    out[method][f"{metric}@{q}"].append(hypervolume(indices[:q], metric))
    every = list(range(len(table)))
    summary = {m: {k: {"mean": statistics.fmean(v), "std": statistics.pstdev(v)} for k, v in runs_out.items()}
               for m, runs_out in out.items()}
    print(json.dumps({
        "device": args.device, "seeds": args.seeds, "population": args.population, "search_metric": SEARCH,
        "hypervolume": summary,
        "whole_table": {SEARCH: hypervolume(every, SEARCH), TEST: hypervolume(every, TEST)},
        "wall_s": round(time.perf_counter() - start, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
