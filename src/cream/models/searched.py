"""The network of any arch of any space, without a supernet: built fresh, or read from an exported file.

    model = build_model(space, arch)                      # what a supernet's `extract(arch)` returns
    model = load_exported("winner.safetensors")           # a file written by `cream export`
    timm.create_model("cream_searched", space={"preset": "autoformer-tiny"}, arch=arch)
    timm.create_model("cream_searched", file="winner.safetensors")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from timm.models import register_model
from torch import nn

from cream import registry
from cream.errors import ConfigError, CreamError
from cream.models import autoformer, darts, ensemble, mobilenet, nb201, swin, timm_vit  # noqa: F401  (each registers its family's builder)
from cream.spaces import get_space
from cream.spaces.base import Arch, Space
from cream.weights import load_weights


def build_model(space: Space, arch: Arch, **overrides: Any) -> nn.Module:
    """The standalone network of `arch` (validated) in `space`, freshly initialised.

    `overrides` go to the family's constructor (e.g. `num_classes`, `drop_rate`).
    """
    builder = registry.MODEL_BUILDERS.get(space.family)
    if builder is None:
        raise ConfigError(f"no model builder is registered for space family '{space.family}'")
    return builder(space, space.validate(arch), **overrides)


def read_exported_meta(path: str | Path) -> dict[str, str]:
    """The metadata `cream export` writes into a safetensors file (arch, space, num_classes, image_size)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CreamError(f"exported model '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any decoding failure means an unreadable file
        raise CreamError(f"exported model '{path}' cannot be read: {str(e).splitlines()[0]}") from None
    if "arch" not in meta or "space" not in meta:
        raise CreamError(f"'{path}' has no arch/space metadata; was it written by `cream export`?")
    return meta


def load_exported(path: str | Path, **overrides: Any) -> nn.Module:
    """The standalone model of a file written by `cream export` (its arch and space are in the metadata)."""
    meta = read_exported_meta(path)
    space = get_space({**json.loads(meta["space"]), "num_classes": int(meta["num_classes"])})
    model = build_model(space, json.loads(meta["arch"]), **overrides)
    load_weights(model, Path(path))
    return model


@register_model
def cream_searched(pretrained: bool = False, space: Any = None, arch: Arch | None = None,
                   file: str | None = None, **kwargs: Any) -> nn.Module:
    """timm's door to searched archs: `space` (preset name, mapping or YAML) plus `arch`, or an exported `file`."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory options
        kwargs.pop(key, None)
    if file is not None:
        return load_exported(file, **kwargs)
    if pretrained:
        raise ConfigError("cream_searched has no pretrained weights of its own; pass file=EXPORTED.safetensors")
    if space is None or arch is None:
        raise ConfigError("cream_searched needs space=... and arch=..., or file=EXPORTED.safetensors")
    return build_model(get_space(space), arch, **kwargs)
