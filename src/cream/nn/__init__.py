"""Shared network blocks: static ViT blocks and their elastic (weight-entangled) counterparts."""
