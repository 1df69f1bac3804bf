"""Tabular NAS benchmarks: ground truth for search strategies and for supernet ranking."""

from cream.tabular.nb201 import NB201Table, run_bench

__all__ = ["NB201Table", "run_bench"]
