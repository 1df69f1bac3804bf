"""Supernets, one module per space family; importing this package registers them all."""

from cream.supernets import mobilenet, nb201, vit  # noqa: F401
