import json
import subprocess
import sys

import pytest

from cream.cli import main


def cream(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cream", *args], capture_output=True, text=True, timeout=300)


def test_unknown_config_key_is_one_line_exit_2():
    r = cream("run", "--set", "no_such_key=1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_key" in lines[0] and "Traceback" not in r.stderr


def test_profile_resnet18_json():
    r = cream("profile", "--model", "resnet18", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == 11689512
    assert abs(out["macs"] - 1.82e9) / 1.82e9 < 0.01


def test_profile_unknown_model(capsys):
    assert main(["profile", "--model", "no_such_net"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cream: error: model 'no_such_net' is not a known timm model")


@pytest.mark.parametrize("cmd", [["run"], ["retrain"], ["test"], ["profile"]])
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: cream" in capsys.readouterr().out


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["run", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"


def test_retrain_then_test_round_trip(tmp_path, capsys):
    tiny = ["--set", "model.name=vit_tiny_patch16_224", "--set",
            "model.kwargs={img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}",
            "--set", "train.epochs=1", "--set", "data.train_per_class=30"]
    assert main(["retrain", "--out", str(tmp_path / "r"), "--json", *tiny]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["test", str(tmp_path / "r"), "--json"]) == 0
    tested = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tested["test_top1"] == pytest.approx(trained["test_top1"])
    assert main(["test", "--weights", str(tmp_path / "nope.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert main(["test", str(tmp_path / "r"), "--weights", str(tmp_path / "junk.safetensors")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["retrain", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_profile_autoformer_tiny_json():
    r = cream("profile", "--model", "autoformer_tiny", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == 5_867_944  # rel-pos tables counted; 5,768,104 without (the paper's 5.7M)
    assert abs(out["macs"] - 1.3e9) / 1.3e9 < 0.05


@pytest.mark.parametrize("name, published", [("cream_014", 14e6), ("cream_287", 287e6), ("cream_604", 604e6)])
def test_profile_cream_models_report_the_papers_convention(name, published, capsys):
    assert main(["profile", "--model", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["macs"] < out["macs_ptflops"]  # conv + linear only, vs ptflops-style (BN, activations, ...)
    assert abs(out["macs_ptflops"] - published) <= max(0.01 * published, 1e6)  # spec cream.md §4.5: "about 1 M"
