"""Typed run configs: YAML files and `--set` overrides, loaded into dataclasses.

Every field has a type and a default; `field(metadata=...)` adds the allowed range or choices.
Loading checks unknown keys, types and ranges, and raises a one-line `ConfigError` naming the
dotted key, the value given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cream.errors import ConfigError

T = TypeVar("T")


def option(default: Any, *, choices: list | None = None, lo: float | None = None, hi: float | None = None,
        doc: str = "") -> Any:
    """A config field with its default, allowed choices or numeric range, and a short doc."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Where images come from and how they are split, augmented and batched."""

    name: str = option("digits", choices=["digits", "cifar10", "cifar100", "imagefolder"],
                    doc="digits is embedded (scikit-learn); the others read `root`")
    root: str = option("", doc="dataset folder, or a .tar/.tar.gz of an ImageFolder tree")
    image_size: int = option(16, lo=8, hi=1024)
    val_fraction: float = option(0.1, lo=0.0, hi=0.9, doc="held out of train for validation and search")
    test_fraction: float = option(0.2, lo=0.05, hi=0.9, doc="digits only: part kept for the test split")
    split_seed: int = option(0, lo=0)
    train_per_class: int = option(0, lo=0, doc="keep at most this many train images per class (0 = all)")
    test_per_class: int = option(0, lo=0, doc="keep at most this many test images per class (0 = all)")
    batch_size: int = option(64, lo=1, doc="per process")
    eval_batch_size: int = option(256, lo=1)
    workers: int = option(0, lo=0)
    mean: list[float] = option([0.5, 0.5, 0.5])
    std: list[float] = option([0.5, 0.5, 0.5])
    interpolation: str = option("bilinear", choices=["nearest", "bilinear", "bicubic"])
    crop_pct: float = option(1.0, lo=0.1, hi=1.0, doc="eval: resize to size/crop_pct, then center crop")
    train_crop: str = option("none", choices=["none", "pad", "rrc"],
                          doc="none: resize only; pad: pad-and-random-crop; rrc: random resized crop")
    pad: int = option(4, lo=0)
    rrc_scale: list[float] = option([0.08, 1.0])
    hflip: float = option(0.0, lo=0.0, hi=1.0)
    auto_augment: str = option("", doc="timm policy string, e.g. rand-m9-mstd0.5-inc1 ('' = off)")
    re_prob: float = option(0.0, lo=0.0, hi=1.0, doc="random erasing probability")
    color_jitter: float = option(0.0, lo=0.0, doc="brightness/contrast/saturation jitter (off when auto_augment is "
                                                  "set, as in timm)")
    cutout: int = option(0, lo=0, doc="train: zero one square of this side (pixels) at a uniformly drawn centre, "
                                      "clipped at the borders, after normalisation (DARTS/CDARTS CIFAR: 16; 0 = off)")
    mixup: float = option(0.0, lo=0.0)
    cutmix: float = option(0.0, lo=0.0)
    mixup_prob: float = option(1.0, lo=0.0, hi=1.0)
    mixup_switch_prob: float = option(0.5, lo=0.0, hi=1.0)
    cache: bool = option(True, doc="decode small images once into a uint8 array cache")
    cache_dir: str = option("", doc="default: $CREAM_CACHE_DIR or ~/.cache/cream")
    on_corrupt: str = option("error", choices=["error", "skip"], doc="corrupt image: stop, or warn and skip")

    def __post_init__(self) -> None:
        _check_auto_augment(self.auto_augment, self.train_crop)


@dataclass
class ModelConfig:
    """The standalone model: any timm model name (ours are registered with timm too)."""

    name: str = option("resnet18")
    drop_path: float = option(0.0, lo=0.0, hi=1.0)
    drop: float = option(0.0, lo=0.0, hi=1.0)
    kwargs: dict = option({}, doc="extra keyword arguments for timm.create_model, or for the supernet's constructor")
    aux_weight: float = option(0.0, lo=0.0, doc="weight of an auxiliary head's loss, for models that keep its logits "
                                                "in `aux_logits` (darts_cifar with auxiliary: true; DARTS uses 0.4)")
    drop_path_schedule: str = option("constant", choices=["constant", "linear"],
                                     doc="linear: the drop-path rate of epoch e is drop_path x e / train.epochs (DARTS "
                                         "and CDARTS retrain), for models with `set_drop_path` (darts_cifar)")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (timm's factories)."""

    opt: str = option("adamw", doc="any timm optimizer name")
    lr: float = option(1e-3, lo=0.0)
    eps: float = option(0.0, lo=0.0, doc="optimizer epsilon (0 = the optimizer's own default)")
    weight_decay: float = option(0.05, lo=0.0)
    momentum: float = option(0.9, lo=0.0, hi=1.0)
    sched: str = option("cosine", choices=["cosine", "step", "multistep", "poly", "tanh", "none"],
                        doc="stepped every update (so not timm's plateau, which steps per epoch on a metric)")
    warmup_epochs: float = option(0.0, lo=0.0)
    warmup_lr: float = option(1e-6, lo=0.0)
    min_lr: float = option(1e-5, lo=0.0)
    decay_epochs: float = option(30.0, lo=0.0, doc="step schedule period")
    decay_rate: float = option(0.1, lo=0.0)
    clip_grad: float = option(0.0, lo=0.0, doc="0 = off")
    smoothing: float = option(0.0, lo=0.0, hi=1.0, doc="label smoothing")

    def __post_init__(self) -> None:
        _check_optimizer(self.opt)


@dataclass
class TrainConfig:
    """The training loop: precision, checkpoints, logging."""

    epochs: int = option(10, lo=1, doc="the schedule's length (train.max_steps may stop earlier)")
    seed: int = option(0, lo=0)
    device: str = option("auto", choices=["auto", "cpu", "cuda"])
    amp: str = option("none", choices=["none", "bf16", "fp16"])
    channels_last: bool = option(False)
    compile: bool = option(False)
    ema_decay: float = option(0.0, lo=0.0, hi=1.0, doc="0 = no EMA")
    ckpt_every_steps: int = option(0, lo=0, doc="0 = only at the end of each epoch")
    ckpt_every_epochs: int = option(1, lo=1)
    keep_checkpoints: int = option(2, lo=1)
    deterministic: bool = option(False, doc="deterministic algorithms (bit-identical resume on CPU)")
    threads: int = option(0, lo=0, doc="torch intra-op threads (0 = torch default)")
    on_nan: str = option("stop", choices=["stop", "skip"])
    log_every: int = option(20, lo=1, doc="steps between metric lines")
    eval_every_epochs: int = option(1, lo=1)
    tensorboard: bool = option(False)
    max_steps: int = option(0, lo=0, doc="stop after this many steps (0 = run all epochs)")

    def __post_init__(self) -> None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("config key 'train.device' = 'cuda' but this machine has no usable CUDA GPU; "
                              "allowed here: auto, cpu")


@dataclass
class StrategyConfig:
    """How a supernet is trained (see docs/strategies.md for each strategy's parameters)."""

    name: str = option("uniform", choices=["uniform", "cream", "shrink", "darts", "gdas", "setn", "cdarts", "nse",
                                           "abs", "ensemble", "ensemble_shrink"])
    kwargs: dict = option({}, doc="strategy parameters")


@dataclass
class TeacherConfig:
    """Where a distilling student's teacher comes from (see docs/distillation.md)."""

    kind: str = option("", choices=["", "timm", "supernet", "store"],
                       doc="'' = no distillation; timm: a frozen timm model; supernet: one path of a trained "
                           "supernet; store: the older spelling of distill.store (path: the store folder)")
    name: str = option("", doc="timm: the model name (ours included)")
    weights: str = option("", doc="timm: weights file (.safetensors or torch); '' keeps the initialisation")
    kwargs: dict = option({}, doc="timm: extra timm.create_model arguments")
    path: str = option("", doc="supernet: a finished `cream supernet` run folder; store: the store folder")
    arch: dict = option({}, doc="supernet: the path (an arch of that run's space) to distil from")


@dataclass
class DistillConfig:
    """Distillation of a standalone model: (1 - alpha) * label loss + alpha * loss(student, teacher)."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: str = option("kl", doc="a name in cream.teachers.losses.DISTILL_LOSSES: kl, soft, deit_soft, hard")
    alpha: float = option(0.5, lo=0.0, hi=1.0, doc="weight of the distillation term")
    temperature: float = option(1.0, lo=0.01, doc="softens both distributions (kl, soft); the loss is scaled by τ²")
    top_k: int = option(10, lo=1, doc="logit store: probabilities kept per sample (TinyViT: 100 for IN-22k)")
    store: str = option("", doc="logit store folder: `cream distill save-logits` writes it from distill.teacher; "
                                "`cream retrain` with it set replays it and never runs the teacher")
    attn_weight: float = option(0.0, lo=0.0, doc="weight of MiniViT's attention-relation loss (Q/K/V relations "
                                                 "at student_layers vs teacher_layers; 0 = off)")
    hidden_weight: float = option(0.0, lo=0.0, doc="weight of MiniViT's hidden-relation loss (0 = off)")
    relation_heads: int = option(1, lo=1, doc="attention-relation loss: channel groups (the original's --ar)")
    student_layers: list[int] = option([], doc="relation losses: student layers (block applications, from 0)")
    teacher_layers: list[int] = option([], doc="relation losses: the teacher layers paired with student_layers")

    def __post_init__(self) -> None:
        if not (self.attn_weight or self.hidden_weight):
            return
        s, t = self.student_layers, self.teacher_layers
        if not s or len(s) != len(t):
            raise ConfigError(f"config keys 'distill.student_layers' = {s} and 'distill.teacher_layers' = {t} must "
                              "pair layers one to one (same non-zero length) when a relation loss weight is set")


@dataclass
class SearchConfig:
    """Search over a trained supernet's space, scoring archs with inherited weights."""

    method: str = option("evolution", choices=["evolution", "random", "regularized", "board", "nsga2"])
    budget: int = option(100, lo=1, doc="number of distinct archs evaluated")
    seed: int = option(0, lo=0)
    limits: dict = option({}, doc="{cost: [min, max]} on costs the space reports, in their own unit (params, "
                                  "macs: absolute counts, e.g. params: [5.0e+6, 6.0e+6]); null or 0 = open end. "
                                  "Costs: params, macs (plain: conv/linear multiply-adds), and per space e.g. "
                                  "macs_ptflops, macs_ptflops_search (MobileNet), and those of cost_files")
    cost_files: dict = option({}, doc="{cost: file}: a latency table (`cream latency build-lut`) or predictor "
                                      "(`cream latency fit`) offered as that cost, e.g. {latency_ms: lut.json}; "
                                      "the search reports its prediction and a measurement of the chosen arch")
    params_min: float = option(0.0, lo=0.0, doc="older form of limits.params, in millions (0 = no lower limit)")
    params_max: float = option(0.0, lo=0.0, doc="older form of limits.params, in millions (0 = no upper limit)")
    macs_min: float = option(0.0, lo=0.0, doc="older form of limits.macs, in millions (0 = no lower limit)")
    macs_max: float = option(0.0, lo=0.0, doc="older form of limits.macs, in millions (0 = no upper limit)")
    kwargs: dict = option({}, doc="search-strategy parameters (population, parents, mutation, ...)")
    eval_images: int = option(0, lo=0, doc="held-out images scored per arch (0 = the whole validation split)")
    bn_recal_images: int = option(0, lo=0, doc="recalibrate BatchNorm on this many train images per arch (0 = off)")
    test_top_k: int = option(3, lo=0, doc="after search, report test accuracy of the k best (never used to select)")

    def __post_init__(self) -> None:
        for key in ("budget", "seed"):
            if key in self.kwargs:
                raise ConfigError(f"config key 'search.kwargs.{key}' is not a search-method parameter; "
                                  f"set the top-level 'search.{key}' instead")
        self.limits = {name: _check_limit(f"search.limits.{name}", v) for name, v in self.limits.items()}
        for name, path in self.cost_files.items():
            if not isinstance(path, str) or not path:
                raise ConfigError(f"config key 'search.cost_files.{name}' = {path!r} must be the path of a latency "
                                  "table or predictor file")
        if self.limits and (self.params_min or self.params_max or self.macs_min or self.macs_max):
            raise ConfigError("config keys 'search.params_min/params_max/macs_min/macs_max' (millions) and "
                              "'search.limits' set the same limits twice; use search.limits only")


@dataclass
class SpaceSearchConfig:
    """`cream space-search`: evolve the space before searching it (AutoFormerV2/S3, spec autoformer_v2_s3.md §4).

    The original's formulas and constants are unreleased; every default here is our own choice (docs/space_search.md).
    """

    steps: int = option(2, lo=1, doc="space-evolution steps (each trains a supernet, measures, moves the ranges)")
    dimensions: list[str] = option([], doc="dimensions that move ([] = every dimension of the space)")
    et_weight: float = option(0.5, lo=0.0, hi=1.0, doc="E-T error = et_weight * E + (1 - et_weight) * T")
    random_archs: int = option(20, lo=1, doc="E: mean error of this many random archs (per space and per choice)")
    evolution_budget: int = option(20, lo=1, doc="T: archs one short evolution evaluates (per space and per choice)")
    evolution: dict = option({"population": 10, "parents": 4, "mutations": 5, "crossovers": 5},
                             doc="T: parameters of that evolution (as search.kwargs of method evolution)")
    top_k: int = option(3, lo=1, doc="T: mean error of the k best archs the evolution found")
    constrained: bool = option(True, doc="draw and evolve only archs inside search.limits; a choice without any "
                                         "such arch scores error 1")
    trend_over: str = option("index", choices=["index", "value"],
                             doc="x of each dimension's linear trend: the choice's position, or its value")
    min_slope: float = option(0.0, lo=0.0, doc="keep a dimension whose |slope| (error per x unit) is at most this")
    update: str = option("shift", choices=["shift", "grow"],
                         doc="shift: add choices on the better side and drop as many on the other; grow: add only")
    step_size: int = option(1, lo=1, doc="choices added per dimension and step")
    bounds: dict = option({}, doc="{dimension: [min, max]}: a moved range stays inside (null = open end)")

    def __post_init__(self) -> None:
        for key in ("budget", "seed"):
            if key in self.evolution:
                raise ConfigError(f"config key 'space_search.evolution.{key}' is not allowed; the budget is "
                                  "'space_search.evolution_budget' and the seed 'search.seed'")
        self.bounds = {d: _check_limit(f"space_search.bounds.{d}", v) for d, v in self.bounds.items()}


@dataclass
class RunConfig:
    """A whole run: data, model, optimizer, loop; and for NAS the space, strategy, search and arch."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    space: dict = option({}, doc="search space: {preset: NAME, ...overrides} or {family: NAME, ...}")
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    space_search: SpaceSearchConfig = field(default_factory=SpaceSearchConfig)
    arch: dict = option({}, doc="the architecture a retrain builds from `space` (instead of model.name)")
    init: str = option("", doc="retrain: start from a supernet run's inherited weights instead of from scratch")
    retrain: dict = option({}, doc="cream run: overrides for its retrain stage, e.g. {train: {epochs: 30}}")


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> T:
    """Build `cls` from defaults, then `base`, then the YAML file at `path`, then `KEY=VALUE` overrides."""
    data: dict = _deep_merge({}, base or {})
    if path is not None:
        data = _deep_merge(data, read_yaml(path))
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    return from_dict(cls, data)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file, with one-line errors for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file '{p}' is not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping of keys, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=1e-3` → ("a.b", value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}' must look like KEY=VALUE (e.g. optim.lr=0.001)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Check `data` against dataclass `cls` (keys, types, ranges) and build it."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"'{prefix}{key}'"
            raise ConfigError(f"config key {where} is unknown; allowed keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        dotted = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, data[name], dotted + ".")
        else:
            kwargs[name] = _check_value(dotted, data[name], tp, f.metadata)
    return cls(**kwargs)


def with_overrides(cfg: T, overrides: dict, **fields: Any) -> T:
    """A copy of config `cfg` with a nested mapping of overrides (checked like a file) and top-level fields."""
    return from_dict(type(cfg), _deep_merge(_deep_merge(to_dict(cfg), overrides), fields))


def with_space_classes(cfg: RunConfig, num_classes: int) -> RunConfig:
    """`cfg` with `space.num_classes` filled from the data, so a saved config.yaml needs no data to rebuild models."""
    if not cfg.space or "num_classes" in cfg.space:
        return cfg
    return with_overrides(cfg, {"space": {"num_classes": num_classes}})


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass (for config.yaml)."""
    return dataclasses.asdict(cfg)


def _check_limit(key: str, value: Any) -> list[float | None]:
    """A `[min, max]` cost limit: two non-negative numbers or nulls (open ends), min <= max."""
    allowed = "allowed: [min, max] with numbers >= 0, null or 0 for an open end, min <= max"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"config key '{key}' = {value!r} is not a limit; {allowed}")
    ends = [None if v is None else _coerce(key, v, float) for v in value]
    if any(v is not None and not v >= 0 for v in ends) or (ends[0] and ends[1] and ends[0] > ends[1]):
        raise ConfigError(f"config key '{key}' = {value!r} is not a limit; {allowed}")
    return ends


def _check_optimizer(name: str) -> None:
    """`optim.opt` must name one of timm's optimizers (optionally as `lookahead_<name>`, as timm allows)."""
    from timm.optim import list_optimizers

    known = list_optimizers()
    if name.lower().removeprefix("lookahead_") not in known:
        raise ConfigError(f"config key 'optim.opt' = {name!r} is not a timm optimizer; choose one of "
                          f"{', '.join(known)} (optionally prefixed lookahead_)")


def _check_auto_augment(policy: str, train_crop: str) -> None:
    """`data.auto_augment` must parse as the timm policy the train transform builds from it.

    With train_crop=rrc, timm's create_transform takes RandAugment (rand-...), AugMix (augmix-...) or an
    AutoAugment policy name (original, v0, ...); the other crops take RandAugment only.
    """
    if not policy:
        return
    from timm.data import auto_augment as aa

    if policy.startswith("rand"):
        make = aa.rand_augment_transform
    elif train_crop == "rrc":
        make = aa.augment_and_mix_transform if policy.startswith("augmix") else aa.auto_augment_transform
    else:
        raise ConfigError(f"config key 'data.auto_augment' = {policy!r} is not allowed with data.train_crop="
                          f"{train_crop!r}; allowed: a RandAugment policy such as rand-m9-mstd0.5-inc1, or ''")
    try:
        make(policy, {"translate_const": 10, "img_mean": (128, 128, 128)})
    except (AssertionError, ValueError, KeyError, IndexError):
        raise ConfigError(f"config key 'data.auto_augment' = {policy!r} is not a timm augmentation policy; "
                          "allowed: rand-m<magnitude>[-n<ops>][-mstd<std>][-inc1] (e.g. rand-m9-mstd0.5-inc1), "
                          "and with train_crop=rrc also augmix-m<m> or an AutoAugment name (original, v0, ...)"
                          ) from None


def _check_value(key: str, value: Any, tp: Any, meta: Any) -> Any:
    value = _coerce(key, value, tp)
    choices, lo, hi = meta.get("choices"), meta.get("lo"), meta.get("hi")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{key}' = {value!r} is not allowed; choose one of {choices}")
    if lo is not None and value < lo or hi is not None and value > hi:
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(f"config key '{key}' = {value!r} is out of range; allowed: [{lo_s}, {hi_s}]")
    return value


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' = {value!r} has the wrong type; expected a list")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' = {value!r} has the wrong type; expected a mapping")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' = {value!r} has the wrong type; expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' = {value!r} has the wrong type; expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' = {value!r} has the wrong type; expected a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' = {value!r} has the wrong type; expected a string")
    return value


def _set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
