"""`cream bench nb201`: simulate a search method on the NAS-Bench-201 table; `cream bench nb201-oneshot`:
train a one-shot method on CIFAR-10 images and look its cell up in the table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cream.commands import add_set_option, nb201_table_path, shared_data_file


def register(sub: argparse._SubParsersAction) -> None:
    from cream.search import METHODS
    from cream.workflows.oneshot_bench import METHODS as ONESHOT

    p = sub.add_parser("bench", help="simulate a search method on a tabular benchmark (NAS-Bench-201)",
                       description="Run a search method on the NAS-Bench-201 table for several seeds: search on a "
                                   "validation column, report the test column of the pick (mean, std over seeds) "
                                   "and the best-so-far curve.")
    p.add_argument("benchmark", choices=["nb201", "nb201-oneshot"],
                   help="nb201: a search method on the table; nb201-oneshot: a one-shot method (--method spos, darts, "
                        "gdas, setn, cdarts) trained on CIFAR-10 images, its cell looked up in the table")
    p.add_argument("--table", help="nb201.csv (default: $CREAM_SHARED_DATA/nb201/nb201.csv or "
                                   "../shared/data/nb201/nb201.csv)")
    p.add_argument("--method", "--strategy", dest="method", default=None,
                   help=f"nb201: a search method, {sorted(METHODS)} (default regularized; --strategy is its old "
                        f"name); nb201-oneshot: one of {sorted(ONESHOT)}")
    p.add_argument("--queries", type=int, default=100, help="unique archs evaluated per search")
    p.add_argument("--seeds", type=int, default=10, help="searches with seeds 0 … K-1")
    p.add_argument("--search-metric", default="cifar10_val_12ep", help="the column the search sees")
    p.add_argument("--report-metric", default="cifar10_test_200ep", help="the column reported for the pick")
    p.add_argument("--latency-device", help="constrain latency on this device (a lat_ms_<device> column)")
    p.add_argument("--latency-limit-ms", type=float, help="latency limit (with --latency-device)")
    p.add_argument("--epochs", type=int, default=2, help="nb201-oneshot: supernet training epochs")
    p.add_argument("--train-images", type=int, default=1000,
                   help="nb201-oneshot: CIFAR-10 train images (half train the weights, half are held out)")
    p.add_argument("--data", help="nb201-oneshot: the CIFAR-10 ImageFolder archive (default: "
                                  "$CREAM_SHARED_DATA/cifar10/cifar10-jpg.tar.gz or ../shared/data/cifar10/...)")
    p.add_argument("--out", help="nb201-oneshot: where the runs go (default: runs/bench-nb201-oneshot-<method>)")
    add_set_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.errors import ConfigError
    from cream.tabular import run_bench

    if args.queries < 1 or args.seeds < 1:
        raise ConfigError(f"--queries = {args.queries}, --seeds = {args.seeds}: both must be >= 1")
    if args.benchmark == "nb201-oneshot":
        return oneshot(args)
    from cream.search import METHODS

    args.method = args.method or "regularized"
    if args.method not in METHODS:
        raise ConfigError(f"--method = {args.method!r} is not a search method; choose one of {sorted(METHODS)}")
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


def oneshot(args: argparse.Namespace) -> int:
    from cream.errors import ConfigError
    from cream.tabular import NB201Table
    from cream.workflows.oneshot_bench import oneshot_config, run_oneshot

    if args.method is None:
        raise ConfigError("cream bench nb201-oneshot needs --method (spos, darts, gdas, setn or cdarts)")
    oneshot_config(args.method, args.epochs, args.train_images, 0, "", args.overrides)  # bad arguments fail first
    table = NB201Table(nb201_table_path(args.table))
    archive = shared_data_file(args.data, "cifar10/cifar10-jpg.tar.gz", "CIFAR-10 archive", "--data PATH")
    out = Path(args.out or f"runs/bench-nb201-oneshot-{args.method}")
    res = run_oneshot(args.method, args.epochs, args.train_images, args.seeds, table, str(archive), out,
                      args.overrides)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['method']} on NAS-Bench-201: {res['epochs']} epochs, {res['train_images']} CIFAR-10 images, "
          f"{res['seeds']} seeds")
    for r in res["per_seed"]:
        print(f"seed {r['seed']}: {r['arch']}  C10 {r['cifar10']:.2f}  C100 {r['cifar100']:.2f}  "
              f"IN16 {r['imagenet16']:.2f}  {r['wall_s']:.0f} s")
    print("mean ± std: " + "  ".join(f"{k} {res[k]['mean']:.2f} ± {res[k]['std']:.2f}"
                                     for k in ("cifar10", "cifar100", "imagenet16", "wall_s")))
    return 0
