"""Standalone models, registered with timm on import."""
from cream.models import cream_mbv3  # noqa: F401  (registers cream_014 ... cream_604 with timm)
