"""Supernets, one module per space family; importing this package registers them all."""
