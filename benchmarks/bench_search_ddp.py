"""Wall time of `cream search` with 2 torchrun processes (gloo, CPU) vs 1 process, same seed, same result.

Trains a small MobileNet supernet once, then runs the same random search (`batch` archs scored per
step, split across the processes) alternately with 1 process and with 2, `--repeats` times each; every
process runs one thread. Reported: median wall time of the whole command (start-up included), of the
search stage (`wall_s` of its summary: data, supernet, search) and of the search loop alone
(`search_s`), their 2-process / 1-process ratios, whether every search.json is equal, and the load
average before and after. Prints one JSON object.

    python benchmarks/bench_search_ddp.py [--budget 32] [--batch 8] [--eval-images 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import sets

SPACE = {
    "family": "mobilenet", "input_size": 32, "num_classes": 10, "act": "swish",
    "stem": {"channels": 16, "stride": 2}, "head": {"channels": 128},
    "stages": [
        {"channels": 16, "stride": 1, "ops": ["ds_k3_se"]},
        {"channels": 24, "stride": 2, "layers": 2, "ops": ["ir_k3_e4_se", "ir_k5_e6_se", "ir_k7_e4_se"]},
        {"channels": 40, "stride": 2, "layers": 2, "ops": ["ir_k3_e4_se", "ir_k5_e6_se", "ir_k7_e4_se"]},
        {"channels": 64, "stride": 1, "ops": ["cn_k1"]},
    ],
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def search(launcher: list[str], supernet: Path, out: Path, options: list[str]) -> tuple[float, float, float]:
    """(command wall s, `wall_s` and `search_s` of its summary) of one `cream search`."""
    start = time.perf_counter()
    done = subprocess.run([*launcher, "-m", "cream", "search", "--supernet", str(supernet), "--out", str(out),
                           "--json", *options], capture_output=True, text=True, env=ENV, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"search failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, summary["wall_s"], summary["search_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval-images", type=int, default=300)
    ap.add_argument("--recal-images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        done = subprocess.run([sys.executable, "-m", "cream", "supernet", "--out", str(root / "supernet"), "--json",
                               *sets([f"space={json.dumps(SPACE)}", "data.train_per_class=40", "data.batch_size=32",
                                      "data.image_size=32",
                                      "train.threads=1", "train.epochs=1"])],
                              capture_output=True, text=True, env=ENV, check=False)
        if done.returncode != 0:
            raise SystemExit(f"supernet failed ({done.returncode}): {done.stderr[-2000:]}")
        options = sets(["search.method=random", f"search.budget={args.budget}", "search.test_top_k=0",
                        f"search.eval_images={args.eval_images}", f"search.bn_recal_images={args.recal_images}",
                        f"search.kwargs={{batch: {args.batch}}}", "train.threads=1"])
        times: dict[str, list[tuple[float, float, float]]] = {"1": [], "2": []}
        for r in range(args.repeats):  # alternate, so a busy phase of the shared machine hits both
            times["1"].append(search([sys.executable], root / "supernet", root / f"one{r}", options))
            times["2"].append(search(TORCHRUN, root / "supernet", root / f"two{r}", options))
        same = all((root / f"two{r}" / "search.json").read_text() == (root / "one0" / "search.json").read_text()
                   and (root / f"one{r}" / "search.json").read_text() == (root / "one0" / "search.json").read_text()
                   for r in range(args.repeats))
    med = {n: [statistics.median(t[i] for t in ts) for i in range(3)] for n, ts in times.items()}
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "budget": args.budget, "batch": args.batch, "eval_images": args.eval_images,
        "bn_recal_images": args.recal_images, "repeats": args.repeats,
        "command_wall_s": {"1": round(med["1"][0], 2), "2": round(med["2"][0], 2)},
        "search_wall_s": {"1": round(med["1"][1], 2), "2": round(med["2"][1], 2)},
        "scoring_s": {"1": round(med["1"][2], 2), "2": round(med["2"][2], 2)},
        "ratio_command": round(med["2"][0] / med["1"][0], 3), "ratio_search": round(med["2"][1] / med["1"][1], 3),
        "ratio_scoring": round(med["2"][2] / med["1"][2], 3),
        "all_runs": {n: [[round(x, 2) for x in t] for t in ts] for n, ts in times.items()},
        "same_search_json": same, "load_before": load_before, "load_after": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
