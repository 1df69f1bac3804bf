"""Faults: every command killed with SIGKILL at seeded moments resumes to the uninterrupted result, bit for bit;
--set on --resume is refused unless it cannot change results; a search resumed with other scoring is refused.

The kills come from benchmarks/fault_kills.py (its full 20-kill run is recorded in docs/benchmarks.md). Here
the killed processes are forks of this one, which has imported torch and cream already, so each starts at once.
"""

import json
import random
import shutil

import pytest
import yaml
from conftest import benchmark_module

from cream.cli import main as cream_main

faults = benchmark_module("fault_kills")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """An uninterrupted tiny `cream run`: its stages are the reference of every command."""
    import cream.report.plots  # noqa: F401 - imported once here, not in every fork
    import cream.search.rank  # noqa: F401
    import cream.workflows.pipeline  # noqa: F401

    return faults.reference(tmp_path_factory.mktemp("faults"), launch=faults.cream_forked)


@pytest.mark.parametrize(("command", "moments"), [
    ("supernet", ["step:1", "write:2"]),  # killed before its first checkpoint, then halfway through writing one
    ("search", ["score:3"]),
    ("retrain", ["write:1"]),
    ("run", faults.draw_moments("run", 3, random.Random(3))),  # seeded: in the supernet, search and retrain stages
])
def test_killed_command_resumes_bit_identical(ref, tmp_path, command, moments):
    config, reference = ref
    result = faults.kill_and_resume(command, moments, tmp_path / command, config, reference,
                                    launch=faults.cream_forked)
    assert result["killed"] == len(moments), result  # every moment came before the run ended
    assert result["identical"], result


def test_resume_records_safe_set_and_refuses_others(ref, tmp_path, capsys):
    config, reference = ref
    out = tmp_path / "retrain"
    shutil.copytree(reference / "retrain", out)
    assert cream_main(["retrain", "--resume", str(out), "--set", "optim.lr=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--set optim.lr is refused with --resume" in err
    # a key that cannot change results is taken and recorded; the result is still the uninterrupted one
    assert faults.cream_forked(["retrain", "--resume", str(out), "--set", "train.log_every=3"])[0] == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["log_every"] == 3
    assert faults.same_file(reference / "retrain" / "model.safetensors", out / "model.safetensors")


def test_search_resumed_with_other_scoring_is_refused(ref, tmp_path, capfd):
    config, reference = ref
    out = tmp_path / "search"
    shutil.copytree(reference / "search", out)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    saved["search"]["eval_images"] = 32  # as if the run were resumed with other scoring settings
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    before = json.loads((out / "search.json").read_text())
    capfd.readouterr()
    assert faults.cream_forked(["search", "--resume", str(out)])[0] == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "scoring.eval_images = 64" in err and "has 32" in err
    assert json.loads((out / "search.json").read_text()) == before
