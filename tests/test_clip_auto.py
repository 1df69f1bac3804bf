"""`clip.inherit.mode: auto` end to end: a two-stage (100 -> 75 -> 50 %) run, its resume, and its settings."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("open_clip")

from cream.clip.auto import auto_settings  # noqa: E402
from cream.clip.config import ClipRunConfig  # noqa: E402
from cream.clip.l0 import L0Masks  # noqa: E402
from cream.clip.prune import shape_of  # noqa: E402
from cream.config import load_config  # noqa: E402
from cream.errors import ConfigError  # noqa: E402
from cream.run_dir import RunDir  # noqa: E402
from cream.train.checkpoint import load_latest  # noqa: E402
from cream.workflows.clip import check_config, distill_clip, load_clip  # noqa: E402

TEACHER = {"embed_dim": 16,
           "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 2, "head_width": 8,
                          "mlp_ratio": 2},
           "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2,
                        "mlp_ratio": 2}}
AUTO = {"sparsity": [0.25, 0.5], "prune_step": 2, "warmup_steps": 1, "lr": 1.0, "init_log_alpha": 0.5}
TINY = ["data.name=digits", "data.image_size=16", "data.train_per_class=2", "data.test_per_class=1",
        "data.val_fraction=0", "data.batch_size=8", "data.eval_batch_size=20", "train.threads=1",
        "train.epochs=1", "train.max_steps=2", "optim.opt=adamw", "optim.lr=0.001", "optim.sched=none",
        f"clip.teacher.cfg={json.dumps(TEACHER)}", "clip.inherit.mode=auto"]


def _cfg(*extra: str, auto: dict | None = None) -> ClipRunConfig:
    return load_config(ClipRunConfig, None, [*TINY, f"clip.inherit.kwargs={json.dumps(auto or AUTO)}", *extra])


def test_two_stage_auto_run_prunes_each_stage_and_resumes(tmp_path):
    cfg = _cfg()
    check_config(cfg)
    run = RunDir(tmp_path / "run", True)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    summary = distill_clip(cfg, run)
    first, second = (json.loads((tmp_path / "run" / f"stage{i}" / "summary.json").read_text()) for i in (0, 1))
    assert first["reference_params"] > first["counted_params"] > second["counted_params"]  # stage 1 starts from 0
    assert second["reference_params"] == first["reference_params"]
    assert 0.0 <= summary["test_zero_shot_top1"] <= 100.0 and len(summary["stages"]) == 2
    shape = json.loads((tmp_path / "run" / "pruned_shape.json").read_text())
    model, _ = load_clip(cfg.clip.teacher.__class__(cfg=TEACHER, weights=str(tmp_path / "run")), "clip.student")
    assert model.visual.transformer.resblocks[0].ln_1.weight.shape[0] == shape["image"]["hidden"]
    # the mask phase's checkpoint holds the gates and multipliers: they give exactly the pruned widths
    state = load_latest(tmp_path / "run" / "stage0" / "mask" / "checkpoints")
    teacher, _ = load_clip(cfg.clip.teacher, "clip.teacher")
    l0 = L0Masks(teacher, 0.25)
    l0.load_state_dict(state["strategy"]["l0"])
    assert (l0.lambdas > 10).all() and set(state["strategy_optimizers"]) == {"l0"}
    l0.prune(teacher)
    assert shape_of(teacher) == json.loads((tmp_path / "run" / "stage0" / "mask" / "pruned_shape.json").read_text())
    # a resumed finished run redoes nothing and reports the same
    (tmp_path / "run" / "stage1" / "summary.json").write_text(json.dumps({**second, "marker": 1}))
    again = distill_clip(cfg, run, resume=True)
    assert again["marker"] == 1 and again["counted_params"] == second["counted_params"]


def test_auto_settings_are_checked():
    assert auto_settings({"sparsity": 0.5, "prune_step": 10}).warmup_steps == 5
    for bad, key in [({"sparsity": [0.5, 0.25], "prune_step": 3}, "sparsity"),
                     ({"sparsity": 0.5, "prune_step": 0}, "prune_step"),
                     ({"sparsity": 0.5, "prune_step": 3, "towers": ["audio"]}, "towers"),
                     ({"sparsity": 0.5, "prune_step": 3, "lr": -0.02}, "lr"),
                     ({"sparsity": 0.5, "prune_step": 3, "speed": 1}, "speed")]:
        with pytest.raises(ConfigError, match=f"clip.inherit.kwargs.{key}"):
            auto_settings(bad)
    with pytest.raises(ConfigError, match="prune_step"):
        check_config(_cfg("train.max_steps=1"))
