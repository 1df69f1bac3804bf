"""CLIP models through open_clip, and the published TinyCLIP manual configs registered with it.

The configs (`configs/*.json`, open_clip's own format) are registered the first time open_clip is
imported after `cream` (or at once, if it already was): `import cream` itself stays free of open_clip,
so it costs nothing to users who never touch CLIP. `ensure_registered()` does it by hand.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

from cream.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
#: the published manual TinyCLIP models (spec §5.4), by their open_clip names.
TINYCLIP_MODELS = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def ensure_registered() -> None:
    """Add the TinyCLIP configs to open_clip's table (idempotent)."""
    from open_clip.factory import _MODEL_CONFIGS, add_model_config

    if not set(TINYCLIP_MODELS) <= _MODEL_CONFIGS.keys():
        add_model_config(CONFIG_DIR)


class _RegisteringLoader(importlib.abc.Loader):
    """open_clip's own loader, registering our configs once the package has been executed."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        ensure_registered()


class _OnOpenClipImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "open_clip":
            return None
        sys.meta_path.remove(self)  # once: find the real spec with the other finders
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install_registration() -> None:
    """Register the configs now if open_clip is loaded, else when it first is (called by `import cream`)."""
    if "open_clip" in sys.modules:
        ensure_registered()
    elif not any(isinstance(f, _OnOpenClipImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _OnOpenClipImport())


def open_clip_module() -> Any:
    """open_clip, with our configs registered; a one-line error where it is not installed."""
    try:
        import open_clip
    except ImportError:
        raise ConfigError("CLIP models need open-clip-torch; install it with `pip install cream[clip]`") from None
    ensure_registered()
    return open_clip


def model_config(name: str, cfg: dict, key: str) -> dict:
    """The open_clip model config of a registered `name`, or `cfg` itself (a config in open_clip's format)."""
    open_clip = open_clip_module()
    if bool(name) == bool(cfg):
        raise ConfigError(f"config key '{key}' needs exactly one of 'name' (an open_clip model, e.g. "
                          f"{TINYCLIP_MODELS[0]}) and 'cfg' (a model config in open_clip's JSON format)")
    if name:
        found = open_clip.get_model_config(name)
        if found is None:
            raise ConfigError(f"config key '{key}.name' = {name!r} is not an open_clip model; choose one of "
                              f"open_clip.list_models(), e.g. {', '.join(TINYCLIP_MODELS)}")
        return found
    return cfg


def build_clip(cfg: dict, key: str = "clip.student") -> nn.Module:
    """An open_clip CLIP model built from its config, randomly initialised (no weights are downloaded)."""
    open_clip = open_clip_module()
    try:
        return open_clip.CLIP(**cfg)
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        raise ConfigError(f"config key '{key}.cfg' does not build an open_clip CLIP: {str(e).splitlines()[0]}"
                          ) from None


def context_length(cfg: dict) -> int:
    """Tokens per caption of a model config (open_clip's default 77 where the config does not say)."""
    return int(cfg.get("text_cfg", {}).get("context_length", 77))


def tokenizer(cfg: dict) -> Any:
    """open_clip's CLIP BPE tokenizer (its vocabulary ships in the wheel), cutting captions to the model's length."""
    return _tokenizer(context_length(cfg))


@functools.lru_cache(maxsize=4)
def _tokenizer(length: int) -> Any:
    """Built once per length: reading the BPE vocabulary takes a second or more."""
    open_clip_module()
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=length)
