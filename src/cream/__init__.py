"""cream: one-shot neural architecture search and efficient vision transformers."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def supernet(space: Any, kind: str = "single_path", **overrides: Any) -> Any:
    """Build the supernet of a named space, a space config (mapping or YAML path) or a space.

    `net.space.sample(rng)` draws an arch, `net.set_arch(arch)` selects it for the next
    forwards and `net.extract(arch)` returns the standalone model.
    """
    from cream.spaces import get_space
    from cream.supernets import build_supernet

    return build_supernet(get_space(space, **overrides), kind)


def profile(model_or_arch: Any, input_size: tuple[int, int, int] | None = None, space: Any = None) -> dict:
    """`{"params": int, "macs": int}` of a model, a timm model name, or an arch of `space`."""
    from cream.profiling import profile as _profile

    return _profile(model_or_arch, input_size=input_size, space=space)


def _register_models() -> None:
    """Import the model modules so that `timm.create_model("autoformer_tiny")` etc. work."""
    import cream.models  # noqa: F401


def _register_clip_configs() -> None:
    """The TinyCLIP configs join open_clip's table when open_clip is first imported (see `cream.clip.models`)."""
    from cream.clip.models import install_registration

    install_registration()


_register_models()
_register_clip_configs()
