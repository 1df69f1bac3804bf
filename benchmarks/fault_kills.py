"""Kill `cream supernet`, `search`, `retrain` and `run` with SIGKILL at seeded random moments, resume each
with `--resume` until it finishes, and check every result is bit-identical to an uninterrupted run.

A moment is one of: `step:N` (just before the N-th training step of the process, so before the first
checkpoint when N is small), `write:N` (halfway through writing the N-th checkpoint file), `score:N` (while
scoring the N-th arch of a search) or `time:S` (S seconds after start, wherever that lands). The killed
process arms the moment itself (`--child`), so a moment is reproducible; the kill is a real SIGKILL.

    PYTHONPATH=src python benchmarks/fault_kills.py --kills 20 --seed 0   # prints one JSON object

`--kills` counts processes really killed: a moment that comes after a run has ended kills nothing, and
the moments still owed go to a fresh run of the same command.

tests/test_faults.py runs a few kills of each command from here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

# A tiny ViT pipeline on digits: 2 steps an epoch, a checkpoint every step, an 8-arch search.
TINY = {
    "data": {"name": "digits", "image_size": 16, "batch_size": 64, "train_per_class": 16, "test_per_class": 8,
             "val_fraction": 0.2},
    "space": {"family": "vit", "name": "vit-fault", "embed_dims": [8, 16], "depths": [1, 2], "num_heads": [1, 2],
              "mlp_ratios": [1.0, 2.0], "head_dim": 8, "img_size": 16, "patch_size": 4,
              "max_relative_position": 2},
    "strategy": {"name": "uniform"},
    "model": {"drop_path": 0.1},
    "optim": {"lr": 0.002, "warmup_epochs": 0},
    "train": {"epochs": 3, "deterministic": True, "threads": 1, "ckpt_every_steps": 1, "log_every": 1,
              "keep_checkpoints": 2},
    "search": {"method": "evolution", "budget": 8, "eval_images": 64, "test_top_k": 1,
               "kwargs": {"generations": 2, "population": 4, "parents": 2, "mutations": 2, "crossovers": 2}},
    "retrain": {"train": {"epochs": 2}},
}
# What each command's result is: files compared bit for bit (safetensors by tensor, JSON by value).
RESULTS = {
    "supernet": ["supernet.safetensors", "space.json"],
    "search": ["arch.json", "search.json"],
    "retrain": ["model.safetensors"],
    "run": ["supernet/supernet.safetensors", "search/search.json", "retrain/model.safetensors"],
}
# JSON keys that measure time, not results
_TIMES = {"wall_s"}


# ---- the killed process ------------------------------------------------------------------------------
def arm(moment: str) -> None:
    """Make this process SIGKILL itself at `moment` (see the module docstring)."""
    kind, _, value = moment.partition(":")
    n = float(value) if kind == "time" else int(value)
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if kind == "time":
        timer = threading.Timer(n, die)
        timer.daemon = True  # a run that ends first is not killed on its way out
        timer.start()
    elif kind == "step":
        from cream.train.engine import Engine
        _count_calls(Engine, "train_step", n, die)
    elif kind == "score":
        from cream.search.inherited import InheritedScorer
        _count_calls(InheritedScorer, "__call__", n, die)
    elif kind == "write":
        from cream.atomic import atomic_path
        from cream.train import checkpoint
        seen = [0]

        def half_write(obj, path):
            seen[0] += 1
            if seen[0] < n:
                return save(obj, path)
            buf = io.BytesIO()
            torch.save(obj, buf)
            with atomic_path(path) as tmp:  # killed inside: the torn temp file stays, unrenamed
                tmp.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
                die()

        save, checkpoint.save_atomic = checkpoint.save_atomic, half_write
    else:
        raise SystemExit(f"unknown kill moment {moment!r}")


def _count_calls(cls: type, name: str, n: int, die) -> None:
    original, seen = getattr(cls, name), [0]

    def counted(self, *args, **kwargs):
        seen[0] += 1
        if seen[0] >= n:
            die()
        return original(self, *args, **kwargs)

    setattr(cls, name, counted)


# ---- the driver --------------------------------------------------------------------------------------
def cream(args: list[str], moment: str | None = None) -> tuple[int, str]:
    """`cream ARGS` in a subprocess armed to die at `moment` (None: left to finish): (exit status, stderr),
    the status negative for a signal."""
    cmd = [sys.executable, __file__, "--child", moment or "", "--", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return done.returncode, done.stderr


def cream_forked(args: list[str], moment: str | None = None) -> tuple[int, str]:
    """As `cream`, in a fork of this process (which has imported torch already: far faster to start).
    Its stderr is not captured."""
    from cream.cli import main as cream_main

    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            if moment:
                arm(moment)
            status = cream_main(args)
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return (-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)), ""


def command_args(command: str, out: Path, config: Path, ref: Path) -> list[str]:
    """A fresh run of `command` into `out`; `ref` is an uninterrupted `cream run`, whose stages feed
    `search` (its supernet) and `retrain` (its arch)."""
    if command == "search":
        return ["search", "--supernet", str(ref / "supernet"), "--out", str(out)]
    if command == "retrain":
        return ["retrain", str(config), "--arch", str(ref / "search" / "arch.json"), "--set", "train.epochs=2",
                "--out", str(out)]
    return [command, str(config), "--out", str(out)]


def reference(folder: Path, launch=cream) -> tuple[Path, Path]:
    """The tiny config and an uninterrupted `cream run` of it, whose stages are every command's reference."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY, sort_keys=False))
    ref = folder / "ref"
    status, err = launch(["run", str(config), "--out", str(ref)])
    if status != 0:
        raise RuntimeError(f"the uninterrupted run failed with {status}: {err.strip()[-2000:]}")
    return config, ref


def kill_and_resume(command: str, moments: list[str], out: Path, config: Path, ref: Path, launch=cream) -> dict:
    """Start `command` killed at moments[0], resume it killed at each later moment, then resume to the end;
    compare its results with the reference. Moments that come after the run ends kill nothing."""
    killed = 0
    args = command_args(command, out, config, ref)
    for i, moment in enumerate([*moments, None]):
        status, err = launch(args if i == 0 else [command, "--resume", str(out)], moment)
        if status == -signal.SIGKILL:
            killed += 1
        elif status != 0:
            return {"command": command, "moments": moments, "killed": killed, "identical": False,
                    "error": (err.strip().splitlines() or [f"exit status {status}"])[-1]}
        elif moment is not None:  # finished before the moment came: later ones cannot kill a finished run
            break
    stage = {"supernet": ref / "supernet", "search": ref / "search", "retrain": ref / "retrain", "run": ref}[command]
    diffs = [name for name in RESULTS[command] if not same_file(stage / name, out / name)]
    return {"command": command, "moments": moments, "killed": killed, "identical": not diffs, "differs": diffs}


def same_file(a: Path, b: Path) -> bool:
    if not (a.is_file() and b.is_file()):
        return False
    if a.suffix == ".safetensors":
        ta, tb = load_file(a), load_file(b)
        return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    return _drop_times(json.loads(a.read_text())) == _drop_times(json.loads(b.read_text()))


def _drop_times(obj):
    if isinstance(obj, dict):
        return {k: _drop_times(v) for k, v in obj.items() if k not in _TIMES}
    if isinstance(obj, list):
        return [_drop_times(v) for v in obj]
    return obj


def draw_moments(command: str, count: int, rng: random.Random) -> list[str]:
    """`count` seeded moments for one command, the first always before its first checkpoint or mid-write."""
    kinds = {"supernet": ["step", "write", "time"], "retrain": ["step", "write", "time"],
             "search": ["score", "time"], "run": ["step", "write", "score", "time"]}[command]
    moments = []
    for i in range(count):
        kind = rng.choice(["step", "write"] if i == 0 and command != "search" else kinds)
        if kind == "time":
            moments.append(f"time:{rng.uniform(3.0, 8.0):.2f}")
        else:
            moments.append(f"{kind}:{rng.randint(1, 4)}")
    return moments


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20, help="kills in all, spread over the four commands")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, help="an empty folder for the runs (default: a new temporary one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args()
    if args.child is not None:
        if args.child:
            arm(args.child)
        from cream.cli import main as cream_main
        sys.exit(cream_main([a for a in rest if a != "--"]))

    start = time.perf_counter()
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="cream-faults-"))
    config, ref = reference(args.dir)
    rng = random.Random(args.seed)
    commands = ["supernet", "search", "retrain", "run"]
    runs: list[dict] = []
    for i, command in enumerate(commands):
        left = args.kills // len(commands) + (i < args.kills % len(commands))
        while left > 0:  # a moment after a run's end kills nothing: the next moments go to a fresh run
            out = args.dir / f"{command}-{len(runs)}"
            runs.append(kill_and_resume(command, draw_moments(command, left, rng), out, config, ref))
            left -= runs[-1]["killed"]
            if "error" in runs[-1]:
                break
    print(json.dumps({"seed": args.seed, "moments": sum(len(r["moments"]) for r in runs),
                      "killed": sum(r["killed"] for r in runs), "identical": all(r["identical"] for r in runs),
                      "runs": runs, "wall_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
