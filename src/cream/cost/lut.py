"""Latency lookup tables and learned latency predictors, both usable as cost models.

* `LatencyTable` (`build_lut`): every layer candidate of a space timed once in context
  (`cream.cost.layers`); an arch's latency is the sum of its units plus a constant measured on a
  few whole archs (median of measured − sum), which covers the stem, the head and the
  framework's per-call overhead.
* `LatencyPredictor` (`fit_predictor`): a scikit-learn regressor on the arch's encoding (every
  gene, one-hot for op names, plus its analytic params and MACs), fitted on measured archs, for
  when a table is not additive enough or a family has none.

Both are stored as JSON with the space, the timing protocol and the machine/library versions. A
predictor file stores its training archs and latencies, not a pickled model: loading refits it
(deterministically), so reading a file never executes code from it.
`register_latency_file(space, name, path)` makes either a cost model `name` of the space's
family, so `search.limits: {name: [lo, hi]}` bounds it.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cream.atomic import atomic_write_text
from cream.cost.latency import TimingProtocol, environment, time_model, time_models
from cream.cost.layers import layer_units
from cream.cost.models import register_cost_model
from cream.errors import ConfigError, CreamError
from cream.models import build_model
from cream.spaces import get_space
from cream.spaces.base import Arch, Space, arch_key

LUT_KIND = "cream-latency-lut"
PREDICTOR_KIND = "cream-latency-predictor"


def model_input_size(model: Any) -> tuple[int, int, int]:
    """The (C, H, W) a built model of ours takes (its timm `pretrained_cfg`)."""
    return tuple(model.pretrained_cfg["input_size"])


def time_arch(space: Space, arch: Arch, protocol: TimingProtocol) -> dict[str, float]:
    """`time_model` of the standalone network of `arch` at its space's input size."""
    model = build_model(space, arch)
    return time_model(model, model_input_size(model), protocol)


#: the most standalone archs held in memory to be timed together (interleaved) by `time_archs`
ARCH_CHUNK = 64


def time_archs(space: Space, archs: Sequence[Arch], protocol: TimingProtocol) -> list[float]:
    """The protocol's statistic (ms) of each arch's standalone network, timed interleaved (`time_models`)
    in chunks of `ARCH_CHUNK` networks, so that the machine's drift falls on all of them alike."""
    out: list[float] = []
    for i in range(0, len(archs), ARCH_CHUNK):
        models = [build_model(space, a) for a in archs[i:i + ARCH_CHUNK]]
        out += [protocol.value(t) for t in time_models([(m, model_input_size(m)) for m in models], protocol)]
    return out


def time_units(space: Space, protocol: TimingProtocol, keys: Sequence[str] | None = None) -> dict[str, float]:
    """Time (ms, the protocol's statistic) of each unit of `space` (all of them, or those in `keys`), all
    interleaved (`time_models`)."""
    units = layer_units(space).space_units(space)
    keys = list(keys or units)
    timed = time_models([(units[k].build(), units[k].input_size) for k in keys], protocol)
    return {k: protocol.value(t) for k, t in zip(keys, timed, strict=True)}


@dataclass
class LatencyTable:
    """Per-unit times (the protocol's statistic) plus a measured constant; `predict(space, arch)` is their sum."""

    space: dict[str, Any]
    protocol: TimingProtocol
    units: dict[str, float]
    constant_ms: float
    calibration: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def unit_sum(self, space: Space, arch: Arch) -> float:
        return sum(self.units[k] for k in layer_units(space).arch_units(space, space.validate(arch)))

    def predict(self, space: Space, arch: Arch) -> float:
        return self.unit_sum(space, arch) + self.constant_ms

    def check_space(self, space: Space, where: str) -> None:
        """Refuse a space whose layers the table lacks (another space, input size or width)."""
        missing = sorted(set(layer_units(space).space_units(space)) - set(self.units))
        if missing:
            raise ConfigError(f"{where}: the latency table (space {self.space.get('name')!r}) has no entry for "
                              f"{len(missing)} layer candidates of space {space.name!r}, e.g. {missing[0]!r}; "
                              f"build one with `cream latency build-lut` for this space")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": LUT_KIND, "space": self.space, "protocol": self.protocol.to_dict(),
                "environment": self.environment, "constant_ms": self.constant_ms, "units": self.units,
                "calibration": self.calibration}


def table_from_times(space: Space, protocol: TimingProtocol, units: dict[str, float],
                     calibration: Sequence[tuple[Arch, float]]) -> LatencyTable:
    """A table from unit times and whole archs measured alongside (their residual median is the constant)."""
    table = LatencyTable(space.to_config(), protocol, dict(units), 0.0, environment=environment(protocol))
    sums = [table.unit_sum(space, arch) for arch, _ in calibration]
    table.constant_ms = statistics.median(ms - s for (_, ms), s in zip(calibration, sums, strict=True))
    table.calibration = [{"arch": arch, "measured_ms": ms, "unit_sum_ms": s}
                         for (arch, ms), s in zip(calibration, sums, strict=True)]
    return table


def build_lut(space: Space, protocol: TimingProtocol, calibration_archs: int = 5, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> LatencyTable:
    """Time every unit of `space` and `calibration_archs` random archs (seeded) for the constant, all in
    one interleaved batch (`time_models`), so that units and archs meet the same machine."""
    if calibration_archs < 1:
        raise ConfigError(f"calibration archs = {calibration_archs} must be >= 1 (the constant is measured)")
    units = layer_units(space).space_units(space)
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(calibration_archs)]
    models = [build_model(space, a) for a in archs]
    timed = time_models([(u.build(), u.input_size) for u in units.values()]
                        + [(m, model_input_size(m)) for m in models], protocol)
    ms = [protocol.value(t) for t in timed]
    if progress:
        progress(f"timed {len(units)} layer candidates and {len(archs)} calibration archs")
    return table_from_times(space, protocol, dict(zip(units, ms[:len(units)], strict=True)),
                            list(zip(archs, ms[len(units):], strict=True)))


# ---------------------------------------------------------------------------------------------
# Learned predictors


def arch_features(space: Space, arch: Arch) -> dict[str, Any]:
    """The encoding a predictor sees: every gene by position (names one-hot, numbers as they are), params, MACs."""
    feats: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        else:
            feats[prefix] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)

    arch = space.validate(arch)
    walk("", arch)
    feats.update({f"cost.{k}": float(v) for k, v in space.cost(arch).items()})
    return feats


ESTIMATORS = ("ridge", "gbr")


def make_regressor(estimator: str) -> Any:
    """A scikit-learn pipeline from `arch_features` dicts to ms: ridge (additive) or gradient-boosted trees."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline

    if estimator == "ridge":  # imports kept apart: sklearn.ensemble alone takes seconds to import
        import numpy as np
        from sklearn.linear_model import RidgeCV
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(DictVectorizer(sparse=False), StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    if estimator == "gbr":
        from sklearn.ensemble import GradientBoostingRegressor

        return make_pipeline(DictVectorizer(sparse=False), GradientBoostingRegressor(
            n_estimators=400, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=0))
    raise ConfigError(f"latency predictor estimator {estimator!r} is unknown; choose one of {list(ESTIMATORS)}")


@dataclass
class LatencyPredictor:
    """A regressor fitted on measured archs (refitted from them on load)."""

    space: dict[str, Any]
    protocol: TimingProtocol | None
    archs: list[Arch]
    latency_ms: list[float]
    estimator: str = "ridge"
    environment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.archs) != len(self.latency_ms) or len(self.archs) < 2:
            raise ConfigError(f"a latency predictor needs >= 2 measured archs with one latency each, got "
                              f"{len(self.archs)} archs and {len(self.latency_ms)} latencies")
        space = get_space(self.space)
        self._model = make_regressor(self.estimator)
        self._model.fit([arch_features(space, a) for a in self.archs], self.latency_ms)

    def predict(self, space: Space, arch: Arch) -> float:
        return float(self._model.predict([arch_features(space, arch)])[0])

    def predict_many(self, space: Space, archs: Sequence[Arch]) -> list[float]:
        return [float(v) for v in self._model.predict([arch_features(space, a) for a in archs])]

    def check_space(self, space: Space, where: str) -> None:
        if (space.family, space.name) != (self.space.get("family"), self.space.get("name")):
            raise ConfigError(f"{where}: the latency predictor was fitted on space {self.space.get('name')!r} "
                              f"(family {self.space.get('family')!r}), not on space {space.name!r} "
                              f"(family {space.family!r}); fit one for this space")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": PREDICTOR_KIND, "space": self.space,
                "protocol": self.protocol.to_dict() if self.protocol else None, "environment": self.environment,
                "estimator": self.estimator, "archs": self.archs, "latency_ms": self.latency_ms}


def fit_predictor(space: Space, protocol: TimingProtocol, archs: int = 200, seed: int = 0,
                  estimator: str = "ridge") -> LatencyPredictor:
    """Measure `archs` distinct random archs (seeded) and fit a predictor on them."""
    rng, drawn, seen = random.Random(seed), [], set()
    for _ in range(archs * 20):
        arch = space.sample(rng)
        if arch_key(arch) not in seen:
            seen.add(arch_key(arch))
            drawn.append(arch)
        if len(drawn) == archs:
            break
    ms = time_archs(space, drawn, protocol)
    return LatencyPredictor(space.to_config(), protocol, drawn, ms, estimator, environment(protocol))


# ---------------------------------------------------------------------------------------------
# Files and cost models


def save_latency_model(model: LatencyTable | LatencyPredictor, path: str | Path) -> None:
    """Write a table or predictor as JSON (atomically)."""
    atomic_write_text(path, json.dumps(model.to_dict(), indent=1))


def load_latency_model(path: str | Path, where: str = "latency file") -> LatencyTable | LatencyPredictor:
    """A table or predictor written by `save_latency_model`, or a one-line error saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CreamError(f"{where} '{path}' does not exist; build one with `cream latency build-lut SPACE` "
                         "or `cream latency fit SPACE`")
    try:
        d = json.loads(path.read_text())
        kind = d.get("kind")
        if kind == LUT_KIND:
            return LatencyTable(d["space"], TimingProtocol.from_dict(d["protocol"]),
                                {k: float(v) for k, v in d["units"].items()}, float(d["constant_ms"]),
                                d.get("calibration", []), d.get("environment", {}))
        if kind == PREDICTOR_KIND:
            proto = d.get("protocol")
            return LatencyPredictor(d["space"], TimingProtocol.from_dict(proto) if proto else None, d["archs"],
                                    [float(v) for v in d["latency_ms"]], d.get("estimator", "ridge"),
                                    d.get("environment", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CreamError(f"{where} '{path}' is not a readable latency table or predictor: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    raise CreamError(f"{where} '{path}' has kind {kind!r}; expected {LUT_KIND!r} or {PREDICTOR_KIND!r}")


def register_latency_file(space: Space, name: str, path: str | Path,
                          where: str = "search.cost_files") -> LatencyTable | LatencyPredictor:
    """Load the table or predictor at `path`, check it fits `space`, and offer it as cost `name`."""
    model = load_latency_model(path, where=f"{where}.{name}")
    model.check_space(space, f"{where}.{name}")
    register_cost_model(space.family, name, model.predict)
    return model


def predicted_vs_measured(space: Space, arch: Arch,
                          models: dict[str, LatencyTable | LatencyPredictor]) -> dict[str, float]:
    """`{<name>_predicted, <name>_measured}` (ms) of `arch` for each named table or predictor, measured
    with the protocol the table or predictor was built with (one without a protocol is only predicted)."""
    out = {}
    for name, model in models.items():
        out[f"{name}_predicted"] = model.predict(space, arch)
        if model.protocol is not None:
            out[f"{name}_measured"] = model.protocol.value(time_arch(space, arch, model.protocol))
    return out
