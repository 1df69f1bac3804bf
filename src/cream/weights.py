"""Saving and loading model weights (safetensors; torch files load with weights_only=True)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from cream.atomic import atomic_path
from cream.errors import CheckpointError


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def read_checkpoint(path: Path, what: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict of a torch file (its "model" entry if it has one), loaded with weights_only.

    Training scripts (the original AutoFormer's too) also pickle their argparse namespace, which is
    allowed as data. Errors are one line naming the file as `what`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} '{path}' does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decoding failure means an unreadable file
        raise _unreadable(what, path, e) from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, Mapping) or not all(isinstance(t, Tensor) for t in state.values()):
        raise CheckpointError(f"{what} '{path}' holds no state dict (expected a dict of tensors, "
                              "or one under the key 'model')")
    return dict(state)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a safetensors (or torch, weights_only) state dict, with one-line errors."""
    path = Path(path)
    if path.suffix != ".safetensors":
        state = read_checkpoint(path, "weights file")
    elif not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist")
    else:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any decoding failure means an unreadable file
            raise _unreadable("weights file", path, e) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"weights file '{path}' does not fit the model: missing {missing[:3]}"
                              f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                              f"{'...' if len(unexpected) > 3 else ''}")


def _unreadable(what: str, path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(f"{what} '{path}' cannot be read: {str(e).splitlines()[0]}")
