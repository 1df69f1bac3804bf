"""Standalone models, registered with timm on import."""
from cream.models import autoformer  # noqa: F401
