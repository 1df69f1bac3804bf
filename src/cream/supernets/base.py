"""The supernet protocol every kind and family implements.

A supernet holds the shared weights of a whole space. `set_arch(arch)` selects the path that
following forwards run; `forward(x, arch=...)` runs another arch once (a teacher path, a matching
score) without changing the selection; `extract(arch)` returns the standalone network of the arch
(the class `cream.models.build_model` makes) with copies of the supernet's weights, whose eval
outputs equal the supernet's; `path_parameters(arch)` are the parameters that arch's forward uses
(a strategy's θ for a one-step look-ahead).

Kinds (`cream.registry.KINDS`): *single_path* supernets run one candidate per choice; *mixed*
supernets run every candidate of a layer and sum them with weights (architecture parameters of
their own, `arch_parameters()`), and `derive()` reads the arch they prefer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from cream.spaces.base import Arch, Space


@runtime_checkable
class Supernet(Protocol):
    space: Space
    kind: str

    def set_arch(self, arch: Arch) -> None: ...

    def extract(self, arch: Arch) -> nn.Module: ...

    def forward(self, x: Tensor, arch: Arch | None = None) -> Tensor: ...

    def path_parameters(self, arch: Arch | None = None) -> list[nn.Parameter]: ...


@contextmanager
def arch_selected(net: Any, arch: Arch | None) -> Iterator[None]:
    """Run the body with `arch` selected (if given), then restore the previous selection."""
    if arch is None:
        yield
        return
    previous = net.arch
    net.set_arch(arch)
    try:
        yield
    finally:
        net.set_arch(previous)
