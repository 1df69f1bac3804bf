"""Export one arch as a standalone model (`cream export`): safetensors weights with the arch in their metadata.

`cream.models.load_exported` (or `timm.create_model("cream_searched", file=...)`) reads the file back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cream.config import RunConfig, load_config, to_dict, with_overrides
from cream.errors import CreamError
from cream.models import build_model
from cream.profiling import profile
from cream.spaces.base import load_arch
from cream.weights import load_weights
from cream.workflows.supernet import SUPERNET_WEIGHTS, arch_model_kwargs, inherited_model, run_space
from cream.workflows.train_model import configured_model


def export(source: str | Path, arch_file: str | Path | None, out: str | Path, onnx: bool = False) -> dict[str, Any]:
    """Write `out` (.safetensors + .json sidecar) for the arch; return what was written."""
    from safetensors.torch import save_model

    src = Path(source)
    if not (src / "config.yaml").is_file():
        raise CreamError(f"'{src}' is not a run directory (no config.yaml)")
    cfg = load_config(RunConfig, src / "config.yaml")
    if not arch_file and not cfg.arch and (src / "model.safetensors").is_file():
        return _export_timm_model(cfg, src, Path(out))
    arch = load_arch(str(arch_file)) if arch_file else cfg.arch
    if not arch:
        raise CreamError(f"no arch to export: pass --arch FILE ('{src}' is not a retrain run with an arch)")
    if "num_classes" not in cfg.space:
        raise CreamError(f"'{src}' is not a run of a search space (its config.yaml has no space.num_classes)")
    num_classes = int(cfg.space["num_classes"])
    space = run_space(cfg, src, num_classes)
    arch = space.validate(arch)
    if (src / SUPERNET_WEIGHTS).is_file():
        model = inherited_model(_scoring_config(cfg, arch_file), src, arch, num_classes)
    elif (src / "model.safetensors").is_file() and cfg.arch:
        if space.validate(cfg.arch) != arch:
            raise CreamError(f"'{src}' trained arch {json.dumps(cfg.arch)}, not the one given in --arch")
        model = build_model(space, arch, **arch_model_kwargs(cfg))
        load_weights(model, src / "model.safetensors")
    else:
        raise CreamError(f"'{src}' holds neither {SUPERNET_WEIGHTS} nor a retrained model.safetensors")
    model.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"arch": json.dumps(arch), "space": json.dumps(space.to_config()), "num_classes": str(num_classes),
            "image_size": str(cfg.data.image_size)}
    save_model(model, str(out), metadata=meta)
    size = (3, cfg.data.image_size, cfg.data.image_size)
    info = {"weights": str(out), "arch": arch, "space": space.to_config(), "num_classes": num_classes,
            "input_size": list(size), **profile(model, input_size=size)}
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    if onnx:
        torch.onnx.export(model, torch.zeros(1, *size), str(out.with_suffix(".onnx")), dynamo=False)
        info["onnx"] = str(out.with_suffix(".onnx"))
    return info


def _export_timm_model(cfg: RunConfig, src: Path, out: Path) -> dict[str, Any]:
    """A retrained timm model (`model.name`, ours included): its weights, with the name, the constructor
    arguments and the class count in the metadata, so `timm.create_model(name, num_classes=n, **kwargs)`
    plus the file rebuild it."""
    from safetensors import safe_open
    from safetensors.torch import save_model

    with torch.device("meta"):  # the class count is the classifier's rows in the saved weights
        probe = configured_model(cfg, 1, inherit=False)
    weight = getattr(probe.get_classifier(), "weight", None) if hasattr(probe, "get_classifier") else None
    if weight is None:
        raise CreamError(f"'{src}' trained {cfg.model.name!r}, whose classifier has no weight to read the class "
                         "count from; it cannot be exported as a timm model")
    head = {id(p): n for n, p in probe.named_parameters()}[id(weight)]
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        num_classes = f.get_slice(head).get_shape()[0]
    model = configured_model(cfg, num_classes, inherit=False)
    load_weights(model, src / "model.safetensors")
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    kwargs = arch_model_kwargs(cfg)
    save_model(model, str(out), metadata={"model": cfg.model.name, "model_kwargs": json.dumps(kwargs),
                                          "num_classes": str(num_classes), "image_size": str(cfg.data.image_size)})
    size = (3, cfg.data.image_size, cfg.data.image_size)
    info = {"weights": str(out), "model": cfg.model.name, "model_kwargs": kwargs, "num_classes": num_classes,
            "input_size": list(size), **profile(model, input_size=size)}
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _scoring_config(cfg: RunConfig, arch_file: str | Path | None) -> RunConfig:
    """`cfg` with the data and search settings of the search run whose arch.json `arch_file` is, if it is one:
    the BN recalibration of the export is then the one that search scored the arch with."""
    run = Path(arch_file).parent if arch_file else None
    if run is None or not (run / "config.yaml").is_file() or not (run / "search.json").is_file():
        return cfg
    scored = load_config(RunConfig, run / "config.yaml")
    recal = {"seed": scored.search.seed, "bn_recal_images": scored.search.bn_recal_images}
    return with_overrides(cfg, {"data": to_dict(scored.data), "search": recal})
