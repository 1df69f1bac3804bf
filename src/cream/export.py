"""Export one arch as a standalone model: safetensors weights with the arch in their metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cream.config import RunConfig, load_config
from cream.errors import CreamError
from cream.oneshot import SUPERNET_WEIGHTS, load_supernet, new_supernet, resolve_space
from cream.profiling import profile
from cream.spaces.base import load_arch
from cream.weights import load_weights


def export(source: str | Path, arch_file: str | Path | None, out: str | Path, onnx: bool = False) -> dict[str, Any]:
    """Write `out` (.safetensors + .json sidecar) for the arch; return what was written."""
    from safetensors.torch import save_model

    src = Path(source)
    if not (src / "config.yaml").is_file():
        raise CreamError(f"'{src}' is not a run directory (no config.yaml)")
    cfg = load_config(RunConfig, src / "config.yaml")
    arch = load_arch(str(arch_file)) if arch_file else cfg.arch
    if not arch:
        raise CreamError(f"no arch to export: pass --arch FILE ('{src}' is not a retrain run with an arch)")
    if "num_classes" not in cfg.space:
        raise CreamError(f"'{src}' is not a run of a search space (its config.yaml has no space.num_classes)")
    num_classes = int(cfg.space["num_classes"])
    space = resolve_space(cfg, num_classes)
    arch = space.validate(arch)
    if (src / SUPERNET_WEIGHTS).is_file():
        model = load_supernet(cfg, src, num_classes).extract(arch)
    elif (src / "model.safetensors").is_file() and cfg.arch:
        if space.validate(cfg.arch) != arch:
            raise CreamError(f"'{src}' trained arch {json.dumps(cfg.arch)}, not the one given in --arch")
        model = new_supernet(cfg, space).extract(arch)
        load_weights(model, src / "model.safetensors")
    else:
        raise CreamError(f"'{src}' holds neither {SUPERNET_WEIGHTS} nor a retrained model.safetensors")
    model.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"arch": json.dumps(arch), "space": json.dumps(cfg.space), "num_classes": str(num_classes),
            "image_size": str(cfg.data.image_size)}
    save_model(model, str(out), metadata=meta)
    size = (3, cfg.data.image_size, cfg.data.image_size)
    info = {"weights": str(out), "arch": arch, "space": cfg.space, "num_classes": num_classes,
            "input_size": list(size), **profile(model, input_size=size)}
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    if onnx:
        torch.onnx.export(model, torch.zeros(1, *size), str(out.with_suffix(".onnx")), dynamo=False)
        info["onnx"] = str(out.with_suffix(".onnx"))
    return info


def load_exported(path: str | Path) -> torch.nn.Module:
    """The standalone model of a file written by `export` (its arch and space are in the metadata)."""
    from safetensors import safe_open

    from cream.registry import build_supernet, get_space

    path = Path(path)
    if not path.is_file():
        raise CreamError(f"exported model '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any decoding failure means an unreadable file
        raise CreamError(f"exported model '{path}' cannot be read: {str(e).splitlines()[0]}") from None
    if "arch" not in meta or "space" not in meta:
        raise CreamError(f"'{path}' has no arch/space metadata; was it written by `cream export`?")
    space = get_space({**json.loads(meta["space"]), "num_classes": int(meta["num_classes"])})
    model = build_supernet(space).extract(space.validate(json.loads(meta["arch"])))
    load_weights(model, path)
    return model
