"""Supernets, one module per space family; importing this package registers them all."""

from cream.supernets import nb201, vit  # noqa: F401
