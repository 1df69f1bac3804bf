"""Every training command under 2-process torchrun (gloo, CPU): exit status and summaries printed, N rounds.

Each round runs, with `python -m torch.distributed.run --standalone --nproc_per_node 2`: `cream supernet`
(a tiny ViT space), `cream search` of it, `cream retrain` (a tiny ViT), `cream test` of that retrain and
`cream run` (the whole pipeline, each stage distributed). A command passes when it exits 0 and prints
exactly one summary (`--json`: one JSON line). Prints one JSON object with the counts per command and
the failures' exit codes and last stderr lines.

    python benchmarks/torchrun_all_commands.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import sets

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SPACE = ("space={family: vit, name: vit-test, embed_dims: [16, 24], depths: [1, 2], num_heads: [1, 2], "
         "mlp_ratios: [2.0, 3.0], head_dim: 8, img_size: 16, patch_size: 4, max_relative_position: 4}")
DATA = ["data.train_per_class=16", "data.batch_size=16", "train.threads=1", "train.epochs=1"]
SEARCH = ["search.budget=6", "search.eval_images=40", "search.test_top_k=1",
          "search.kwargs={generations: 2, population: 3, parents: 2, mutations: 2, crossovers: 1}"]
MODEL = ["model.name=vit_tiny_patch16_224", "model.kwargs={img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, "
         "num_heads: 2}", "model.drop_path=0.1"]


def commands(root: Path) -> dict[str, list[str]]:
    """The command lines of one round, in order (search tests the supernet, test the retrain)."""
    return {
        "supernet": ["supernet", "--out", str(root / "supernet"), *sets([SPACE, *DATA])],
        "search": ["search", "--supernet", str(root / "supernet"), "--out", str(root / "search"), *sets(SEARCH)],
        "retrain": ["retrain", "--out", str(root / "retrain"), *sets([*MODEL, *DATA])],
        "test": ["test", str(root / "retrain")],
        "run": ["run", "--out", str(root / "run"), *sets([SPACE, *DATA, *SEARCH, "retrain={train: {epochs: 1}}"])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    results = {name: {"exit_0": 0, "one_summary": 0, "failures": []} for name in commands(Path("."))}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, argv in commands(Path(tmp) / f"round{r}").items():
                done = subprocess.run([*TORCHRUN, "-m", "cream", *argv, "--json"], capture_output=True, text=True,
                                      env=ENV, check=False)
                summaries = [line for line in done.stdout.splitlines() if line.startswith("{")]
                res = results[name]
                res["exit_0"] += done.returncode == 0
                res["one_summary"] += len(summaries) == 1
                if done.returncode != 0 or len(summaries) != 1:
                    res["failures"].append({"round": r, "exit": done.returncode, "summaries": len(summaries),
                                            "stderr": done.stderr.strip().splitlines()[-3:]})
    print(json.dumps({"rounds": args.rounds, "processes": 2, "backend": "gloo", "results": results,
                      "all_passed": all(v["exit_0"] == v["one_summary"] == args.rounds for v in results.values()),
                      "wall_s": round(time.perf_counter() - start, 1), "load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
