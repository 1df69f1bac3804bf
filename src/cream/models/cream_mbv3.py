"""The six published Cream child networks (spec §6), registered with timm.

They are registered by their *effective* encodings: the original builder ignored the op of a
single-layer stage and used that stage's default block instead (spec §6.2), and the released
checkpoints and the published FLOPs (14M ... 604M) are those of the networks it actually built.
``timm.create_model("cream_287", checkpoint_path=...)`` loads an original checkpoint (same
state-dict layout).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.mobilenetv3 import MobileNetV3

from cream.cost import register_reported_cost
from cream.models.mobilenet import child_kwargs, pretrained_cfg
from cream.spaces.base import Arch
from cream.spaces.mobilenet import MobileNetSpace, arch_from_cream_encoding, cream_space

#: name -> (effective encoding, input size, published MFLOPs, README top-1)
PUBLISHED: dict[str, tuple[list[list[int]], int, int, float]] = {
    "cream_014": ([[0], [0], [3, 3], [3, 3], [1], [3], [0]], 64, 14, 53.8),
    "cream_043": ([[0], [0], [3, 1], [3, 1], [3, 3, 3], [3, 3], [0]], 96, 43, 66.3),
    "cream_114": ([[0], [0], [3, 3], [3, 3], [3, 3, 3], [3, 3], [0]], 160, 114, 72.8),
    "cream_287": ([[0], [0], [3, 3], [3, 1, 3], [3, 3, 3, 3], [3, 3, 3], [0]], 224, 287, 77.6),
    "cream_481": ([[0], [3, 4, 3, 1], [3, 2, 3, 0], [3, 3, 3, 1, 1], [3, 3, 3, 3], [3, 3, 3, 3], [0]],
                  224, 481, 79.2),
    "cream_604": ([[0], [3, 3, 2, 3, 3], [3, 2, 3, 2, 3], [3, 2, 3, 2, 3], [3, 3, 2, 2, 3, 3],
                   [3, 3, 2, 3, 3, 3], [0]], 224, 604, 80.0),
}


def published(name: str, num_classes: int = 1000) -> tuple[MobileNetSpace, Arch]:
    """The Cream space sized for a published net (its stage depths and input size) and its arch."""
    encoding, size, _, _ = PUBLISHED[name]
    space = cream_space(layers=[len(s) for s in encoding[1:6]], input_size=size, num_classes=num_classes)
    return space, arch_from_cream_encoding(encoding)


def _create(name: str, pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    space, arch = published(name, kwargs.get("num_classes", 1000))
    kwargs.setdefault("drop_rate", 0.2)  # the retrain recipe's dropout (spec §7)
    return build_model_with_cfg(
        MobileNetV3, name, pretrained, feature_cfg=dict(flatten_sequential=True),
        **child_kwargs(space, arch, **kwargs),
    )


def _ptflops(name: str) -> dict[str, int]:
    space, arch = published(name)
    return {"macs_ptflops": space.cost(arch, convention="ptflops")["macs"]}


for _name in PUBLISHED:
    register_reported_cost(_name, partial(_ptflops, _name))

default_cfgs = generate_default_cfgs({
    name: pretrained_cfg(published(name)[0].config, paper_ids="arXiv:2010.15821")
    for name in PUBLISHED
})


@register_model
def cream_014(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """Cream 14M at 64x64 (README top-1 53.8)."""
    return _create("cream_014", pretrained, **kwargs)


@register_model
def cream_043(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """Cream 43M at 96x96 (README top-1 66.3)."""
    return _create("cream_043", pretrained, **kwargs)


@register_model
def cream_114(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """Cream 114M at 160x160 (README top-1 72.8)."""
    return _create("cream_114", pretrained, **kwargs)


@register_model
def cream_287(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """Cream 287M at 224x224 (README top-1 77.6)."""
    return _create("cream_287", pretrained, **kwargs)


@register_model
def cream_481(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """Cream 481M at 224x224 (README top-1 79.2)."""
    return _create("cream_481", pretrained, **kwargs)


@register_model
def cream_604(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """Cream 604M at 224x224 (README top-1 80.0)."""
    return _create("cream_604", pretrained, **kwargs)
