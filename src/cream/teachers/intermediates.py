"""Per-layer activations of a transformer, for relation distillation (MiniViT, spec §3.3).

A "layer" is one application of a block: a plain timm ViT `Block` or `SwinTransformerBlock` is one
layer, a `MultiplexedBlock` applied n times is n layers. Layers are counted from 0 in forward
order over the whole network, as Mini-Swin's `11_9_7_5_3_1` lists count them. `record` watches
them with forward hooks, so it works on any such network, a student or a frozen teacher, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from cream.errors import ConfigError
from cream.nn.multiplex import MultiplexedBlock


@dataclass
class Recording:
    """What one forward showed at the chosen layers, in the order they were asked for.

    `qkv[i]`: (q, k, v) of the i-th chosen layer, each (batch·windows, tokens, channels), the
    qkv projection's output before any scaling. `hidden[i]`: that layer's output as (batch, tokens, channels).
    """

    layers: Sequence[int]
    by_slot_qkv: dict[int, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)
    by_slot_hidden: dict[int, Tensor] = field(default_factory=dict)

    @property
    def qkv(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        return [self.by_slot_qkv[i] for i in sorted(self.by_slot_qkv)]

    @property
    def hidden(self) -> list[Tensor]:
        return [self.by_slot_hidden[i] for i in sorted(self.by_slot_hidden)]


def layer_taps(model: nn.Module) -> list[tuple[nn.Module, nn.Module, int]]:
    """(qkv projection, output module, applications) of each physical block, in forward order."""
    taps, inner = [], set()
    for m in model.modules():
        if isinstance(m, MultiplexedBlock):
            taps.append((m.block.attn.qkv, m.out_tap, len(m.apps)))
            inner.update(id(x) for x in m.modules())
        elif isinstance(m, (Block, SwinTransformerBlock)) and id(m) not in inner:
            taps.append((m.attn.qkv, m, 1))
    return taps


def count_layers(model: nn.Module) -> int:
    """How many layers (block applications) one forward of `model` runs."""
    return sum(n for _, _, n in layer_taps(model))


@contextmanager
def record(model: nn.Module, layers: Sequence[int], key: str = "distill.student_layers") -> Iterator[Recording]:
    """Within the block, forwards of `model` fill the yielded `Recording` at `layers` (the last forward wins).
    A layer index the model does not have is a one-line error naming `key`."""
    total = count_layers(model)
    bad = [i for i in layers if not 0 <= i < total]
    if bad:
        raise ConfigError(f"config key '{key}' = {list(layers)} names layers {bad}; "
                          f"this model has layers 0..{total - 1}")
    rec = Recording(layers)
    slots: dict[int, list[int]] = {}  # a layer may be asked for more than once (paired with two teacher layers)
    for i, layer in enumerate(layers):
        slots.setdefault(layer, []).append(i)
    seen = {"qkv": 0, "hidden": 0}

    def on_qkv(module: nn.Module, args: tuple, out: Tensor) -> None:
        i, seen["qkv"] = seen["qkv"] % total, seen["qkv"] + 1
        c = out.shape[-1] // 3
        for j in slots.get(i, ()):
            rec.by_slot_qkv[j] = (out[..., :c], out[..., c:2 * c], out[..., 2 * c:])

    def on_hidden(module: nn.Module, args: tuple, out: Tensor) -> None:
        i, seen["hidden"] = seen["hidden"] % total, seen["hidden"] + 1
        for j in slots.get(i, ()):
            rec.by_slot_hidden[j] = out.flatten(1, -2)

    handles = []
    for q, h, _ in layer_taps(model):
        handles += [q.register_forward_hook(on_qkv), h.register_forward_hook(on_hidden)]
    try:
        yield rec
    finally:
        for handle in handles:
            handle.remove()
