"""Cream's prioritized path board (spec §5.4) and its meta-matching network (spec §5.5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cream.spaces.base import Arch, arch_key


@dataclass
class BoardEntry:
    """A path on the board: its score, its MACs, and a few training images with its own softmax on them."""

    arch: Arch
    score: float
    macs: int
    images: torch.Tensor | None = None
    probs: torch.Tensor | None = None


class PathBoard:
    """The prioritized path board (spec §5.4): the best paths seen so far, best first.

    A path is admitted if the board is not full, or if it beats the worst entry's score by more
    than `gap`, or beats it at fewer MACs. Order: score descending, ties broken by MACs
    (`tie_break` "larger" first, the original's order, or "smaller" first). With `dedup`, a path
    holds at most one slot: a new measurement replaces its entry only if it scores higher.
    """

    def __init__(self, size: int = 10, gap: float = 5.0, tie_break: str = "larger", dedup: bool = True) -> None:
        self.size, self.gap, self.tie_break, self.dedup = size, gap, tie_break, dedup
        self.entries: list[BoardEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def _find(self, arch: Arch) -> BoardEntry | None:
        key = arch_key(arch)
        return next((e for e in self.entries if arch_key(e.arch) == key), None)

    def accepts(self, arch: Arch, score: float, macs: int) -> bool:
        """Whether `add` would take a path with this score and MACs."""
        if self.dedup and (old := self._find(arch)) is not None:
            return score > old.score
        if len(self.entries) < self.size:
            return True
        worst = self.entries[-1]
        return score > worst.score + self.gap or (score > worst.score and macs < worst.macs)

    def add(self, entry: BoardEntry) -> None:
        """Insert an entry that `accepts` admitted, keep the order and drop what falls off the end."""
        if self.dedup:
            key = arch_key(entry.arch)
            self.entries = [e for e in self.entries if arch_key(e.arch) != key]
        self.entries.append(entry)
        sign = -1 if self.tie_break == "larger" else 1
        self.entries.sort(key=lambda e: (-e.score, sign * e.macs))  # stable: full ties keep admission order
        del self.entries[self.size:]


class MatchingNetwork(nn.Module):
    """Cream's meta-matching network: one linear layer (classes x images -> 1) that scores how well a
    board path suits the current student from the difference of their softmax outputs on the
    board path's stored images. Initialised as the original (timm's init of a Linear with one
    output: weights U(-1, 1), bias 0)."""

    def __init__(self, num_classes: int, images: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(num_classes * images, 1)
        with torch.no_grad():
            self.layer.weight.uniform_(-1.0, 1.0, generator=generator)
            self.layer.bias.zero_()

    def forward(self, diff: torch.Tensor) -> torch.Tensor:
        """`diff`: (entries, images, classes) softmax differences -> one score per entry."""
        return self.layer(diff.flatten(-2)).squeeze(-1)
