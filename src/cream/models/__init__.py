"""Standalone models, registered with timm on import."""
from cream.models import autoformer, nb201  # noqa: F401
