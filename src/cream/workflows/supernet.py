"""Train a supernet (`cream supernet`), and read a trained one back.

Data flows one way: config → data + space → supernet → strategy/engine → supernet.safetensors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.utils.data import Dataset

from cream.config import RunConfig, to_dict, with_space_classes
from cream.data import build_splits
from cream.errors import ConfigError, CreamError
from cream.nn.batchnorm import bn_layers
from cream.report.summary import write_report
from cream.run_dir import RunDir
from cream.search.inherited import place_supernet, recal_loader, select_inherited
from cream.spaces import get_space
from cream.spaces.base import Arch, Space
from cream.supernets import build_supernet
from cream.supernets.from_timm import supernet_from_timm
from cream.train import checkpoint as ckpt
from cream.train.distributed import barrier
from cream.train.engine import Engine, pick_device, seed_everything
from cream.train.strategies import make_strategy, supernet_kind
from cream.weights import load_weights, save_weights

SUPERNET_WEIGHTS = "supernet.safetensors"
SPACE_FILE = "space.json"  # the space a supernet run ends with (narrower than its config's after shrinking)


def resolve_space(cfg: RunConfig, num_classes: int) -> Space:
    """The configured space, with the data's number of classes unless the config sets it.

    Its input size must be `data.image_size`: the space's analytic costs (search limits, arch.json)
    are counted at its own size, training and export run at the data's, so a mismatch is refused.
    """
    return _resolve(cfg, num_classes)[0]


def configured_supernet(cfg: RunConfig, num_classes: int) -> tuple[Space, nn.Module]:
    """The configured space and a new supernet of it (`new_supernet`): freshly initialised, or, for a
    `from_timm` space, holding the timm model's weights, so that its largest arch is that model."""
    space, converted = _resolve(cfg, num_classes)
    net = new_supernet(cfg, space)
    if converted is not None:
        net.load_state_dict(converted.state_dict(), strict=True)
    return space, net


def _resolve(cfg: RunConfig, num_classes: int) -> tuple[Space, nn.Module | None]:
    """(space, the converted timm supernet of a `from_timm` space or None), checked against the data."""
    if not cfg.space:
        raise ConfigError("config key 'space' is empty; a supernet needs one, e.g. space: {preset: autoformer-tiny}")
    spec = dict(cfg.space)
    spec.setdefault("num_classes", num_classes)
    space, converted = timm_supernet(spec) if TIMM_KEY in spec else (get_space(spec), None)
    if getattr(space, "num_classes", num_classes) != num_classes:
        raise ConfigError(f"config key 'space.num_classes' = {space.num_classes} does not match the data, "
                          f"which has {num_classes} classes")
    key, size = _input_size(space)
    if size is not None and size != cfg.data.image_size:
        key = f"model_kwargs.{key}" if converted is not None else key
        raise ConfigError(f"config key 'space.{key}' = {size} differs from 'data.image_size' = "
                          f"{cfg.data.image_size}; costs are counted at the space's size and models run at the "
                          "data's, so set both to the same size")
    return space, converted


TIMM_KEY = "from_timm"
_TIMM_SPEC = (TIMM_KEY, "weights", "model_kwargs", "choices", "num_classes")


def timm_supernet(spec: dict[str, Any]) -> tuple[Space, nn.Module]:
    """The space and supernet of `space: {from_timm: NAME, weights: FILE, model_kwargs: {...}, choices: {...}}`:
    timm's model NAME built with `model_kwargs` (`num_classes` defaults to the spec's), the weights of FILE
    loaded into it, converted by `supernet_from_timm` with `choices` (its largest arch is the model)."""
    unknown = sorted(set(spec) - set(_TIMM_SPEC))
    if unknown:
        raise ConfigError(f"space keys {unknown} are unknown with space.{TIMM_KEY}; allowed: {list(_TIMM_SPEC)}")
    name, kwargs, choices = spec[TIMM_KEY], spec.get("model_kwargs") or {}, spec.get("choices") or {}
    for key, value in (("model_kwargs", kwargs), ("choices", choices)):
        if not isinstance(value, dict):
            raise ConfigError(f"config key 'space.{key}' = {value!r} must be a mapping")
    if not isinstance(name, str) or not timm.is_model(name):
        raise ConfigError(f"config key 'space.{TIMM_KEY}' = {name!r} is not a timm model name; allowed: a name "
                          "of timm.list_models(), e.g. vit_tiny_patch16_224 or swin_tiny_patch4_window7_224")
    kwargs = {"num_classes": spec["num_classes"], **kwargs}
    try:
        model = timm.create_model(name, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise ConfigError(f"config key 'space.model_kwargs' = {kwargs!r} does not fit timm model {name!r}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    weights = spec.get("weights")
    try:
        return supernet_from_timm(model, weights=str(weights) if weights else None, **choices)
    except CreamError as e:
        raise type(e)(f"space.{TIMM_KEY} = {name!r}: {e}") from None


def run_space(cfg: RunConfig, run: Path, num_classes: int) -> Space:
    """The space a run ended with: its space.json, or (runs written before it existed) its config's space."""
    path = Path(run) / SPACE_FILE
    if not path.is_file():
        return resolve_space(cfg, num_classes)
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CreamError(f"'{path}' is not valid JSON: {e}") from None
    space = get_space(spec)
    if getattr(space, "num_classes", num_classes) != num_classes:
        raise ConfigError(f"the space in '{path}' has {space.num_classes} classes, but the data has {num_classes}")
    return space


def _input_size(space: Space) -> tuple[str, int | None]:
    """The space config key of `space`'s input size and its value (None for a space without one)."""
    if hasattr(space, "img_size"):  # ViT spaces
        return "img_size", space.img_size
    return "input_size", getattr(space, "input_size", None) or getattr(getattr(space, "config", None),
                                                                        "input_size", None)


def arch_model_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Constructor arguments of a space's supernet and of its standalone models: `model.kwargs`, and
    `model.drop_path` as drop_path_rate."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.drop_path:
        kwargs.setdefault("drop_path_rate", cfg.model.drop_path)
    return kwargs


def new_supernet(cfg: RunConfig, space: Space) -> nn.Module:
    """The supernet of `space` of the kind `cfg.strategy` trains (single-path unless the strategy says
    otherwise, e.g. mixed for 'darts'), with `arch_model_kwargs(cfg)` for its constructor."""
    kwargs = arch_model_kwargs(cfg)
    try:
        return build_supernet(space, supernet_kind(cfg.strategy), **kwargs)
    except TypeError as e:
        raise ConfigError(f"config key 'model.kwargs' = {kwargs!r} does not fit the supernet of "
                          f"'{space.name}': {e}") from None


def train_supernet(cfg: RunConfig, run: RunDir, *, resume: bool = False) -> dict[str, Any]:
    """Train the supernet of `cfg.space` with `cfg.strategy`; write supernet.safetensors and a summary."""
    start = time.perf_counter()
    seed_everything(cfg.train.seed, cfg.train.deterministic, cfg.train.threads)
    splits = build_splits(cfg.data)
    space, net = configured_supernet(cfg, splits.num_classes)
    strategy = make_strategy(cfg.strategy, space, cfg.train.seed)
    engine = Engine(cfg, net, splits, run, strategy)
    if engine.dist.is_main:  # a resumed run records the --set keys that do not change results
        run.write_yaml("config.yaml", to_dict(with_space_classes(cfg, splits.num_classes)))
    if ckpt.continues(run, resume):
        engine.resume()
    fit = engine.fit()
    summary: dict[str, Any] = {"space": space.name, "strategy": cfg.strategy.name, "steps": fit["steps"]}
    held_out = splits.val if splits.val is not None else splits.test
    split_name = "val" if splits.val is not None else "test"
    if splits.val is not None and engine.last_eval is not None and engine.last_eval[0] == engine.step:
        results = engine.last_eval[1]  # the engine's end-of-training validation, on the same weights
    else:
        results = engine.evaluate_archs(held_out)
    for name, res in results.items():
        summary[f"{split_name}_top1_{name}"] = res["top1"]
    summary["wall_s"] = round(time.perf_counter() - start, 2)
    if engine.dist.is_main:
        save_weights(engine.model, run.file(SUPERNET_WEIGHTS))
        run.write_json(SPACE_FILE, (space if strategy.space is None else strategy.space).to_config())
        for name, obj in strategy.artifacts().items():
            run.write_json(name, obj)
        run.write_json("summary.json", summary)
        write_report(run, summary)
    barrier(engine.dist)  # the files exist for every rank once training returns
    return summary


def inherited_model(cfg: RunConfig, supernet_run: Path, arch: Arch, num_classes: int,
                    train: Dataset | None = None) -> nn.Module:
    """The network of `arch` with the weights of the supernet in `supernet_run`, exactly as search scores it:
    selected by `select_inherited` (BN recalibrated on `search.bn_recal_images` images of `train`, or of
    `cfg.data`'s train split), on the configured device; returned on the CPU in the default memory format."""
    device = pick_device(cfg.train.device)
    net = place_supernet(load_supernet(cfg, supernet_run, num_classes), cfg, device)
    recal = None
    if cfg.search.bn_recal_images and bn_layers(net):
        recal = recal_loader(train if train is not None else build_splits(cfg.data).train, cfg, device)
    model = select_inherited(net, arch, cfg, recal).extract(arch)
    return model.to("cpu", memory_format=torch.contiguous_format)


def write_timm_supernet(cfg: RunConfig, run: RunDir) -> None:
    """Write the supernet of `cfg`'s `from_timm` space as converted, untrained (its largest arch is the timm
    model), into `run` the way a supernet run holds it (supernet.safetensors, space.json): `cream search` and
    `cream export` then read `run` like a trained supernet run."""
    if not run.write:  # torchrun: rank 0 writes, the others read the files after a barrier
        return
    seed_everything(cfg.train.seed, threads=cfg.train.threads)  # a timm model without weights is random
    space, net = configured_supernet(cfg, build_splits(cfg.data).num_classes)
    run.write_json(SPACE_FILE, space.to_config())
    save_weights(net, run.file(SUPERNET_WEIGHTS))  # last: its presence means the run holds a supernet


def load_supernet(cfg: RunConfig, supernet_run: Path, num_classes: int) -> nn.Module:
    """The supernet of the space `supernet_run` ended with (`run_space`), with the weights trained there."""
    weights = Path(supernet_run) / SUPERNET_WEIGHTS
    if not weights.is_file():
        raise CreamError(f"'{supernet_run}' holds no {SUPERNET_WEIGHTS}; is it a finished `cream supernet` run?")
    net = new_supernet(cfg, run_space(cfg, supernet_run, num_classes))
    load_weights(net, weights)
    return net
