"""The training engine and the supernet-training strategies plugged into it."""
