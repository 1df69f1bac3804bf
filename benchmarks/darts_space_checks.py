"""Checks on the DARTS cell space too slow for the test suite; prints one JSON object.

1. `cells`: params and MACs of each shipped arch file (configs/cdarts/*.json) at CIFAR settings (C = 36,
   20 cells, auxiliary head off), counted on the built network and analytically (`DartsSpace.cost`).
2. `strategies`: `cream supernet` on a tiny DARTS space (digits at 16 px, C = 4, 3 cells) with darts (first and
   second order), gdas and setn, each killed (SIGKILL) after its step-`kill - 1` checkpoint and resumed; the
   resumed run's supernet.safetensors and arch.json against an uninterrupted run's (bit-identical?), wall
   time per step, and a `cream retrain --arch` of the arch.json it wrote (the genotype flows through).

    PYTHONPATH=src python benchmarks/darts_space_checks.py --out runs/darts-space-checks
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import time
from pathlib import Path

from common import REPO, sets
from fault_kills import cream_forked, same_file

SPACE = {"preset": "darts-cifar", "channels": 4, "layers": 3, "search_channels": 4, "search_layers": 3,
         "input_size": 16}
TINY = [f"space={json.dumps(SPACE)}", "data.name=digits", "data.image_size=16", "data.train_per_class=10",
        "data.val_fraction=0.5", "data.batch_size=10", "data.eval_batch_size=50", "train.threads=1",
        "train.deterministic=true", "optim.opt=sgd", "optim.lr=0.05", "train.epochs=2",
        "train.ckpt_every_steps=2", "train.keep_checkpoints=20"]
STRATEGIES = {"darts": "{}", "darts2": "{second_order: true}", "gdas": "{tau_max: 5}",
              "setn": "{candidates: 10, eval_images: 20}"}


def cells() -> dict:
    from cream.models import build_model
    from cream.models.darts import count_params
    from cream.spaces import get_space

    out = {}
    for path in sorted((REPO / "configs" / "cdarts").glob("*.json")):
        doc = json.loads(path.read_text())
        space = get_space(doc["space"])
        net = build_model(space, doc["arch"])
        out[path.stem] = {"params": count_params(net), "params_with_aux": count_params(
            build_model(space, doc["arch"], auxiliary=True), auxiliary=True), **{
            f"analytic_{k}": v for k, v in space.cost(doc["arch"]).items()}}
    return out


def strategy(name: str, kwargs: str, out: Path, kill: int) -> dict:
    extra = [*TINY, f"strategy.name={name.rstrip('2')}", f"strategy.kwargs={kwargs}"]
    start = time.perf_counter()
    ref_status = cream_forked(["supernet", "--out", str(out / "ref"), *sets(extra)])[0]
    ref_s = time.perf_counter() - start
    killed = cream_forked(["supernet", "--out", str(out / "killed"), *sets(extra)], f"step:{kill}")[0]
    resumed = cream_forked(["supernet", "--resume", str(out / "killed")])[0]
    steps = json.loads((out / "ref" / "summary.json").read_text())["steps"] if ref_status == 0 else 0
    identical = all(same_file(out / "ref" / f, out / "killed" / f) for f in ("supernet.safetensors", "arch.json"))
    retrain = cream_forked(["retrain", "--arch", str(out / "ref" / "arch.json"), "--out", str(out / "retrain"),
                            *sets([*TINY[1:9], "train.epochs=1", "model.kwargs={channels: 4, layers: 3}"])])[0]
    arch = json.loads((out / "ref" / "arch.json").read_text())["arch"] if ref_status == 0 else None
    return {"steps": steps, "wall_s": round(ref_s, 2), "s_per_step": round(ref_s / max(steps, 1), 3),
            "killed": killed == -signal.SIGKILL, "resumed_ok": resumed == 0, "bit_identical": identical,
            "retrain_ok": retrain == 0, "arch": arch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/darts-space-checks")
    ap.add_argument("--kill", type=int, default=8, help="SIGKILL at the start of this train step (5 steps/epoch)")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.redirect_stdout(sys.stderr):  # the runs' own summaries; stdout is the JSON
        result = {"cells": cells(), "strategies": {name: strategy(name, kw, out / name, args.kill)
                                                   for name, kw in STRATEGIES.items()}}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
