"""Run reports: summaries and plots."""
