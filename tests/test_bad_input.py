"""Bad input, table-driven: every command refuses bad values, files and flags the same way.

For each case: exit code 2, exactly one line on stderr, no traceback, and nothing on disk changed
(no file written, changed or removed, so no run directory left behind that could be neither rerun
nor resumed). A few cases then fix the input and rerun into the same --out, which must work.
Every case fails before any training, so the table is fast; one tiny supernet run (two steps)
serves the commands that read a finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import sets

import cream
from cream.cli import main

SRC = str(Path(cream.__file__).resolve().parents[1])  # the cream under test, also for subprocesses run elsewhere
PRESET = str(Path(__file__).resolve().parents[1] / "src" / "cream" / "presets" / "run.yaml")
TINY_RUN = sets(["train.epochs=1", "train.max_steps=2", "data.train_per_class=20", "data.batch_size=32",
                 "search.budget=2", "search.test_top_k=0",
                 "search.kwargs={generations: 1, population: 2, parents: 1, mutations: 1, crossovers: 0}"])
TINY_MODEL = sets(["model.name=vit_tiny_patch16_224",
                   "model.kwargs={img_size: 16, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 1}",
                   "train.epochs=1", "train.max_steps=2", "data.train_per_class=10", "data.batch_size=32"])


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The workspace every case runs in: a finished tiny supernet run (`prior`), a folder holding a file
    (`keep`), and input files good and bad."""
    ws = tmp_path_factory.mktemp("bad-input")
    code = main(["supernet", PRESET, "--out", str(ws / "prior"), *TINY_RUN])
    assert code == 0
    (ws / "keep").mkdir()
    (ws / "keep" / "keep.txt").write_text("precious")
    (ws / "bad.yaml").write_text("data: [unclosed\n")
    (ws / "list.yaml").write_text("- 1\n- 2\n")
    (ws / "junk.bin").write_bytes(b"not a checkpoint")
    (ws / "not-json.json").write_text("{nope")
    (ws / "alien-arch.json").write_text(json.dumps({"arch": {"embed_dim": 999, "depth": 1}}))
    (ws / "scores.json").write_text(json.dumps({"a": 1.0, "b": 2.0, "c": 3.0}))
    (ws / "empty").mkdir()
    return ws


def snapshot(*roots: Path) -> dict[str, str]:
    """{path: digest} of every file and folder under `roots`."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


CUDA = torch.cuda.is_available()
CONVERT = ["--out", "{tmp}/out", "--set", "space.preset=autoformer-tiny"]

# (id, argv with {ws} and {tmp} placeholders, a word the one line must contain)
CASES = [
    # cream run: options checked when the config loads
    ("run-opt", ["run", "--set", "optim.opt=nope"], "optim.opt"),
    ("run-sched-plateau", ["run", "--set", "optim.sched=plateau"], "optim.sched"),
    ("run-epochs-0", ["run", "--set", "train.epochs=0"], "train.epochs"),
    ("run-auto-augment", ["run", "--set", "data.auto_augment=rand-zz9"], "data.auto_augment"),
    ("run-auto-augment-crop", ["run", "--set", "data.auto_augment=v0"], "data.auto_augment"),
    ("run-search-kwargs-budget", ["run", "--set", "search.kwargs={budget: 5}"], "search.kwargs.budget"),
    ("run-search-kwargs-seed", ["run", "--set", "search.kwargs={seed: 1}"], "search.kwargs.seed"),
    ("run-retrain-section", ["run", "--set", "retrain={train: {epochs: 0}}"], "retrain"),
    ("run-missing-config", ["run", "{ws}/missing.yaml"], "does not exist"),
    ("run-bad-yaml", ["run", "{ws}/bad.yaml"], "not valid YAML"),
    ("run-yaml-list", ["run", "{ws}/list.yaml"], "mapping"),
    ("run-unknown-key", ["run", "--set", "optim.nope=1"], "optim.nope"),
    ("run-wrong-type", ["run", "--set", "optim.lr=fast"], "optim.lr"),
    ("run-set-syntax", ["run", "--set", "optim.lr"], "KEY=VALUE"),
    ("run-existing-out", ["run", "--out", "{ws}/keep"], "already exists"),
    ("run-prior-out", ["run", "--out", "{ws}/prior"], "already exists"),
    ("run-config-and-resume", ["run", "{ws}/bad.yaml", "--resume", "{ws}/prior"], "--resume"),
    ("run-bad-flag", ["run", "--epochs", "3"], "--epochs"),
    ("run-data-root", ["run", "--out", "{tmp}/out", "--set", "data.name=imagefolder",
                       "--set", "data.root={ws}/nowhere"], "nowhere"),
    ("run-batch-too-big", ["run", "--out", "{tmp}/out", "--set", "data.batch_size=100000"], "data.batch_size"),
    # cream supernet
    ("supernet-space-family", ["supernet", "--out", "{tmp}/out", "--set", "space={family: nope}"], "nope"),
    ("supernet-strategy", ["supernet", PRESET, "--set", "strategy.name=nope"], "strategy.name"),
    ("supernet-strategy-kwargs", ["supernet", PRESET, "--out", "{tmp}/out", "--set", "strategy.kwargs={nope: 1}"],
     "strategy.kwargs"),
    ("supernet-log-every", ["supernet", PRESET, "--set", "train.log_every=0"], "train.log_every"),
    ("supernet-resume-nothing", ["supernet", "--resume", "{ws}/keep"], "no config.yaml"),
    # cream search
    ("search-no-supernet", ["search"], "--supernet"),
    ("search-not-a-run", ["search", "--supernet", "{ws}/keep"], "not a run directory"),
    ("search-kwargs-budget", ["search", "--supernet", "{ws}/prior", "--set", "search.kwargs={budget: 3}"],
     "search.kwargs.budget"),
    ("search-method", ["search", "--supernet", "{ws}/prior", "--set", "search.method=nope"], "search.method"),
    ("search-limits-order", ["search", "--supernet", "{ws}/prior", "--set", "search.limits={params: [5, 1]}"],
     "search.limits.params"),
    ("search-limits-cost", ["search", "--supernet", "{ws}/prior", "--out", "{tmp}/out",
                            "--set", "search.limits={bogus: [0, 1]}"], "bogus"),
    # cream retrain
    ("retrain-model-kwargs", ["retrain", "--out", "{tmp}/out", "--set", "model.kwargs={nope: 1}"], "model.kwargs"),
    ("retrain-model-name", ["retrain", "--out", "{tmp}/out", "--set", "model.name=no_such_net"], "no_such_net"),
    ("retrain-arch-missing", ["retrain", PRESET, "--arch", "{ws}/missing.json"], "missing.json"),
    ("retrain-arch-not-json", ["retrain", PRESET, "--arch", "{ws}/not-json.json"], "not-json.json"),
    ("retrain-arch-alien", ["retrain", PRESET, "--out", "{tmp}/out", "--arch", "{ws}/alien-arch.json"],
     "embed_dim"),
    # cream test
    ("test-nothing", ["test"], "--weights"),
    ("test-not-a-run", ["test", "{ws}/keep"], "not a run directory"),
    ("test-missing-weights", ["test", "--weights", "{ws}/missing.safetensors"], "does not exist"),
    ("test-junk-weights", ["test", "{ws}/prior", "--weights", "{ws}/junk.bin"], "junk.bin"),
    ("test-bad-set", ["test", "{ws}/prior", "--set", "data.auto_augment=bogus"], "data.auto_augment"),
    # cream export
    ("export-not-a-run", ["export", "{ws}/keep", "--out", "{tmp}/m.safetensors"], "not a run directory"),
    ("export-no-arch", ["export", "{ws}/prior", "--out", "{tmp}/m.safetensors"], "--arch"),
    ("export-arch-missing", ["export", "{ws}/prior", "--arch", "{ws}/missing.json", "--out", "{tmp}/m.safetensors"],
     "missing.json"),
    ("export-arch-alien", ["export", "{ws}/prior", "--arch", "{ws}/alien-arch.json", "--out",
                           "{tmp}/m.safetensors"], "embed_dim"),
    ("export-no-out", ["export", "{ws}/prior"], "--out"),
    # cream convert
    ("convert-missing", ["convert", "{ws}/missing.pth", *CONVERT], "missing.pth"),
    ("convert-no-space", ["convert", "{ws}/junk.bin", "--out", "{tmp}/out"], "space"),
    ("convert-junk", ["convert", "{ws}/junk.bin", *CONVERT], "junk.bin"),
    # cream profile
    ("profile-input-size-0", ["profile", "--model", "resnet18", "--input-size", "3", "0", "224"], "--input-size"),
    ("profile-input-size-text", ["profile", "--model", "resnet18", "--input-size", "3", "a", "224"], "--input-size"),
    ("profile-input-channels", ["profile", "--model", "resnet18", "--input-size", "1", "32", "32"], "channels"),
    ("profile-input-size-vit", ["profile", "--model", "vit_tiny_patch16_224", "--input-size", "3", "8", "8"],
     "--input-size"),
    ("profile-model", ["profile", "--model", "no_such_net"], "no_such_net"),
    # cream bench
    ("bench-queries", ["bench", "nb201", "--queries", "0"], "--queries"),
    ("bench-table-missing", ["bench", "nb201", "--table", "{ws}/missing.csv"], "missing.csv"),
    ("bench-method", ["bench", "nb201", "--method", "nope"], "--method"),
    # cream rank
    ("rank-nothing", ["rank"], "--scores"),
    ("rank-missing-file", ["rank", "--scores", "{ws}/missing.json", "--truth", "{ws}/scores.json"], "missing.json"),
    ("rank-not-json", ["rank", "--scores", "{ws}/not-json.json", "--truth", "{ws}/scores.json"], "not-json.json"),
    ("rank-both-forms", ["rank", "--supernet", "{ws}/prior", "--scores", "{ws}/scores.json"], "--supernet"),
    # cream distill-store
    ("distill-no-teacher", ["distill-store", "--out", "{tmp}/store"], "distill.teacher"),
    ("distill-teacher-name", ["distill-store", "--out", "{tmp}/store", "--set", "distill.teacher.kind=timm",
                              "--set", "distill.teacher.name=no_such_net"], "no_such_net"),
    ("distill-teacher-kwargs", ["distill-store", "--out", "{tmp}/store", "--set", "distill.teacher.kind=timm",
                                "--set", "distill.teacher.name=resnet18", "--set", "distill.teacher.kwargs={nope: 1}"],
     "distill.teacher.kwargs"),
    ("distill-teacher-kind", ["distill-store", "--out", "{tmp}/store", "--set", "distill.teacher.kind=nope"],
     "distill.teacher.kind"),
    ("distill-no-out", ["distill-store"], "--out"),
    # cream distill save-logits | check
    ("distill-save-no-store", ["distill", "save-logits"], "distill.store"),
    ("distill-epochs", ["distill", "save-logits", "--epochs", "3:1"], "--epochs"),
    ("distill-check-no-store", ["distill", "check", "--set", "distill.store={tmp}/none"], "is not a logit store"),
    # cream space-search: the space, the space_search section, and resuming
    # cream latency: the model, the arch file, the space and the protocol
    ("latency-model", ["latency", "measure", "--model", "nope_model"], "nope_model"),
    ("latency-arch-missing", ["latency", "measure", "--arch", "{tmp}/none.json"], "--arch"),
    ("latency-threads", ["latency", "measure", "--model", "resnet18", "--threads", "0"], "threads"),
    ("latency-lut-space", ["latency", "build-lut", "not-a-space", "--out", "{tmp}/lut.json"], "not-a-space"),
    ("space-search-no-space", ["space-search"], "config key 'space' is empty"),
    ("space-search-dimension", ["space-search", PRESET, "--set", "space_search.dimensions=[width]"],
     "space_search.dimensions"),
    ("space-search-no-contract", ["space-search", PRESET, "--set", "space={preset: nb201}"], "with_dimensions"),
    ("space-search-bounds", ["space-search", PRESET, "--set", "space_search.bounds={depth: [5, 2]}"],
     "space_search.bounds.depth"),
    ("space-search-evolution-budget", ["space-search", PRESET, "--set", "space_search.evolution={budget: 3}"],
     "space_search.evolution.budget"),
    ("space-search-update", ["space-search", PRESET, "--set", "space_search.update=jump"], "space_search.update"),
    ("space-search-resume-missing", ["space-search", "--resume", "{ws}/empty"], "no config.yaml"),
    ("nse-strategy", ["nse", "--out", "{tmp}/out", "--set", "strategy.name=uniform"], "strategy.name"),
    ("clip-auto", ["clip", "distill", "--set", "clip.student.name=TinyCLIP-ViT-8M-16-Text-3M", "--set",
                   "clip.inherit.mode=auto"], "clip.inherit.kwargs.sparsity"),
    ("clip-student-name", ["clip", "distill", "--set", "clip.student.name=nope_clip"], "nope_clip"),
    ("clip-no-student", ["clip", "distill"], "clip.student"),
    ("clip-manual-no-teacher", ["clip", "distill", "--set", "clip.student.name=TinyCLIP-ViT-8M-16-Text-3M",
                                "--set", "clip.inherit.mode=manual"], "clip.teacher"),
    ("clip-two-inits", ["clip", "distill", "--set", "clip.student.name=TinyCLIP-ViT-8M-16-Text-3M", "--set",
                        "clip.teacher.name=TinyCLIP-ViT-39M-16-Text-19M", "--set", "clip.student.weights=w.pt",
                        "--set", "clip.inherit.mode=manual"], "clip.student.weights"),
    ("clip-stage", ["clip", "distill", "--set", "clip.stages=[{nope: 1}]"], "clip.stages[0]"),
    ("clip-loss-alpha", ["clip", "distill", "--set", "clip.loss.alpha=2"], "clip.loss.alpha"),
    ("clip-zero-shot-neither", ["clip", "zero-shot"], "--model"),
    ("clip-zero-shot-run", ["clip", "zero-shot", "{ws}/keep"], "not a finished"),
    ("nse-band-drift", ["nse", "--out", "{tmp}/out", "--set", "space={family: nse, input_size: 16}",
                        "--set", "strategy.name=nse"], "strategy.kwargs.band"),
]
if not CUDA:
    CASES += [
        ("run-device-cuda", ["run", "--set", "train.device=cuda"], "train.device"),
        ("retrain-device-cuda", ["retrain", "--set", "train.device=cuda"], "train.device"),
    ]


def _argv(argv: list[str], ws: Path, tmp: Path) -> list[str]:
    return [a.replace("{ws}", str(ws)).replace("{tmp}", str(tmp)) for a in argv]


@pytest.mark.parametrize(("argv", "word"), [pytest.param(a, w, id=i) for i, a, w in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, word, ws, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a default run folder (runs/...) would appear here
    (tmp_path / "keep.txt").write_text("precious")
    before = snapshot(ws, tmp_path)
    code = _exit_code(_argv(argv, ws, tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert word in lines[0], lines[0]
    assert snapshot(ws, tmp_path) == before


def _exit_code(argv: list[str]) -> int:
    """`main`'s exit code, argparse's SystemExit included, as a process would see it."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_the_table_is_big_and_covers_every_command():
    from cream.commands import COMMANDS

    assert len(CASES) >= 40
    assert {c.replace("_", "-") for c in COMMANDS} <= {argv[0] for _, argv, _ in CASES}


@pytest.mark.parametrize(("bad", "fixed"), [
    pytest.param(["retrain", "--set", "model.kwargs={nope: 1}"], ["retrain", *TINY_MODEL], id="retrain-kwargs"),
    pytest.param(["supernet", PRESET, *TINY_RUN, "--set", "data.batch_size=100000"],
                 ["supernet", PRESET, *TINY_RUN], id="supernet-batch"),
    pytest.param(["search", "--supernet", "{ws}/prior", *TINY_RUN, "--set", "search.limits={bogus: [0, 1]}"],
                 ["search", "--supernet", "{ws}/prior", *TINY_RUN], id="search-limits"),
])
def test_rerun_into_the_same_out_after_fixing_the_input(bad, fixed, ws, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()  # an empty folder given as --out stays usable (and stays there)
    assert main([*_argv(bad, ws, tmp_path), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert out.is_dir() and not any(out.iterdir())
    assert main([*_argv(fixed, ws, tmp_path), "--out", str(out), "--json"]) == 0
    assert (out / "summary.json").is_file() or (out / "search.json").is_file()


@pytest.mark.parametrize("argv", [
    ["profile", "--model", "resnet18", "--input-size", "3", "0", "224"],
    ["run", "--set", "optim.opt=nope"],
    ["retrain", "--set", "train.epochs=0"],
], ids=["profile", "run", "retrain"])
def test_bad_input_in_a_real_process(argv, tmp_path):
    """The same contract seen from outside: the real stderr (logging and warnings included), the real exit code."""
    proc = subprocess.run([sys.executable, "-m", "cream", *argv], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())
