"""TinyCLIP (spec §5): CLIP distillation by affinity mimicking with weight inheritance, on open_clip."""
