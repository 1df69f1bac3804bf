"""The one-shot pipeline through the CLI: supernet → search → retrain → export, resume and DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cream.cli import main

SPACE = ("space={family: vit, name: vit-test, embed_dims: [16, 24], depths: [1, 2], num_heads: [1, 2], "
         "mlp_ratios: [2.0, 3.0], head_dim: 8, img_size: 16, patch_size: 4, max_relative_position: 4}")
COMMON = ["--set", SPACE, "--set", "data.train_per_class=40", "--set", "train.threads=1",
          "--set", "data.batch_size=32"]
SEARCH = ["--set", "search.budget=8", "--set", "search.limits={params: [null, 12000]}",
          "--set", "search.eval_images=60",
          "--set", "search.kwargs={generations: 3, population: 4, parents: 2, mutations: 2, crossovers: 2}",
          "--set", "search.test_top_k=2"]


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def supernet_run(tmp_path_factory):
    from cream.train.engine import Engine

    out = tmp_path_factory.mktemp("oneshot") / "supernet"
    calls = []
    real = Engine.evaluate_archs
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Engine, "evaluate_archs", lambda self, ds: calls.append(self.step) or real(self, ds))
        assert main(["supernet", "--out", str(out), "--json", *COMMON, "--set", "train.epochs=2"]) == 0
    assert len(calls) == 2  # once per epoch; the summary reuses the last epoch's validation
    return out


def test_supernet_search_retrain_export(supernet_run, tmp_path, capsys):
    capsys.readouterr()
    summary = json.loads((supernet_run / "summary.json").read_text())
    assert {"val_top1_smallest", "val_top1_largest"} <= set(summary)
    records = [json.loads(line) for line in (supernet_run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val_smallest_top1" in r][-1]
    assert all(summary[f"val_top1_{n}"] == last[f"val_{n}_top1"] for n in ("smallest", "largest"))
    assert (supernet_run / "supernet.safetensors").is_file()

    search = tmp_path / "search"
    assert main(["search", "--supernet", str(supernet_run), "--out", str(search), "--json", *SEARCH]) == 0
    found = json.loads((search / "arch.json").read_text())
    search_doc = json.loads((search / "search.json").read_text())
    records = search_doc["records"]
    assert len(records) == 8 and (search / "search.png").is_file()
    assert not any("test_top1" in r for r in [*records, search_doc["best"]])
    assert len(search_doc["top"]) == 2 and all("test_top1" in r for r in search_doc["top"])
    assert search_doc["top"][0]["test_top1"] == found["test_top1"]
    best_first = sorted(range(len(records)), key=lambda i: (-records[i]["score"], i))[:2]  # ties: earlier first
    assert [{k: v for k, v in r.items() if k != "test_top1"} for r in search_doc["top"]] == [records[i]
                                                                                          for i in best_first]
    assert all(r["cost"]["params"] <= 12_000 for r in records)
    assert found["score"] == max(r["score"] for r in records)
    assert 0.0 <= found["test_top1"] <= 1.0

    retrain = tmp_path / "retrain"
    assert main(["retrain", "--out", str(retrain), "--arch", str(search / "arch.json"), "--json",
                 "--set", "train.epochs=1", "--set", "data.train_per_class=40"]) == 0
    assert _last_json(capsys)["model"] == "arch"

    from cream.models import load_exported

    out = tmp_path / "model.safetensors"
    assert main(["export", str(supernet_run), "--arch", str(search / "arch.json"), "--out", str(out)]) == 0
    info = _last_json(capsys)
    assert info["arch"] == found["arch"] and info["params"] == found["cost"]["params"]
    model = load_exported(out).eval()
    from cream.config import RunConfig, load_config
    from cream.workflows.supernet import load_supernet

    cfg = load_config(RunConfig, supernet_run / "config.yaml")
    net = load_supernet(cfg, supernet_run, 10).eval()
    net.set_arch(found["arch"])
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(model(x), net(x), atol=1e-5)
    assert main(["export", str(retrain), "--out", str(tmp_path / "retrained.safetensors")]) == 0
    retrained = load_exported(tmp_path / "retrained.safetensors").eval()  # the retrained weights, not inherited
    assert sum(p.numel() for p in retrained.parameters()) == found["cost"]["params"]
    assert not torch.allclose(retrained(x), model(x), atol=1e-3)


def test_search_resume_matches_uninterrupted(supernet_run, tmp_path, monkeypatch, capsys):
    from cream.search import inherited as oneshot

    assert main(["search", "--supernet", str(supernet_run), "--out", str(tmp_path / "a"), *SEARCH]) == 0
    calls = {"n": 0}
    real = oneshot.InheritedScorer.__call__

    def flaky(self, arch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(self, arch)

    monkeypatch.setattr(oneshot.InheritedScorer, "__call__", flaky)
    assert main(["search", "--supernet", str(supernet_run), "--out", str(tmp_path / "b"), *SEARCH]) == 130
    assert not (tmp_path / "b" / "arch.json").exists()
    monkeypatch.setattr(oneshot.InheritedScorer, "__call__", real)
    assert main(["search", "--resume", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "search.json").read_text())
    b = json.loads((tmp_path / "b" / "search.json").read_text())
    assert [r["arch"] for r in a["records"]] == [r["arch"] for r in b["records"]]
    assert [r["score"] for r in a["records"]] == pytest.approx([r["score"] for r in b["records"]])


def test_bad_arch_is_one_line(supernet_run, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"embed_dim": 20, "depth": 1, "num_heads": [1], "mlp_ratio": [2.0]}))
    assert main(["export", str(supernet_run), "--arch", str(bad), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cream: error: arch field 'embed_dim' = 20 is not allowed; choose one of [16, 24]"
    assert not (tmp_path / "x.safetensors").exists()


def test_ddp_supernet_same_arch_on_every_rank(tmp_path):
    def run(out, batch, *prefix):
        cmd = [*prefix, "-m", "cream", "supernet", "--out", str(out), *COMMON, "--set", f"data.batch_size={batch}",
               "--set", "train.epochs=1", "--set", "train.deterministic=true"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    one = run(tmp_path / "one", 16, sys.executable)
    two = run(tmp_path / "two", 8, sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc_per_node=2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a = load_file(tmp_path / "one" / "supernet.safetensors")
    b = load_file(tmp_path / "two" / "supernet.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, f"max weight difference {worst}"


def test_nsga2_search_writes_its_front(supernet_run, tmp_path):
    """A multi-objective search under two limits at once: every arch in both windows, the front's files written."""
    out = tmp_path / "mo"
    args = [*COMMON, "--set", "search.method=nsga2", "--set", "search.budget=8", "--set", "search.eval_images=60",
            "--set", "search.limits={params: [6000, 12000], macs: [60000, 160000]}", "--set", "search.test_top_k=0",
            "--set", "search.kwargs={objectives: [macs, params], population: 4}"]
    assert main(["search", "--supernet", str(supernet_run), "--out", str(out), "--json", *args]) == 0
    doc = json.loads((out / "search.json").read_text())
    records = doc["records"]
    assert len(records) == 8
    assert all(6000 <= r["cost"]["params"] <= 12000 and 60000 <= r["cost"]["macs"] <= 160000 for r in records)
    listing = json.loads((out / "front.json").read_text())
    assert [e["position"] for e in listing] == doc["front"] and listing
    for e in listing:  # no evaluated arch is at least as good in score, MACs and params, and better in one
        r = records[e["position"]]
        assert not any(o["score"] >= r["score"] and o["cost"]["macs"] <= r["cost"]["macs"]
                       and o["cost"]["params"] <= r["cost"]["params"] and o != r for o in records)
        assert json.loads((out / e["file"]).read_text())["arch"] == r["arch"]
    assert (out / "search.png").is_file() and "front/00.json" in (out / "report.md").read_text()
