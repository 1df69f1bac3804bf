"""Standalone models, registered with timm on import."""
from cream.models import nb201 as _nb201  # noqa: F401
