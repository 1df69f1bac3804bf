import pytest

from cream.config import RunConfig, load_config, parse_override
from cream.errors import ConfigError


def test_defaults_and_typed_overrides():
    cfg = load_config(RunConfig, None, ["optim.lr=1e-3", "train.epochs=3", "data.mean=[0.1,0.2,0.3]",
                                        "train.deterministic=true", "model.kwargs={depth: 2}"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3 and cfg.train.deterministic is True
    assert cfg.data.mean == [0.1, 0.2, 0.3]
    assert cfg.model.kwargs == {"depth": 2}
    assert cfg.data.name == "digits"


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.5\ntrain:\n  epochs: 7\n")
    cfg = load_config(RunConfig, path, ["train.epochs=2"])
    assert cfg.optim.lr == 0.5 and cfg.train.epochs == 2


@pytest.mark.parametrize("override, words", [
    ("no_such_key=1", ["'no_such_key'", "unknown", "data, model, optim, train"]),
    ("optim.nope=1", ["'optim.nope'", "unknown", "lr"]),
    ("optim.lr=abc", ["'optim.lr'", "'abc'", "expected a number"]),
    ("train.epochs=2.5", ["'train.epochs'", "2.5", "integer"]),
    ("train.epochs=-1", ["'train.epochs'", "-1", "out of range", "[1, inf]"]),
    ("train.amp=fp8", ["'train.amp'", "'fp8'", "['none', 'bf16', 'fp16']"]),
    ("train.deterministic=2", ["'train.deterministic'", "true or false"]),
    ("data=3", ["'data'", "must be a mapping"]),
    ("nokeyvalue", ["KEY=VALUE"]),
])
def test_bad_values_name_key_value_and_allowed(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, None, [override])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(RunConfig, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(RunConfig, listy)


def test_parse_override_keeps_strings():
    assert parse_override("model.name=resnet18") == ("model.name", "resnet18")
    assert parse_override("data.root=") == ("data.root", "")
