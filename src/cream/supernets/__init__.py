"""Supernets, one module per space family; importing this package registers them all."""
from cream.supernets import mobilenet  # noqa: F401
