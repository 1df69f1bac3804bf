"""Standalone models, registered with timm on import."""

from cream.models import autoformer, cream_mbv3, nb201  # noqa: F401  (autoformer_*, cream_014 ... cream_604, nb201)
