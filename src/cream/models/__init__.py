"""Standalone models, registered with timm on import; `build_model(space, arch)` for any searched arch."""

from cream.models import (  # noqa: F401  (timm registrations)
    autoformer,
    cream_mbv3,
    darts,
    darts_stages,
    efficientvit,
    ensemble,
    irpe_deit,
    minivit,
    nb201,
    nse,
    searched,
    swin,
    timm_vit,
)
from cream.models.searched import build_model, load_exported

__all__ = ["build_model", "load_exported"]
