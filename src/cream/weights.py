"""Saving and loading model weights (safetensors; torch files load with weights_only=True)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cream.errors import CheckpointError


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_model

    tmp = path.with_name(f".{path.name}.tmp")
    save_model(model, str(tmp))
    tmp.replace(path)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a safetensors (or torch, weights_only) state dict, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
    except Exception as e:  # noqa: BLE001 - any decoding failure means an unreadable file
        raise CheckpointError(f"weights file '{path}' cannot be read: {str(e).splitlines()[0]}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"weights file '{path}' does not fit the model: missing {missing[:3]}"
                              f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                              f"{'...' if len(unexpected) > 3 else ''}")
