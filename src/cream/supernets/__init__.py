"""Supernets, one module per space family; importing this package registers them all."""

from cream.spaces import nb201 as _nb201  # noqa: F401  (registers the space until its supernet imports it)
from cream.supernets import mobilenet, vit  # noqa: F401
