"""Run summaries, reports and plots."""
