"""`cream search` under torchrun: two gloo processes split each batch of candidates and agree with one process."""

import json
import os
import subprocess
import sys

import pytest
from conftest import TINY_CREAM

from cream.cli import main

SPACE = {**TINY_CREAM, "input_size": 16}
COMMON = ["--set", f"space={json.dumps(SPACE)}", "--set", "data.train_per_class=16", "--set", "data.batch_size=16",
          "--set", "train.threads=1", "--set", "train.epochs=1"]
# evolution scores a generation as one batch; BN statistics are recalibrated per arch; the top 3 are tested
SEARCH = ["--set", "search.method=evolution", "--set", "search.budget=9", "--set", "search.bn_recal_images=32",
          "--set", "search.eval_images=30", "--set", "search.test_top_k=3", "--set",
          'search.kwargs={"generations": 2, "population": 5, "parents": 2, "mutations": 2, "crossovers": 2}']
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsearch")
    assert main(["supernet", "--out", str(root / "supernet"), *COMMON]) == 0
    return root / "supernet"


def _search(launcher: list[str], supernet, out) -> subprocess.CompletedProcess:
    done = subprocess.run([*launcher, "-m", "cream", "search", "--supernet", str(supernet), "--out", str(out),
                           "--json", *SEARCH], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return done


def test_two_process_search_equals_one_process_search(supernet, tmp_path):
    one = _search([sys.executable], supernet, tmp_path / "one")
    two = _search(TORCHRUN, supernet, tmp_path / "two")
    a, b = (json.loads((tmp_path / name / "search.json").read_text()) for name in ("one", "two"))
    assert a["queries"] == 9 and len({r["score"] for r in a["records"]}) > 1  # a real search, varied scores
    assert b == a  # every arch, score, cost, best-so-far and test accuracy of the top 3
    assert json.loads((tmp_path / "two" / "arch.json").read_text()) == json.loads(
        (tmp_path / "one" / "arch.json").read_text())
    summaries = [line for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # printed by rank 0 only
    assert json.loads(summaries[0])["best_score"] == json.loads(one.stdout.splitlines()[-1])["best_score"]
