"""What a teacher is: something that, given a batch, says which classes it believes.

A teacher returns logits (batch, classes): their softmax is its distribution over the classes.
A store of sparse outputs returns the log of its reconstructed distribution, which softmax maps
back to that distribution, so every loss treats all teachers alike. The batch's sample keys
`(index, sample_seed)` (see `cream.data.sampler`) name each image and its augmentation; a
teacher that runs a network ignores them, a store looks its answers up by them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from cream.teachers.intermediates import Recording

Keys = Sequence[tuple[int, int]]


@runtime_checkable
class Teacher(Protocol):
    #: True when the teacher looks at the images (a network); False when it only reads the keys (a store).
    sees_images: bool

    def __call__(self, images: Tensor, keys: Keys | None = None) -> Tensor:
        """Logits (batch, classes) for `images`, whose sample keys are `keys`; never with gradients."""
        ...

    def to(self, device: torch.device) -> Teacher:
        """Move to the student's device; returns the teacher."""
        ...


@runtime_checkable
class LayerTeacher(Teacher, Protocol):
    """A teacher that also shows its per-layer activations (MiniViT's relation distillation)."""

    def with_layers(self, images: Tensor, layers: Sequence[int]) -> tuple[Tensor, Recording]:
        """Logits and the q/k/v and outputs of `layers` (see `cream.teachers.intermediates`); no gradients."""
        ...
