"""Measured latency: the one timing protocol every latency figure of cream comes from.

`TimingProtocol` states everything a figure depends on: device (`cpu`, `cuda`, or `onnx` =
ONNX Runtime's CPU provider), batch size, thread count (fixed with `torch.set_num_threads` /
ONNX Runtime's intra-op threads; one inter-op thread), precision (fp32), warm-up runs and
timed runs. `time_model` runs the warm-up, then times each run separately (CUDA synchronised
before and after) and reports the median and the spread (10th/90th percentile, interquartile
range, min); `time_models` does the same for several models with their runs interleaved, which is
how tables, calibration archs and predictors' training archs are timed. Tables and predictors
keep the protocol's `statistic`: the median by default, or the minimum. On a machine shared with
other work, runs are preempted by other processes (a 10 ms time slice lands in some runs and not
others); with one thread, `clock="process"` times the process's CPU time instead of elapsed time,
which leaves the time spent descheduled out.
"""

from __future__ import annotations

import dataclasses
import platform
import random
import statistics
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cream.errors import ConfigError, CreamError

DEVICES = ("cpu", "cuda", "onnx")
STATISTICS = ("median", "min")
CLOCKS = ("wall", "process")


@dataclass(frozen=True)
class TimingProtocol:
    """How a latency is measured (recorded next to every table, predictor and figure)."""

    device: str = "cpu"
    batch: int = 1
    threads: int = 1
    warmup: int = 5
    repeats: int = 20
    precision: str = "fp32"
    statistic: str = "median"  # what tables and predictors keep of the timed runs: median, or min on a busy machine
    clock: str = "wall"  # wall: elapsed time; process: this process's CPU time (1 thread, a machine shared with others)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"latency device {self.device!r} is unknown; choose one of {list(DEVICES)}")
        for key, low in (("batch", 1), ("threads", 1), ("warmup", 0), ("repeats", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"latency {key} = {value!r} must be an integer >= {low}")
        if self.precision != "fp32":
            raise ConfigError(f"latency precision {self.precision!r} is not supported; only 'fp32' is")
        if self.clock not in CLOCKS:
            raise ConfigError(f"latency clock {self.clock!r} is unknown; choose one of {list(CLOCKS)}")
        if self.clock == "process" and (self.threads != 1 or self.device == "cuda"):
            raise ConfigError(f"latency clock 'process' times one CPU thread; it needs threads = 1 and device cpu "
                              f"or onnx, not threads = {self.threads}, device {self.device!r}")
        if self.statistic not in STATISTICS:
            raise ConfigError(f"latency statistic {self.statistic!r} is unknown; choose one of {list(STATISTICS)}")

    def value(self, timed: dict[str, float]) -> float:
        """The figure of a `time_model` result that this protocol keeps (its `statistic`, in ms)."""
        return timed[f"{self.statistic}_ms"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "protocol") -> TimingProtocol:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; a timing protocol has {sorted(fields)}")
        return cls(**d)


def check_device(device: str) -> None:
    """Refuse, in one line, a device this machine lacks (CUDA) or a runtime not installed (ONNX Runtime)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise CreamError("--device cuda: no CUDA device is available on this machine; use cpu or onnx")
    if device == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise CreamError("--device onnx needs ONNX Runtime: pip install 'cream[onnx]'") from None


def environment(protocol: TimingProtocol) -> dict[str, Any]:
    """What a measurement ran on: machine, processor, library versions (stored with every table)."""
    env: dict[str, Any] = {"machine": platform.machine(), "processor": _cpu_name(), "python": platform.python_version(),
                           "torch": torch.__version__, "torch_threads_available": torch.get_num_threads()}
    if protocol.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    if protocol.device == "onnx":
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median and spread of per-run times (ms)."""
    q = statistics.quantiles(times_ms, n=20, method="inclusive") if len(times_ms) > 1 else times_ms * 19
    quart = statistics.quantiles(times_ms, n=4, method="inclusive") if len(times_ms) > 1 else times_ms * 3
    return {"median_ms": statistics.median(times_ms), "p10_ms": q[1], "p90_ms": q[17],
            "iqr_ms": quart[2] - quart[0], "min_ms": min(times_ms), "runs": len(times_ms)}


def time_model(model: nn.Module, input_size: tuple[int, ...], protocol: TimingProtocol) -> dict[str, float]:
    """Time `model` on a batch of `protocol.batch` inputs of `input_size` (without the batch dim).

    Returns `summarize`'s median and spread. The model is put in eval mode and left there.
    """
    return time_models([(model, input_size)], protocol)[0]


def time_models(jobs: Sequence[tuple[nn.Module, tuple[int, ...]]], protocol: TimingProtocol,
                seed: int = 0) -> list[dict[str, float]]:
    """`time_model` of several models, interleaved: each one's warm-up, then `protocol.repeats` passes that
    run every model once, in a fresh seeded shuffle per pass.

    Why: a VM's speed drifts over seconds (other tenants, clocks), so models timed one after the other
    meet different machines, and the drift swamps the few-percent differences between archs of one
    space. Interleaved, every model sees the same spells. Measured on the 2-core dev VM, 30 AutoFormer-T
    archs timed in two rounds ranked alike with Spearman 0.93 one after the other and 0.99 interleaved.
    """
    check_device(protocol.device)
    runner = _onnx_runner if protocol.device == "onnx" else _torch_runner
    clock = time.process_time_ns if protocol.clock == "process" else time.perf_counter_ns
    with _threads(protocol.threads):
        runs = []
        for model, input_size in jobs:
            model.eval()
            runs.append(runner(model, torch.randn(protocol.batch, *input_size), protocol))
        for run in runs:
            for _ in range(protocol.warmup):
                run()
        times: list[list[float]] = [[] for _ in runs]
        order, rng = list(range(len(runs))), random.Random(seed)
        for _ in range(protocol.repeats):
            rng.shuffle(order)
            for i in order:
                start = clock()
                runs[i]()
                times[i].append((clock() - start) / 1e6)
    return [summarize(t) for t in times]


def _torch_runner(model: nn.Module, x: torch.Tensor, protocol: TimingProtocol) -> Any:
    cuda = protocol.device == "cuda"
    if cuda:
        model, x = model.cuda(), x.cuda()

    @torch.inference_mode()
    def run() -> None:
        if cuda:
            torch.cuda.synchronize()
        model(x)
        if cuda:
            torch.cuda.synchronize()

    return run


def _onnx_runner(model: nn.Module, x: torch.Tensor, protocol: TimingProtocol) -> Any:
    import io

    import onnxruntime as ort

    buf = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad():
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated; it needs no onnxscript
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), buf, input_names=["x"], dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = protocol.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)
