"""`cream clip distill` and `cream clip zero-shot`: TinyCLIP's stages on open_clip models.

A distill run trains one student (or, with `clip.stages`, several one after the other, each in its own
`stageN/` folder and inheriting from the one before) from a frozen teacher by affinity mimicking, then
scores it zero-shot on the labelled test split. Without a teacher it trains a CLIP from scratch with the
hard contrastive loss (how the benchmark's teacher and baselines are made).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from cream.clip.auto import L0Distill, auto_settings
from cream.clip.config import ClipConfig, ClipModelConfig, ClipRunConfig
from cream.clip.data import CaptionedDataset, PairDataset, class_captions, tokenize_with
from cream.clip.inherit import inherit_manual
from cream.clip.l0 import L0Masks, tower_params
from cream.clip.loss import AffinityLoss
from cream.clip.models import build_clip, model_config, tokenizer
from cream.clip.prune import prune_to_shape, shape_of, towers
from cream.clip.strategy import ClipDistill, FrozenClip
from cream.clip.zero_shot import zero_shot_top1
from cream.config import to_dict
from cream.data import Splits, build_splits
from cream.data.transforms import build_transform
from cream.errors import ConfigError
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.train import checkpoint as ckpt
from cream.train.distributed import barrier
from cream.train.engine import Engine, pick_device, seed_everything
from cream.weights import load_weights, save_weights


def weights_file(given: str, key: str) -> Path:
    """A weights file, or the model.safetensors of a finished run folder."""
    path = Path(given)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"config key '{key}' = {given!r} is neither a weights file nor a finished run folder "
                          "(one holding model.safetensors)")
    return path


def load_clip(m: ClipModelConfig, key: str) -> tuple[nn.Module, dict]:
    """(model, its open_clip config) of a model section, with its weights where it names some."""
    cfg = model_config(m.name, m.cfg, key)
    model = build_clip(cfg, key)
    if m.weights:
        path = weights_file(m.weights, f"{key}.weights")
        if (path.parent / PRUNED_SHAPE).is_file():  # an auto-inherited student: rebuild its pruned widths first
            prune_to_shape(model, json.loads((path.parent / PRUNED_SHAPE).read_text()))
        load_weights(model, path)
    return model, cfg


PRUNED_SHAPE = "pruned_shape.json"


def stage_models(c: ClipConfig) -> list[ClipModelConfig]:
    """The students trained one after the other: `clip.stages`, or the one `clip.student`."""
    if not c.stages:
        return [c.student]
    out = []
    for i, stage in enumerate(c.stages):
        if not isinstance(stage, dict) or not stage.keys() <= {"name", "cfg"}:
            raise ConfigError(f"config key 'clip.stages[{i}]' = {stage!r} is not allowed; use {{name: MODEL}} or "
                              "{cfg: {embed_dim, vision_cfg, text_cfg}}")
        out.append(ClipModelConfig(name=stage.get("name", ""), cfg=stage.get("cfg", {})))
    return out


def check_config(cfg: ClipRunConfig) -> None:
    """Refuse a config that cannot run, before its run folder exists."""
    c = cfg.clip
    if c.inherit.mode == "auto":
        auto_settings(c.inherit.kwargs)
        if not (c.teacher.name or c.teacher.cfg) or c.stages:
            raise ConfigError("config key 'clip.inherit.mode' = 'auto' prunes a copy of the teacher: set clip.teacher "
                              "and give the stages as clip.inherit.kwargs.sparsity, not clip.stages")
        if cfg.train.max_steps and cfg.train.max_steps < c.inherit.kwargs["prune_step"]:
            raise ConfigError(f"config key 'clip.inherit.kwargs.prune_step' = {c.inherit.kwargs['prune_step']} is "
                              f"past train.max_steps = {cfg.train.max_steps}")
    if c.inherit.mode == "manual" and not (c.teacher.name or c.teacher.cfg):
        raise ConfigError("config key 'clip.inherit.mode' = 'manual' needs a teacher to cut the student from "
                          "(set clip.teacher)")
    if c.inherit.mode == "manual" and c.student.weights:
        raise ConfigError("config keys 'clip.student.weights' and 'clip.inherit.mode' = 'manual' both set the "
                          "student's first weights; keep one")
    for i, m in enumerate(stage_models(c) if c.inherit.mode != "auto" else []):  # auto: the student is the teacher
        model_config(m.name, m.cfg, f"clip.stages[{i}]" if c.stages else "clip.student")
    AffinityLoss(**dataclasses.asdict(c.loss))


def clip_splits(cfg: ClipRunConfig, model_cfg: dict) -> tuple[Splits, Any]:
    """(training pairs with the labelled test split, tokenizer): pairs from `clip.data.pairs`, or the labelled
    `data` set's images captioned with their class names."""
    tok = tokenizer(model_cfg)
    labelled = build_splits(cfg.data)
    if cfg.clip.data.pairs:
        train = PairDataset(cfg.clip.data.pairs, cfg.clip.data.captions, tokenize_with(tok),
                            build_transform(cfg.data, train=True))
    else:
        captions = class_captions(labelled.train.classes, cfg.clip.data.template)
        train = CaptionedDataset(labelled.train, tokenize_with(tok)(captions))
    return Splits(train, None, labelled.test, labelled.num_classes), tok


def distill_clip(cfg: ClipRunConfig, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """Train the stage(s) of `cfg`, score each zero-shot on the test split, and write the run folder."""
    start = time.perf_counter()
    check_config(cfg)
    c, t = cfg.clip, cfg.train
    seed_everything(t.seed, t.deterministic, t.threads)
    teacher = load_clip(c.teacher, "clip.teacher")[0] if (c.teacher.name or c.teacher.cfg) else None
    if c.inherit.mode == "auto":
        return _finish(run, _auto_stages(cfg, run, teacher, resume), start)
    models = stage_models(c)
    stages: list[dict[str, Any]] = []
    source = teacher.state_dict() if teacher is not None and c.inherit.mode == "manual" else None
    for i, m in enumerate(models):
        stage_run = run if len(models) == 1 else _stage_dir(run, i)
        key = f"clip.stages[{i}]" if c.stages else "clip.student"
        done = stage_run.file("summary.json")
        if resume and done.is_file():  # a finished stage of a resumed run: its weights feed the next
            stages.append(json.loads(done.read_text()))
            student, _ = load_clip(dataclasses.replace(m, weights=str(stage_run.path)), key)
        else:
            student, stage_summary = _train_stage(cfg, m, key, teacher, source, stage_run, resume)
            stages.append(stage_summary)
        source = student.state_dict() if c.inherit.mode == "manual" else None
    return _finish(run, stages, start)


def _finish(run: RunDir, stages: list[dict[str, Any]], start: float) -> dict[str, Any]:
    summary = {**stages[-1], "wall_s": round(time.perf_counter() - start, 2)}
    if len(stages) > 1:
        summary["stages"] = [{k: s[k] for k in ("student_params", "test_zero_shot_top1")} for s in stages]
    if run.write:
        if len(stages) > 1:  # the last stage's student is the run's model
            last = run.path / f"stage{len(stages) - 1}"
            for name in ("model.safetensors", PRUNED_SHAPE):
                if (last / name).is_file():
                    shutil.copyfile(last / name, run.file(name))
        run.write_json("summary.json", summary)
        write_report(run, summary)
    return summary


def _stage_dir(run: RunDir, i: int) -> RunDir:
    stage = RunDir(run.path / f"stage{i}", run.write)
    if stage.write:
        stage.checkpoints.mkdir(parents=True, exist_ok=True)
    return stage


def _auto_stages(cfg: ClipRunConfig, run: RunDir, teacher: nn.Module, resume: bool) -> list[dict[str, Any]]:
    """Automatic inheritance: a copy of the teacher, masked and pruned to each sparsity in turn (spec §5.3).

    Each stage has a mask phase (`stageN/mask/`: prune_step steps under L0 masks, then pruned) and a dense
    phase (`stageN/`: the usual training of the pruned student); both resume from their checkpoints."""
    c = cfg.clip
    settings = auto_settings(c.inherit.kwargs)
    student, model_cfg = load_clip(c.teacher, "clip.teacher")
    reference = {t.name: tower_params(student, t) for t in towers(student, settings.towers)}
    data = clip_splits(cfg, model_cfg)
    stages: list[dict[str, Any]] = []
    for i, sparsity in enumerate(settings.sparsity):
        stage_run = run if len(settings.sparsity) == 1 else _stage_dir(run, i)
        done = stage_run.file("summary.json")
        if resume and done.is_file():  # a finished stage: its pruned student feeds the next
            stages.append(json.loads(done.read_text()))
            student = load_clip(dataclasses.replace(c.teacher, weights=str(stage_run.path)), "clip.teacher")[0]
            continue
        mask_run = RunDir(stage_run.path / "mask", stage_run.write)
        pruned = mask_run.file("pruned.safetensors")
        if resume and pruned.is_file():
            prune_to_shape(student, json.loads(mask_run.file(PRUNED_SHAPE).read_text()))
            load_weights(student, pruned)
        else:
            if mask_run.write:
                mask_run.checkpoints.mkdir(parents=True, exist_ok=True)
            l0 = L0Masks(student, sparsity, tower_names=settings.towers, warmup_steps=settings.warmup_steps,
                         pooled=settings.pooled, reference_params=reference, init_log_alpha=settings.init_log_alpha,
                         two_sided=settings.two_sided)
            mask_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=settings.prune_step))
            _fit(mask_cfg, student, data, mask_run, L0Distill(FrozenClip(teacher), _loss(cfg), l0, settings),
                 ckpt.continues(mask_run, resume))
            l0.prune(student)
            if mask_run.write:
                save_weights(student, pruned)
                mask_run.write_json(PRUNED_SHAPE, shape_of(student, settings.towers))
        stage_summary = _fit(cfg, student, data, stage_run, ClipDistill(FrozenClip(teacher), _loss(cfg)),
                             ckpt.continues(stage_run, resume), zero_shot=True)
        stage_summary.update(inherit="auto", student="pruned teacher", target_sparsity=sparsity,
                             counted_params=sum(tower_params(student, t) for t in towers(student, settings.towers)),
                             reference_params=sum(reference.values()))
        if stage_run.write:
            save_weights(student, stage_run.file("model.safetensors"))
            stage_run.write_json(PRUNED_SHAPE, shape_of(student, settings.towers))
            stage_run.write_json("summary.json", stage_summary)
        stages.append(stage_summary)
    return stages


def _loss(cfg: ClipRunConfig) -> AffinityLoss:
    return AffinityLoss(**dataclasses.asdict(cfg.clip.loss))


def _fit(cfg: ClipRunConfig, student: nn.Module, data: tuple[Splits, Any], run: RunDir, strategy: ClipDistill,
         resume: bool, zero_shot: bool = False) -> dict[str, Any]:
    """Train `student` in place with `strategy` (continuing from `run`'s checkpoint where `resume`)."""
    if strategy.affinity.logit_scale:
        student.logit_scale.requires_grad_(False)
    splits, tok = data
    engine = Engine(cfg, student, splits, run, strategy)
    if engine.dist.is_main and run.write:
        run.write_yaml("config.yaml", to_dict(cfg))
    if resume:
        engine.resume()
    fit = engine.fit()
    summary: dict[str, Any] = {"student_params": sum(p.numel() for p in student.parameters()),
                               "steps": fit["steps"], "skipped_steps": fit["skipped_steps"]}
    if zero_shot:
        zs = zero_shot_top1(engine.model, splits.test, splits.test.classes, [cfg.clip.data.template], tok,
                            batch_size=cfg.data.eval_batch_size, device=engine.device, workers=cfg.data.workers)
        summary.update(test_zero_shot_top1=zs["top1"], test_images=zs["images"])
    return summary


def _train_stage(cfg: ClipRunConfig, m: ClipModelConfig, key: str, teacher: nn.Module | None,
                 source: dict | None, run: RunDir, resume: bool) -> tuple[nn.Module, dict[str, Any]]:
    c = cfg.clip
    student, model_cfg = load_clip(m, key)
    resume = ckpt.continues(run, resume)
    if source is not None and not resume:  # a resumed stage restores every weight from its checkpoint
        inherit_manual(student, source)
    loss = AffinityLoss(**dataclasses.asdict(c.loss))
    if loss.logit_scale:  # a fixed scale: the student's own is not trained (nor seen by DDP)
        student.logit_scale.requires_grad_(False)
    splits, tok = clip_splits(cfg, model_cfg)
    engine = Engine(cfg, student, splits, run, ClipDistill(FrozenClip(teacher) if teacher else None, loss))
    if engine.dist.is_main:
        run.write_yaml("config.yaml", to_dict(cfg))
    if resume:
        engine.resume()
    fit = engine.fit()
    templates = [c.data.template]
    zs = zero_shot_top1(engine.model, splits.test, splits.test.classes, templates, tok,
                        batch_size=cfg.data.eval_batch_size, device=engine.device, workers=cfg.data.workers)
    summary: dict[str, Any] = {
        "student": m.name or "cfg", "inherit": c.inherit.mode if teacher is not None else "none",
        "student_params": sum(p.numel() for p in student.parameters()),
        "test_zero_shot_top1": zs["top1"], "test_images": zs["images"], "steps": fit["steps"],
        "skipped_steps": fit["skipped_steps"]}
    if engine.dist.is_main:
        save_weights(engine.model, run.file("model.safetensors"))
        run.write_json("summary.json", summary)
    barrier(engine.dist)
    return engine.model, summary


def zero_shot(cfg: ClipRunConfig, model: ClipModelConfig) -> dict[str, Any]:
    """Zero-shot top-1 of `model` on the labelled test split of `cfg.data` (prompt: `clip.data.template`)."""
    seed_everything(cfg.train.seed, threads=cfg.train.threads)
    net, model_cfg = load_clip(model, "clip.student")
    splits = build_splits(cfg.data)
    device = pick_device(cfg.train.device)
    res = zero_shot_top1(net.to(device), splits.test, splits.test.classes, [cfg.clip.data.template],
                         tokenizer(model_cfg), batch_size=cfg.data.eval_batch_size, device=device,
                         workers=cfg.data.workers)
    return {"model": model.name or "cfg", "weights": model.weights, "test_zero_shot_top1": res["top1"],
            "test_images": res["images"], "classes": len(splits.test.classes)}
