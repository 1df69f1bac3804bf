"""Structured masks on open_clip transformer towers: the masked parameters and physical pruning.

A mask set for one tower is `hidden` (D: the embedding dim, shared by every layer), `heads`
(one vector per layer) and `intermediate` (one vector per layer: MLP neurons). Masks act as
scales: the hidden mask multiplies the embeddings and the attention and MLP outputs, the head
mask the per-head attention outputs, the neuron mask the MLP activations; every LayerNorm
normalises over the kept hidden dims only (zeros elsewhere). `masked_parameters` folds the scales
into parameter tensors, so one substitution serves both the masked forward and `prune`, which
slices those tensors to the kept indices and rebuilds a smaller dense model of the same classes.

Attention of a pruned layer has an inner width (heads x head_dim) that differs from its embedding
width, which `nn.MultiheadAttention` cannot express, so it becomes a `PrunedAttention`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cream.errors import CreamError

TOWERS = ("image", "text")


@dataclass(frozen=True)
class Tower:
    """Where one open_clip transformer tower lives inside a CLIP model (dotted parameter names).

    `hidden_params` maps a parameter name to the axis that runs over the hidden dim
    (embeddings, projections); `norms` lists the LayerNorms outside the blocks; `owns` the name
    prefixes of all the tower's parameters."""

    name: str
    blocks: str
    hidden_params: tuple[tuple[str, int], ...]
    norms: tuple[str, ...]
    prefix: str
    owns: tuple[str, ...]


@dataclass(frozen=True)
class LayerShape:
    heads: int
    head_dim: int
    intermediate: int


@dataclass(frozen=True)
class TowerShape:
    hidden: int
    layers: tuple[LayerShape, ...]


Masks = dict[str, dict[str, "torch.Tensor | list[torch.Tensor]"]]


class PrunedAttention(nn.Module):
    """Self-attention with `heads * head_dim` inner width and `embed_dim` outer width.

    Parameter names and the call signature follow `nn.MultiheadAttention`, so open_clip's
    residual blocks and state dicts keep working; only self-attention is supported."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, batch_first: bool = True) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim, self.batch_first = embed_dim, num_heads, head_dim, batch_first
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner))
        self.out_proj = nn.Linear(inner, embed_dim)

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):  # noqa: ARG002
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, _ = x.shape
        if self.num_heads == 0:
            out = self.out_proj(x.new_zeros(b, n, 0))
        else:
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            out = self.out_proj(out.transpose(1, 2).reshape(b, n, -1))
        return (out if self.batch_first else out.transpose(0, 1)), None


def towers(model: nn.Module, names: tuple[str, ...] = TOWERS) -> list[Tower]:
    """The named towers of an open_clip CLIP / CustomTextCLIP model; other tower kinds are refused."""
    found = []
    for name in names:
        if name == "image":
            visual = getattr(model, "visual", None)
            if type(visual).__name__ != "VisionTransformer" or getattr(visual, "attn_pool", None) is not None:
                raise CreamError(f"automatic inheritance: image tower {type(visual).__name__} is not supported; "
                                 "allowed: open_clip VisionTransformer without attentional pooling")
            found.append(Tower("image", "visual.transformer",
                               (("visual.conv1.weight", 0), ("visual.class_embedding", 0),
                                ("visual.positional_embedding", 1), ("visual.proj", 0)),
                               tuple(f"visual.{n}" for n in ("ln_pre", "ln_post")
                                     if isinstance(getattr(visual, n), nn.LayerNorm)), "visual.", ("visual.",)))
        elif name == "text":
            root, prefix = (model.text, "text.") if hasattr(model, "text") else (model, "")
            if not hasattr(root, "token_embedding") or not hasattr(root, "transformer"):
                raise CreamError(f"automatic inheritance: text tower {type(root).__name__} is not supported; "
                                 "allowed: open_clip TextTransformer")
            hidden = [(f"{prefix}token_embedding.weight", 1), (f"{prefix}positional_embedding", 1)]
            if getattr(root, "cls_emb", None) is not None:
                hidden.append((f"{prefix}cls_emb", 0))
            if isinstance(root.text_projection, nn.Linear):
                hidden.append((f"{prefix}text_projection.weight", 1))
            elif root.text_projection is not None:
                hidden.append((f"{prefix}text_projection", 0))
            owns = (prefix,) if prefix else ("transformer.", "token_embedding.", "positional_embedding", "ln_final.",
                                             "text_projection")
            found.append(Tower("text", f"{prefix}transformer", tuple(hidden), (f"{prefix}ln_final",), prefix, owns))
        else:
            raise CreamError(f"automatic inheritance: unknown tower {name!r}; allowed: {', '.join(TOWERS)}")
    return found


def _blocks(model: nn.Module, tower: Tower) -> nn.ModuleList:
    return model.get_submodule(tower.blocks).resblocks


def tower_shape(model: nn.Module, tower: Tower) -> TowerShape:
    """The current widths of a tower (after an earlier pruning stage they differ per layer)."""
    layers = []
    for block in _blocks(model, tower):
        if type(block).__name__ != "ResidualAttentionBlock" or hasattr(block, "ln_1_kv"):
            raise CreamError(f"automatic inheritance: block {type(block).__name__} in {tower.name} tower is not "
                             "supported; allowed: open_clip ResidualAttentionBlock (self-attention)")
        attn = block.attn
        layers.append(LayerShape(attn.num_heads, attn.head_dim, block.mlp.c_fc.out_features))
    hidden = model.get_parameter(tower.hidden_params[0][0]).shape[tower.hidden_params[0][1]]
    return TowerShape(hidden, tuple(layers))


def _norms(model: nn.Module, tower: Tower) -> Iterator[nn.LayerNorm]:
    for name in tower.norms:
        yield model.get_submodule(name)
    for block in _blocks(model, tower):
        yield block.ln_1
        yield block.ln_2


def _head_scale(z: torch.Tensor, head_dim: int) -> torch.Tensor:
    return z.repeat_interleave(head_dim)


def masked_parameters(model: nn.Module, tower: Tower, masks: dict) -> dict[str, torch.Tensor]:
    """Parameters of `tower` with the mask scales folded in (names as in `model.named_parameters`)."""
    hz = masks["hidden"]
    out: dict[str, torch.Tensor] = {}
    for name, axis in tower.hidden_params:
        p = model.get_parameter(name)
        shape = [1] * p.dim()
        shape[axis] = -1
        out[name] = p * hz.view(shape)
    for i, block in enumerate(_blocks(model, tower)):
        pre = f"{tower.blocks}.resblocks.{i}."
        attn, mlp = block.attn, block.mlp
        head = _head_scale(masks["heads"][i], attn.head_dim)
        out[pre + "attn.out_proj.weight"] = attn.out_proj.weight * hz[:, None] * head[None, :]
        out[pre + "attn.out_proj.bias"] = attn.out_proj.bias * hz
        out[pre + "mlp.c_proj.weight"] = mlp.c_proj.weight * hz[:, None] * masks["intermediate"][i][None, :]
        out[pre + "mlp.c_proj.bias"] = mlp.c_proj.bias * hz
    return out


def _kept_layer_norm(module: nn.LayerNorm, keep: torch.Tensor):
    """A forward hook: LayerNorm over the kept hidden dims only, zeros on the others."""

    def hook(_mod, args, _output):
        x = args[0]
        y = x.new_zeros(x.shape)
        y[..., keep] = F.layer_norm(x[..., keep], (len(keep),), module.weight[keep], module.bias[keep], module.eps)
        return y

    return hook


def masked_call(model: nn.Module, tower_list: list[Tower], masks: Masks, fn):
    """`fn(model)` with the masks of `tower_list` in force (parameters substituted, LayerNorms hooked)."""
    params: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for tower in tower_list:
            tm = masks[tower.name]
            params.update(masked_parameters(model, tower, tm))
            keep = torch.nonzero(tm["hidden"].detach()).flatten()
            handles += [n.register_forward_hook(_kept_layer_norm(n, keep)) for n in _norms(model, tower)]
        return torch.func.functional_call(_Apply(model, fn), {f"model.{k}": v for k, v in params.items()}, ())
    finally:
        for h in handles:
            h.remove()


class _Apply(nn.Module):
    """Lets `functional_call` substitute parameters around any method of the model, not just forward."""

    def __init__(self, model: nn.Module, fn) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self):
        return self.fn(self.model)


def _kept(z: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(z.detach()).flatten()


def _take(t: torch.Tensor, axis: int, index: torch.Tensor) -> torch.Tensor:
    return t.detach().index_select(axis, index).contiguous()


@torch.no_grad()
def prune(model: nn.Module, tower_list: list[Tower], masks: Masks) -> nn.Module:
    """Physically prune `model` in place to the non-zero mask entries, folding the mask values in.

    The result is the same open_clip model with narrower tensors; its outputs equal those of the
    masked model under the same masks."""
    for tower in tower_list:
        tm = masks[tower.name]
        folded = masked_parameters(model, tower, tm)
        hk = _kept(tm["hidden"])
        if len(hk) == 0:
            raise CreamError(f"automatic inheritance: the {tower.name} tower's hidden mask is all zero")
        for name, axis in tower.hidden_params:
            _set_parameter(model, name, _take(folded[name], axis, hk))
        for name in tower.norms:
            _replace_norm(model, name, hk)
        for i, block in enumerate(_blocks(model, tower)):
            pre = f"{tower.blocks}.resblocks.{i}."
            _prune_block(block, hk, _kept(tm["heads"][i]), _kept(tm["intermediate"][i]),
                         {k[len(pre):]: v for k, v in folded.items() if k.startswith(pre)})
        model.get_submodule(tower.blocks).width = len(hk)
        root = model.get_submodule(tower.prefix.rstrip(".")) if tower.prefix else model
        if tower.name == "text" and hasattr(root, "width"):
            root.width = len(hk)
    return model


def _set_parameter(model: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    old = getattr(module, attr)
    setattr(module, attr, nn.Parameter(value, requires_grad=old.requires_grad))
    if isinstance(module, nn.Conv2d):
        module.out_channels = value.shape[0]
    elif isinstance(module, nn.Embedding):
        module.embedding_dim = value.shape[1]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = value.shape


def _replace_norm(model: nn.Module, name: str, keep: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    parent = model.get_submodule(owner) if owner else model
    setattr(parent, attr, _narrow_norm(getattr(parent, attr), keep))


def _narrow_norm(norm: nn.LayerNorm, keep: torch.Tensor) -> nn.LayerNorm:
    new = type(norm)(len(keep), eps=norm.eps).to(norm.weight.device, norm.weight.dtype)
    new.weight.copy_(norm.weight[keep])
    new.bias.copy_(norm.bias[keep])
    return new


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device, weight.dtype)
    layer.weight.copy_(weight)
    layer.bias.copy_(bias)
    return layer


def _prune_block(block: nn.Module, hk: torch.Tensor, heads: torch.Tensor, neurons: torch.Tensor,
                 folded: dict[str, torch.Tensor]) -> None:
    attn = block.attn
    h, d = attn.num_heads, attn.head_dim
    w_in = attn.in_proj_weight.detach().view(3, h, d, -1)[:, heads][..., hk].reshape(-1, len(hk))
    b_in = attn.in_proj_bias.detach().view(3, h, d)[:, heads].reshape(-1)
    w_out = folded["attn.out_proj.weight"].detach().view(-1, h, d)[hk][:, heads].reshape(len(hk), -1)
    new = PrunedAttention(len(hk), len(heads), d, batch_first=getattr(attn, "batch_first", True))
    new = new.to(w_in.device, w_in.dtype)
    new.in_proj_weight.copy_(w_in)
    new.in_proj_bias.copy_(b_in)
    new.out_proj = _linear(w_out, folded["attn.out_proj.bias"][hk])
    block.attn = new
    block.ln_1, block.ln_2 = _narrow_norm(block.ln_1, hk), _narrow_norm(block.ln_2, hk)
    for ls in (block.ls_1, block.ls_2):
        if hasattr(ls, "gamma"):
            ls.gamma = nn.Parameter(ls.gamma.detach()[hk].clone())
    fc = block.mlp.c_fc
    block.mlp.c_fc = _linear(fc.weight.detach()[neurons][:, hk], fc.bias.detach()[neurons])
    block.mlp.c_proj = _linear(folded["mlp.c_proj.weight"].detach()[hk][:, neurons], folded["mlp.c_proj.bias"][hk])


def shape_of(model: nn.Module, names: tuple[str, ...] = TOWERS) -> dict:
    """A JSON-able record of the pruned widths, enough to rebuild the structure for a resume."""
    return {t.name: {"hidden": (s := tower_shape(model, t)).hidden,
                     "heads": [layer.heads for layer in s.layers],
                     "intermediate": [layer.intermediate for layer in s.layers]}
            for t in towers(model, names)}


def prune_to_shape(model: nn.Module, shape: dict) -> nn.Module:
    """Cut a freshly built model to a recorded `shape_of` (leading indices; weights to be loaded after)."""
    tower_list = towers(model, tuple(shape))
    masks: Masks = {}
    for tower in tower_list:
        full, want = tower_shape(model, tower), shape[tower.name]
        if not len(want["heads"]) == len(want["intermediate"]) == len(full.layers):
            raise CreamError(f"pruned shape: {tower.name} tower has {len(want['heads'])} layers, "
                             f"the model has {len(full.layers)}")
        masks[tower.name] = {
            "hidden": _leading(full.hidden, want["hidden"]),
            "heads": [_leading(layer.heads, n) for layer, n in zip(full.layers, want["heads"], strict=True)],
            "intermediate": [_leading(layer.intermediate, n)
                             for layer, n in zip(full.layers, want["intermediate"], strict=True)],
        }
    return prune(model, tower_list, masks)


def _leading(size: int, keep: int) -> torch.Tensor:
    if not 0 <= keep <= size:
        raise CreamError(f"pruned shape: cannot keep {keep} of {size}")
    return (torch.arange(size) < keep).float()
