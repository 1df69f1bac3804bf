"""Workflows: the stages the `cream` command runs, each reading and writing run directories.

train a standalone model (`train_model`), train a supernet (`supernet`), search it (`search`), the
whole pipeline (`pipeline`), export an arch (`export`), convert an original checkpoint (`convert`),
rank a supernet against a tabular benchmark (`rank`). Workflows import the library; nothing in the
library imports a workflow.
"""
