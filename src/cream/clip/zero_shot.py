"""Zero-shot top-1 of a CLIP on a labelled image set: each class is the text embedding of its prompt(s)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from cream.data import eval_loader


@torch.no_grad()
def zero_shot_top1(model: nn.Module, dataset: Dataset, classes: Sequence[str], templates: Sequence[str],
                   tokenizer: Any, *, batch_size: int = 256, device: torch.device | None = None,
                   workers: int = 0) -> dict[str, float]:
    """Fraction of `dataset`'s (image, label) samples whose nearest class prompt is their label.

    The class embeddings are open_clip's (`build_zero_shot_classifier`: mean over `templates` of the
    normalised text features, normalised again)."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    names = [c.replace("_", " ") for c in classes]
    weights = build_zero_shot_classifier(model, tokenizer=tokenizer, classnames=names, templates=list(templates),
                                         num_classes_per_batch=10, device=device)
    correct = total = 0
    for images, labels in eval_loader(dataset, batch_size, workers=workers):
        feats = model.encode_image(images.to(device), normalize=True)
        correct += int((feats @ weights).argmax(-1).cpu().eq(labels).sum())
        total += len(labels)
    model.train(was_training)
    return {"top1": correct / max(total, 1), "images": total}
