"""`cream bench nb201`: simulate a search method on the NAS-Bench-201 table."""

from __future__ import annotations

import argparse
import json

from cream.commands import nb201_table_path


def register(sub: argparse._SubParsersAction) -> None:
    from cream.search import METHODS

    p = sub.add_parser("bench", help="simulate a search method on a tabular benchmark (NAS-Bench-201)",
                       description="Run a search method on the NAS-Bench-201 table for several seeds: search on a "
                                   "validation column, report the test column of the pick (mean, std over seeds) "
                                   "and the best-so-far curve.")
    p.add_argument("benchmark", choices=["nb201"], help="the tabular benchmark")
    p.add_argument("--table", help="nb201.csv (default: $CREAM_SHARED_DATA/nb201/nb201.csv or "
                                   "../shared/data/nb201/nb201.csv)")
    p.add_argument("--method", "--strategy", dest="method", default="regularized", choices=sorted(METHODS),
                   help="search method (--strategy is its old name)")
    p.add_argument("--queries", type=int, default=100, help="unique archs evaluated per search")
    p.add_argument("--seeds", type=int, default=10, help="searches with seeds 0 … K-1")
    p.add_argument("--search-metric", default="cifar10_val_12ep", help="the column the search sees")
    p.add_argument("--report-metric", default="cifar10_test_200ep", help="the column reported for the pick")
    p.add_argument("--latency-device", help="constrain latency on this device (a lat_ms_<device> column)")
    p.add_argument("--latency-limit-ms", type=float, help="latency limit (with --latency-device)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.errors import ConfigError
    from cream.tabular import run_bench

    if args.queries < 1 or args.seeds < 1:
        raise ConfigError(f"--queries = {args.queries}, --seeds = {args.seeds}: both must be >= 1")
    res = run_bench(nb201_table_path(args.table), args.method, args.queries, args.seeds,
                    search_metric=args.search_metric, report_metric=args.report_metric,
                    latency_device=args.latency_device, latency_limit_ms=args.latency_limit_ms)
    if args.json:
        print(json.dumps({**res, "mean": res["final"]["mean"], "std": res["final"]["std"]}))
        return 0
    limit = f", {res['latency']['device']} <= {res['latency']['limit_ms']} ms" if res["latency"] else ""
    print(f"{res['method']} on NAS-Bench-201, {res['seeds']} seeds: search {res['search_metric']}, "
          f"report {res['report_metric']}{limit}")
    print(f"{'queries':>8}  {'mean':>7}  {'std':>6}")
    for point in res["curve"]:
        print(f"{point['queries']:>8}  {point['mean']:7.2f}  {point['std']:6.2f}")
    print(f"optimum: {res['optimum'][res['report_metric']]:.2f} (index {res['optimum']['index']})")
    return 0
