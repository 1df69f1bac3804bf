"""Sizes of a CLIP under TinyCLIP's naming convention (spec §5.4).

* Parameters: the image tower's, and the text tower's *without* its token embedding (vocab x width, which
  would otherwise dominate small text towers); the logit scale counts for neither.
* Multiply-adds: image tower at its input size plus text tower over the full context (77 tokens), counted
  analytically for open_clip's ViT, ModifiedResNet and text transformer: every matmul and convolution
  (attention products included), nothing else, the convention of `cream.cost.measure` (a flop counter
  run over the six published models gives exactly the same totals, see docs/tinyclip.md).
"""

from __future__ import annotations

from torch import nn


def clip_params(model: nn.Module) -> tuple[int, int]:
    """(image tower parameters, text tower parameters without the token embedding)."""
    image = sum(p.numel() for n, p in model.named_parameters() if n.startswith("visual."))
    text = sum(p.numel() for n, p in model.named_parameters()
               if not n.startswith("visual.") and n not in ("token_embedding.weight", "logit_scale"))
    return image, text


def transformer_macs(tokens: int, width: int, layers: int, mlp_ratio: float = 4.0) -> int:
    """A pre-norm transformer stack: q, k, v, out projections, the two attention products and the MLP."""
    per_layer = tokens * width * width * (4 + 2 * mlp_ratio) + 2 * tokens * tokens * width
    return int(layers * per_layer)


def vit_macs(vision: dict, embed_dim: int) -> int:
    size, patch, width = vision.get("image_size", 224), vision["patch_size"], vision["width"]
    grid = size // patch
    tokens = grid * grid + 1
    patchify = grid * grid * 3 * patch * patch * width
    return patchify + transformer_macs(tokens, width, vision["layers"], vision.get("mlp_ratio", 4.0)) \
        + width * embed_dim


def modified_resnet_macs(vision: dict, embed_dim: int) -> int:
    """open_clip's ModifiedResNet: 3-conv stem, bottlenecks with anti-aliased (avg-pool) strides, and
    attention pooling over the mean token and the final map's tokens (all of them projected)."""
    w, size = vision["width"], vision.get("image_size", 224)
    h = size // 2
    macs = h * h * 9 * (3 * (w // 2) + (w // 2) * (w // 2) + (w // 2) * w)
    h //= 2
    inplanes = w
    for stage, blocks in enumerate(vision["layers"]):
        planes = w * 2 ** stage
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            out = h // stride
            macs += h * h * (inplanes * planes + 9 * planes * planes) + out * out * planes * 4 * planes
            if stride > 1 or inplanes != 4 * planes:
                macs += out * out * inplanes * 4 * planes
            inplanes, h = 4 * planes, out
    c, tokens = inplanes, h * h + 1
    return macs + 3 * tokens * c * c + 2 * tokens * tokens * c + tokens * c * embed_dim


def clip_macs(cfg: dict) -> int:
    """Image + text multiply-adds of an open_clip CLIP config (one image, one full-length caption)."""
    vision, text, embed = cfg["vision_cfg"], cfg["text_cfg"], cfg["embed_dim"]
    image = modified_resnet_macs(vision, embed) if isinstance(vision["layers"], (list, tuple)) \
        else vit_macs(vision, embed)
    return image + transformer_macs(text.get("context_length", 77), text["width"], text["layers"],
                                    text.get("mlp_ratio", 4.0)) + text["width"] * embed
