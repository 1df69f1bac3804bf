"""Import supernets trained by the original AutoFormer code (microsoft/Cream) as `cream supernet` runs.

The released AutoFormer checkpoints (`supernet-tiny/small/base.pth`) are torch pickles holding
`{"model": state_dict, ...}` in the original module names. Renamed to ours, and loaded into a
supernet whose space slices qkv the original way (`legacy_qkv_bias`, spec §3 and §8 item 1),
every subnet computes what it computed in the original, so the run directory written here
works with `cream search --supernet` and `cream export` like a trained one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cream.config import RunConfig, to_dict, with_overrides
from cream.errors import CheckpointError, ConfigError
from cream.run_dir import RunDir
from cream.weights import read_checkpoint, save_weights
from cream.workflows.supernet import SUPERNET_WEIGHTS, new_supernet, resolve_space

# Original name (regex) -> ours. Names not listed (cls_token, pos_embed, attn.qkv, attn.proj,
# norm, head) are the same on both sides.
_RENAMES = (
    (re.compile(r"^patch_embed_super\.proj\."), "patch_embed.proj."),
    (re.compile(r"^blocks\.(\d+)\.attn_layer_norm\."), r"blocks.\1.norm1."),
    (re.compile(r"^blocks\.(\d+)\.ffn_layer_norm\."), r"blocks.\1.norm2."),
    (re.compile(r"^blocks\.(\d+)\.(fc[12])\."), r"blocks.\1.mlp.\2."),
)
# Each original rel-pos encoder has a vertical and a horizontal table; ours stacks them as [v, h].
_REL_POS = re.compile(r"^(blocks\.\d+\.attn)\.rel_pos_embed_([kv])\.embeddings_table_([vh])$")
_SAME = re.compile(r"^(cls_token|pos_embed|norm\.(weight|bias)|head\.(weight|bias)|"
                   r"blocks\.\d+\.attn\.(qkv|proj)\.(weight|bias))$")


def autoformer_state_dict(original: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An original AutoFormer supernet state dict in the names of `cream.supernets.vit.ViTSupernet`."""
    state: dict[str, Tensor] = {}
    tables: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for name, tensor in original.items():
        name = name.removeprefix("module.")  # saved from a DistributedDataParallel wrapper
        if m := _REL_POS.match(name):
            tables.setdefault(f"{m[1]}.irpe.table_{m[2]}", {})[m[3]] = tensor
            continue
        for pattern, repl in _RENAMES:
            if pattern.match(name):
                state[pattern.sub(repl, name)] = tensor
                break
        else:
            if _SAME.match(name):
                state[name] = tensor
            else:
                unknown.append(name)
    if unknown:
        raise CheckpointError(f"not an AutoFormer supernet checkpoint: unknown keys {unknown[:3]}"
                              f"{'...' if len(unknown) > 3 else ''}")
    for name, pair in tables.items():
        if set(pair) != {"v", "h"}:
            raise CheckpointError(f"not an AutoFormer supernet checkpoint: {name} lacks a vertical or "
                                  "horizontal table")
        state[name] = torch.stack([pair["v"], pair["h"]])
    return state


def import_autoformer(cfg: RunConfig, source: Path) -> tuple[RunConfig, nn.Module]:
    """The supernet of `cfg.space` (switched to legacy qkv slicing) holding the weights of `source`,
    and the config that rebuilds it."""
    if not cfg.space:
        raise ConfigError("cream convert needs the space the checkpoint was trained on: give a CONFIG "
                          "(e.g. configs/autoformer/supernet-tiny.yaml) or --set space.preset=autoformer-tiny")
    state = autoformer_state_dict(read_checkpoint(Path(source)))
    if "head.weight" not in state:
        raise CheckpointError(f"checkpoint '{source}' has no classifier (head.weight); cannot tell its classes")
    num_classes = state["head.weight"].shape[0]
    if cfg.space.get("num_classes", num_classes) != num_classes:
        raise CheckpointError(f"checkpoint '{source}' classifies {num_classes} classes, but config key "
                              f"'space.num_classes' = {cfg.space['num_classes']}")
    cfg = with_overrides(cfg, {"space": {"legacy_qkv_bias": True, "num_classes": num_classes}})
    net = new_supernet(cfg, resolve_space(cfg, num_classes))
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint '{source}' does not fit space '{net.space.name}': missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]} (is the space's depth right?)")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"checkpoint '{source}' does not fit space '{net.space.name}': {name} has "
                                  f"shape {list(tensor.shape)}, the space needs {list(expected[name].shape)}")
    net.load_state_dict(state)
    return cfg, net


def convert_autoformer(cfg: RunConfig, source: Path, out: str | None) -> tuple[dict[str, Any], Path]:
    """Write a supernet run (config.yaml, supernet weights, summary.json) from an original checkpoint.

    The checkpoint is read and checked before the run directory is created, so a bad one leaves nothing behind.
    """
    cfg, net = import_autoformer(cfg, source)
    run = RunDir.create(out, "convert")
    run.write_yaml("config.yaml", to_dict(cfg))
    save_weights(net, run.file(SUPERNET_WEIGHTS))
    summary = {"source": str(source), "space": net.space.name, "num_classes": net.num_classes,
               "supernet_params": sum(p.numel() for p in net.parameters()), "legacy_qkv_bias": True}
    run.write_json("summary.json", summary)
    return summary, run.path
