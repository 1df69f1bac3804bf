"""Standalone models, registered with timm on import."""
