"""Teachers for distillation and the losses that use them."""
