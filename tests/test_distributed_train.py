"""Training under torchrun (2 gloo processes): per-rank random streams that resume bit-identically, and ranks
that agree on skipping a non-finite step."""

import json
import os
import shutil
import subprocess
import sys

import torch
from conftest import sets
from safetensors.torch import load_file

from cream.train.checkpoint import list_checkpoints, load

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["model.name=vit_tiny_patch16_224", "model.kwargs={img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, "
        "num_heads: 2}", "data.batch_size=8", "data.train_per_class=16", "train.threads=1",
        "train.deterministic=true", "model.drop_path=0.2", "train.epochs=2", "train.keep_checkpoints=3"]


def _cream(*argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*TORCHRUN, "-m", "cream", *argv], capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr
    return done


def test_ddp_resume_is_bit_identical_with_per_rank_streams(tmp_path):
    ref = tmp_path / "ref"
    _cream("retrain", "--out", str(ref), "--json", *sets(TINY))
    first, last = list_checkpoints(ref / "checkpoints")
    state = load(first)
    assert len(state["rank_rngs"]) == 1  # rank 1's generators, next to rank 0's
    assert not torch.equal(state["rng"]["torch"], state["rank_rngs"][0]["torch"])  # seeded per rank
    # a copy of the run as it stood after its first epoch, resumed: it must end exactly where the run ended
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(ref / "config.yaml", resumed / "config.yaml")
    shutil.copy(first, resumed / "checkpoints" / first.name)
    _cream("retrain", "--resume", str(resumed), "--json")
    a, b = load_file(ref / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


NAN_ON_RANK_1 = """
import json, os, sys
import torch
from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.train.engine import Engine
from cream.train.strategy import Strategy
from cream.workflows.train_model import configured_model

class NaNOnRank1(Strategy):
    def loss(self, model, images, targets, step):
        loss = super().loss(model, images, targets, step)
        return loss * float("nan") if step == 2 and os.environ["RANK"] == "1" else loss

cfg = load_config(RunConfig, None, sys.argv[1:])
splits = build_splits(cfg.data)
engine = Engine(cfg, configured_model(cfg, splits.num_classes), splits, None, NaNOnRank1())
out = engine.fit()
total = sum(float(p.double().sum()) for p in engine.model.parameters())
result = {"skipped": out["skipped_steps"], "steps": out["steps"], "sum": total}
with open(os.environ["RESULTS"] + "." + os.environ["RANK"], "w") as f:  # one file per rank: shared stdout interleaves
    json.dump(result, f)
"""


def test_ranks_agree_on_skipping_a_non_finite_step(tmp_path):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    done = subprocess.run([*TORCHRUN, str(script), *TINY[:5], "train.epochs=1", "train.on_nan=skip"],
                          capture_output=True, text=True, timeout=300,  # a hang would time out here
                          env={**ENV, "RESULTS": str(tmp_path / "result")})
    assert done.returncode == 0, done.stderr
    ranks = [json.loads((tmp_path / f"result.{rank}").read_text()) for rank in (0, 1)]
    assert [r["skipped"] for r in ranks] == [1, 1] and ranks[0]["steps"] == ranks[1]["steps"] > 2
    assert ranks[0]["sum"] == ranks[1]["sum"]  # the same updates on both ranks
