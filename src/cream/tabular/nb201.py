"""The NAS-Bench-201 table (shared/specs/data.md §3) and search simulations on it.

`NB201Table(path)` loads the CSV once into one numpy column per metric, so a query is an index
lookup. `run_bench` runs a search method over many seeds with the clean protocol: search on a
validation column (default `cifar10_val_12ep`), report a test column (default
`cifar10_test_200ep`) of the arch the search picked, optionally under a latency limit.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cream.errors import ConfigError, DataError
from cream.search import make_search
from cream.spaces.base import Arch
from cream.spaces.nb201 import NUM_ARCHS, NB201Space, arch_to_index, arch_to_str, index_to_arch, str_to_arch

ACCURACY_COLUMNS: tuple[str, ...] = (
    "cifar10_test_200ep", "cifar100_test_200ep", "imagenet16_test_200ep",
    "cifar10_val_12ep", "cifar10_test_12ep", "cifar100_val_12ep", "cifar100_test_12ep",
    "imagenet16_val_12ep", "imagenet16_test_12ep",
)
LATENCY_PREFIX = "lat_ms_"

# Method settings used by `run_bench` unless overridden: sized for budgets of 25 … 500 queries.
BENCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "random": {},
    "regularized": {"population": 10, "sample": 3},
    "evolution": {"generations": None, "population": 10, "parents": 5, "mutations": 5, "crossovers": 5},
}


class NB201Table:
    """All 15,625 rows of the NAS-Bench-201 table, indexed by the official arch index."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"NAS-Bench-201 table '{self.path}' does not exist (see shared/specs/data.md §3)")
        with self.path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            missing = [c for c in ("index", "arch_str", *ACCURACY_COLUMNS) if c not in header]
            if missing:
                raise DataError(f"NAS-Bench-201 table '{self.path}' lacks columns {missing}")
            rows = list(reader)
        if len(rows) != NUM_ARCHS:
            raise DataError(f"NAS-Bench-201 table '{self.path}' has {len(rows)} rows; expected {NUM_ARCHS}")
        at = {c: i for i, c in enumerate(header)}
        for i, row in enumerate(rows):
            if row[at["index"]] != str(i) or row[at["arch_str"]] != arch_to_str(index_to_arch(i)):
                raise DataError(
                    f"NAS-Bench-201 table '{self.path}' row {i + 1} is out of the official index order: "
                    f"index {row[at['index']]}, arch {row[at['arch_str']]}"
                )
        self.columns = [c for c in header if c not in ("index", "arch_str")]
        keep = [at[c] for c in self.columns]
        try:
            matrix = np.array([[r[j] for j in keep] for r in rows], dtype=np.float64)
        except (ValueError, IndexError) as e:
            raise DataError(f"NAS-Bench-201 table '{self.path}' has a missing or non-numeric value: {e}") \
                from None
        matrix.flags.writeable = False
        self._data = {c: matrix[:, j] for j, c in enumerate(self.columns)}

    def __len__(self) -> int:
        return NUM_ARCHS

    @property
    def devices(self) -> list[str]:
        """Latency devices (`lat_ms_<device>` columns)."""
        return [c[len(LATENCY_PREFIX):] for c in self.columns if c.startswith(LATENCY_PREFIX)]

    def column(self, name: str) -> np.ndarray:
        """A whole metric column (read-only), indexed by arch index."""
        if name not in self._data:
            raise ConfigError(f"NAS-Bench-201 column {name!r} is unknown; choose one of {self.columns}")
        return self._data[name]

    def index(self, arch: Arch | str | int) -> int:
        """Official index of an arch (dict, cell string or index)."""
        if isinstance(arch, int) and not isinstance(arch, bool):
            index_to_arch(arch)  # range check
            return arch
        return arch_to_index(str_to_arch(arch) if isinstance(arch, str) else NB201Space().validate(arch))

    def arch(self, index: int) -> Arch:
        return index_to_arch(index)

    def query(self, arch: Arch | str | int, column: str) -> float:
        """One metric of one arch, e.g. `query(6111, "cifar10_test_200ep")` -> 94.3733."""
        return float(self.column(column)[self.index(arch)])


def run_bench(
    table: NB201Table | str | Path,
    method: str,
    queries: int,
    seeds: int | Iterable[int],
    search_metric: str = "cifar10_val_12ep",
    report_metric: str = "cifar10_test_200ep",
    latency_device: str | None = None,
    latency_limit_ms: float | None = None,
    checkpoints: Sequence[int] = (25, 50, 100, 200, 500),
    **method_kwargs: Any,
) -> dict[str, Any]:
    """Simulate `method` with a budget of `queries` unique archs for each seed.

    Returns (JSON-able) the mean and std (population) over seeds of the report metric of the
    final pick, and the same for the best-so-far pick (chosen by `search_metric`) after each
    checkpoint number of queries. The search sees only `search_metric` (and latency); the report
    metric is read for the picked archs only.
    """
    table = table if isinstance(table, NB201Table) else NB201Table(table)
    if "_test_" in search_metric or search_metric == report_metric:
        raise ConfigError(
            f"search_metric = {search_metric!r} would leak the test set into the search; "
            "search on a validation column (e.g. 'cifar10_val_12ep') and report the test column"
        )
    search_values, report_values = table.column(search_metric), table.column(report_metric)
    feasible_mask = np.ones(NUM_ARCHS, dtype=bool)
    if (latency_device is None) != (latency_limit_ms is None):
        raise ConfigError("latency_device and latency_limit_ms go together; give both or neither")
    if latency_device is not None:
        if latency_device not in table.devices:
            raise ConfigError(
                f"latency_device = {latency_device!r} is unknown; choose one of {table.devices}"
            )
        feasible_mask = table.column(LATENCY_PREFIX + latency_device) <= latency_limit_ms
        if not feasible_mask.any():
            raise ConfigError(
                f"no NB201 arch meets latency_limit_ms = {latency_limit_ms} on {latency_device}"
            )
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise ConfigError("run_bench needs at least one seed")
    checkpoints = sorted({c for c in checkpoints if 0 < c < queries} | {queries})
    kwargs = {**BENCH_DEFAULTS.get(method, {}), **method_kwargs}

    space = NB201Space()

    def score(arch: Arch) -> float:
        return float(search_values[arch_to_index(arch)])

    feasible = None
    if latency_device is not None:
        def feasible(arch: Arch) -> bool:
            return bool(feasible_mask[arch_to_index(arch)])

    finals: list[float] = []
    curves: dict[int, list[float]] = {c: [] for c in checkpoints}
    picks: list[int] = []
    for seed in seeds:
        result = make_search(method, space, score, feasible=feasible, budget=queries, seed=seed,
                             **kwargs).run()
        picked = [arch_to_index(result.records[i]["arch"]) for i in result.best_at]
        for c in checkpoints:
            curves[c].append(float(report_values[picked[min(c, len(picked)) - 1]]))
        finals.append(float(report_values[picked[-1]]))
        picks.append(picked[-1])

    def summary(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}

    optimum = int(np.flatnonzero(feasible_mask)[np.argmax(report_values[feasible_mask])])
    return {
        "method": method,
        "settings": kwargs,
        "queries": queries,
        "seeds": len(seeds),
        "search_metric": search_metric,
        "report_metric": report_metric,
        "latency": latency_device and {"device": latency_device, "limit_ms": latency_limit_ms},
        "final": summary(finals),
        "curve": [{"queries": c, **summary(curves[c])} for c in checkpoints],
        "optimum": {"index": optimum, report_metric: float(report_values[optimum])},
        "picks": picks,
    }
