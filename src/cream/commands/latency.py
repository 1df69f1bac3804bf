"""`cream latency`: measure a model's latency, build a per-layer lookup table, fit a latency predictor."""

from __future__ import annotations

import argparse
import json
import sys


def _protocol_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads, fixed for the measurement (default 1)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "onnx"],
                   help="cpu (PyTorch), cuda (PyTorch, synchronised), onnx (ONNX Runtime, CPU)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--statistic", default="median", choices=["median", "min"],
                   help="what a table or predictor keeps of the timed runs (default median; min on a busy machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="measured latency, per-layer lookup tables and latency predictors",
                       description="Time models with one protocol (warm-up, fixed threads, batch, fp32; median "
                                   "and spread), build lookup tables of a space's layers, fit predictors. Tables "
                                   "and predictors serve as costs: search.cost_files: {latency_ms: FILE} with "
                                   "search.limits: {latency_ms: [lo, hi]}.")
    lat = p.add_subparsers(dest="latency_command", required=True, metavar="ACTION")

    m = lat.add_parser("measure", help="time a timm model or an arch file on this machine")
    what = m.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="a timm model name (ours included), e.g. resnet18 or autoformer_tiny")
    what.add_argument("--arch", help="an arch.json written by `cream search` (its arch and space)")
    m.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="input size (default: the model's own)")
    _protocol_options(m)
    m.set_defaults(func=measure)

    b = lat.add_parser("build-lut", help="time every layer candidate of a space (a lookup table)")
    b.add_argument("space", help="a preset name (e.g. cream, autoformer-tiny) or a space YAML file")
    b.add_argument("--out", default="latency_lut.json", help="the table file (default latency_lut.json)")
    b.add_argument("--calibration", type=int, default=5, help="random archs timed whole for the constant")
    b.add_argument("--seed", type=int, default=0)
    _protocol_options(b)
    b.set_defaults(func=build_lut)

    f = lat.add_parser("fit", help="time random archs of a space and fit a latency predictor on them")
    f.add_argument("space", help="a preset name or a space YAML file")
    f.add_argument("--out", default="latency_predictor.json", help="the predictor file")
    f.add_argument("--archs", type=int, default=200, help="random archs timed (default 200)")
    f.add_argument("--estimator", default="ridge", choices=["ridge", "gbr"],
                   help="ridge regression or gradient-boosted trees on the arch encoding")
    f.add_argument("--seed", type=int, default=0)
    _protocol_options(f)
    f.set_defaults(func=fit)


def _protocol(args: argparse.Namespace):  # -> TimingProtocol
    from cream.cost.latency import TimingProtocol, check_device

    check_device(args.device)
    return TimingProtocol(device=args.device, batch=args.batch, threads=args.threads, warmup=args.warmup,
                          repeats=args.repeats, statistic=args.statistic)


def measure(args: argparse.Namespace) -> int:
    from cream.cost.latency import time_model
    from cream.cost.lut import model_input_size
    from cream.errors import ConfigError

    protocol = _protocol(args)
    if args.input_size and min(args.input_size) < 1:
        raise ConfigError(f"--input-size {' '.join(map(str, args.input_size))}: C, H and W must all be >= 1")
    if args.model:
        from cream.profiling import create_model

        model, name = create_model(args.model), args.model
    else:
        model, name = _arch_model(args.arch), args.arch
    size = tuple(args.input_size) if args.input_size else model_input_size(model)
    try:
        timed = time_model(model, size, protocol)
    except (RuntimeError, AssertionError, ValueError) as e:  # the model's own forward refuses this size
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"--input-size {' '.join(map(str, size))} does not fit '{name}': {reason}") from None
    result = {"model": name, "input_size": list(size), **protocol.to_dict(), **timed}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{name}: {timed['median_ms']:.3f} ms median (p10 {timed['p10_ms']:.3f}, p90 {timed['p90_ms']:.3f}, "
              f"{timed['runs']} runs) on {protocol.device}, batch {protocol.batch}, {protocol.threads} thread(s), "
              f"{protocol.precision}, input {'x'.join(map(str, size))}")
    return 0


def _arch_model(path: str):  # -> nn.Module
    from cream.errors import ArchError, CreamError
    from cream.models import build_model
    from cream.spaces import get_space
    from cream.spaces.base import read_arch_file

    try:
        arch, doc = read_arch_file(path)
    except ArchError as e:  # name the option, as the other one-line errors of this command do
        raise CreamError(f"--arch: {e}") from None
    if not (isinstance(doc, dict) and "arch" in doc and "space" in doc):
        raise CreamError(f"--arch '{path}' is not an arch file: it needs JSON keys 'arch' and 'space' "
                         "(as `cream search` writes arch.json)")
    return build_model(get_space(doc["space"]), arch)


def build_lut(args: argparse.Namespace) -> int:
    from cream.cost.lut import build_lut as build
    from cream.cost.lut import save_latency_model
    from cream.spaces import get_space

    space = get_space(args.space)
    table = build(space, _protocol(args), calibration_archs=args.calibration, seed=args.seed,
                  progress=lambda msg: print(msg, file=sys.stderr))
    save_latency_model(table, args.out)
    summary = {"space": space.name, "out": args.out, "units": len(table.units), "constant_ms": table.constant_ms,
               **table.protocol.to_dict()}
    print(json.dumps(summary) if args.json else
          f"{space.name}: {len(table.units)} layer candidates timed, constant {table.constant_ms:.3f} ms -> {args.out}")
    return 0


def fit(args: argparse.Namespace) -> int:
    from cream.cost.lut import fit_predictor, save_latency_model
    from cream.errors import ConfigError
    from cream.spaces import get_space

    if args.archs < 2:
        raise ConfigError(f"--archs {args.archs}: a predictor needs at least 2 measured archs")
    space = get_space(args.space)
    predictor = fit_predictor(space, _protocol(args), archs=args.archs, seed=args.seed, estimator=args.estimator)
    save_latency_model(predictor, args.out)
    summary = {"space": space.name, "out": args.out, "archs": len(predictor.archs), "estimator": args.estimator}
    print(json.dumps(summary) if args.json else
          f"{space.name}: {args.estimator} predictor fitted on {len(predictor.archs)} measured archs -> {args.out}")
    return 0
