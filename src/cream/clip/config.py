"""The `clip:` section of a `cream clip distill` config (the rest is a normal `RunConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cream.config import RunConfig, option

INHERIT_MODES = ["none", "manual", "auto"]


@dataclass
class ClipModelConfig:
    """One CLIP model: a registered open_clip name or a config in open_clip's JSON format, and its weights."""

    name: str = option("", doc="an open_clip model name, e.g. TinyCLIP-ViT-8M-16-Text-3M ('' = use cfg)")
    cfg: dict = option({}, doc="a model config in open_clip's JSON format (embed_dim, vision_cfg, text_cfg)")
    weights: str = option("", doc="a weights file (.safetensors or torch) or a finished `cream clip distill` run "
                                  "folder ('' = random init; open_clip's pretrained tags are never downloaded)")


@dataclass
class InheritConfig:
    """Where the student's first weights come from."""

    mode: str = option("none", choices=INHERIT_MODES,
                       doc="none: random init; manual: cut from the teacher (spec §5.2); auto: L0 masks (§5.3)")
    kwargs: dict = option({}, doc="mode parameters (auto: target sparsity, prune step, ...)")


@dataclass
class ClipLossConfig:
    """Affinity mimicking: weight · (alpha · (L_I2T + L_T2I) / 2 + (1 - alpha) · hard CLIP loss)."""

    logit_scale: float = option(50.0, lo=0.0, doc="fixed scale of both models (0 = each model's own, the "
                                                  "student's learned and clamped to [0, ln 100])")
    weight: float = option(1.0, lo=0.0)
    alpha: float = option(1.0, lo=0.0, hi=1.0, doc="1 = affinity mimicking only (the paper's default)")


@dataclass
class ClipDataConfig:
    """Image-text pairs: a captioned folder/tar, or class-name captions of the labelled `data` set."""

    pairs: str = option("", doc="folder or .tar of images with a captions file ('' = caption data.name's "
                                "classes with `template`)")
    captions: str = option("", doc="CSV (columns image, caption) or JSONL ({image, caption}); '' = captions.csv "
                                   "or captions.jsonl inside `pairs`")
    template: str = option("a photo of a {}.", doc="caption of a labelled image ({} = its class name); also the "
                                                  "zero-shot prompt")


@dataclass
class ClipConfig:
    student: ClipModelConfig = field(default_factory=ClipModelConfig)
    teacher: ClipModelConfig = field(default_factory=ClipModelConfig)
    inherit: InheritConfig = field(default_factory=InheritConfig)
    loss: ClipLossConfig = field(default_factory=ClipLossConfig)
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    stages: list[dict] = option([], doc="multi-stage manual compression: student models ({name} or {cfg}) "
                                        "trained one after the other, each inheriting from the one before "
                                        "(the first from the teacher); [] = the one `student`")


@dataclass
class ClipRunConfig(RunConfig):
    """A `cream clip distill` run: the usual data/optim/train sections plus `clip`."""

    clip: ClipConfig = field(default_factory=ClipConfig)
