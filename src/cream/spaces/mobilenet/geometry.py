"""Where each layer of a MobileNet-style space sits: widths, stride and feature-map sizes."""

from __future__ import annotations

from dataclasses import dataclass

from cream.spaces.mobilenet.config import MobileNetConfig


@dataclass(frozen=True)
class LayerGeom:
    """Where one layer sits: input/output width, stride, input/output map size."""

    stage: int
    index: int
    cin: int
    cout: int
    stride: int
    h_in: int
    h_out: int


def conv_out(h: int, k: int, s: int) -> int:
    return (h + 2 * (((s - 1) + (k - 1)) // 2) - k) // s + 1


def layer_geometry(cfg: MobileNetConfig) -> list[LayerGeom]:
    """Widths, strides and map sizes of every layer (the same for every op of a layer)."""
    h = conv_out(cfg.input_size, 3, cfg.stem_stride)
    cin, out = cfg.stem_channels, []
    for s, st in enumerate(cfg.stages):
        for i in range(len(st.ops)):
            stride = st.stride if i == 0 else 1
            h_out = conv_out(h, 3, stride)
            out.append(LayerGeom(s, i, cin, st.channels, stride, h, h_out))
            cin, h = st.channels, h_out
    return out
