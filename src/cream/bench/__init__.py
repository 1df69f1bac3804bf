"""Tabular NAS benchmarks: ground truth for search strategies and for supernet ranking."""

from cream.bench.nb201 import NB201Table, run_bench

__all__ = ["NB201Table", "run_bench"]
