"""Datasets and loaders."""

from cream.data.build import Splits, build_splits, eval_loader, train_loader, with_keys

__all__ = ["Splits", "build_splits", "eval_loader", "train_loader", "with_keys"]
