"""Parameters and multiply-adds: measured on a model, or analytic for an arch."""

from cream.cost.measure import count_params, measure, measure_macs

__all__ = ["count_params", "measure", "measure_macs"]
