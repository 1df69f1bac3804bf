"""The search-space protocol shared by every family.

A space is plain data: it knows its choices and how to sample, mutate, cross over, validate
and count an architecture ("arch"). An arch is a small JSON-serialisable dict. Nothing here
imports torch, so searches over a space are fast and easy to test.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from cream.errors import ArchError, ConfigError

Arch = dict[str, Any]


@runtime_checkable
class Space(Protocol):
    """What search, supernets and the CLI need from a search space."""

    name: str
    family: str  # the key of its config parser, supernets and model builder in `cream.registry`

    def sample(self, rng: random.Random) -> Arch:
        """Draw one arch uniformly from the space."""

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """Return a new arch close to `arch` (the family's own mutation rule)."""

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch | None:
        """Mix two parents gene by gene; None where they are not compatible."""

    def validate(self, arch: Arch) -> Arch:
        """Return the arch in canonical form, or raise `ArchError` naming field, value and choices."""

    def cost(self, arch: Arch) -> dict[str, int]:
        """Analytic `{"params": int, "macs": int}` of the arch, without building a model."""

    def num_archs(self) -> int:
        """Number of distinct archs in the space."""

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Each decision of the space (named as `validate`'s errors name it) and the values it allows."""

    def arch_choices(self, arch: Arch) -> dict[str, tuple[Any, ...]]:
        """The values a valid `arch` takes for each decision (a gene shared by several layers may take several)."""

    def restrict(self, choices: Mapping[str, Sequence[Any]]) -> Space:
        """The same space, with the same supernet shape, allowing only `choices[d]` for each decision d named.

        Sampling, mutation, crossover, validation and counting of the result stay inside it, so a
        supernet trained on the wide space serves the narrow one (a shrinking strategy narrows it).
        """

    def to_config(self) -> dict[str, Any]:
        """A JSON/YAML-safe mapping that `cream.spaces.get_space` rebuilds into an equal space."""


@runtime_checkable
class EvolvableSpace(Space, Protocol):
    """A space whose ranges a space search can move (AutoFormerV2/S3): its dimensions can be read and replaced.

    Each dimension is also a decision of `choices()`/`restrict()`, so fixing it to one value is `restrict`.
    """

    def dimensions(self) -> dict[str, list[Any]]:
        """Each searchable dimension's choices, in order (smallest first)."""

    def with_dimensions(self, mapping: Mapping[str, Sequence[Any]]) -> Space:
        """A new, validated space of the same family with the named dimensions' choices replaced (values
        outside the current range allowed; its supernet shape fits the new choices); `ConfigError` otherwise."""


def space_from_config(cls: type, cfg: dict[str, Any], required: Sequence[str], hint: str = "") -> Any:
    """A dataclass space `cls` (with a `family` class attribute) from a config mapping: unknown or missing keys
    raise `ConfigError` naming them; `name` defaults to the family."""
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise ConfigError(f"space keys {unknown} are unknown for family '{cls.family}'; allowed: {sorted(fields)}")
    for key in required:
        if key not in cfg:
            raise ConfigError(f"space.{key} is required for family '{cls.family}'{hint}")
    cfg.setdefault("name", cls.family)
    return cls(**cfg)


def arch_key(arch: Arch) -> Hashable:
    """A hashable identity for an arch (canonical JSON), used to skip visited archs."""
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


def check_choice(field: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return `value` if it is one of `choices`, else raise an `ArchError` that lists them."""
    for c in choices:
        if value == c and type(value) is not bool:
            return c
    raise ArchError(f"arch field '{field}' = {value!r} is not allowed; choose one of {list(choices)}")


def narrowed(current: dict[str, tuple[Any, ...]], wanted: Mapping[str, Sequence[Any]],
             where: str = "restrict") -> dict[str, tuple[Any, ...]]:
    """`current` with each decision named in `wanted` cut down to those values, in the space's own order.

    A `ConfigError` names an unknown decision, a value the space does not allow there, or an empty subset.
    """
    if not isinstance(wanted, Mapping):
        raise ConfigError(f"{where} needs a mapping of decision -> allowed values, got {type(wanted).__name__}")
    out = dict(current)
    for d, values in wanted.items():
        if d not in current:
            raise ConfigError(f"{where}: decision {d!r} is unknown; the space has {list(current)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ConfigError(f"{where}: {d} = {values!r} must be a list of allowed values")
        bad = [v for v in values if not any(v == c and type(v) is not bool for c in current[d])]
        if bad:
            raise ConfigError(f"{where}: {d} = {list(values)!r} allows {bad!r}, which the space does not; "
                              f"choose a subset of {list(current[d])}")
        kept = tuple(c for c in current[d] if c in values)
        if not kept:
            raise ConfigError(f"{where}: {d} = {list(values)!r} must keep at least one of {list(current[d])}")
        out[d] = kept
    return out


def plain(obj: Any) -> Any:
    """`obj` with every tuple turned into a list, recursively (for JSON and safe YAML)."""
    if isinstance(obj, (list, tuple)):
        return [plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def check_keys(arch: Any, required: Sequence[str], where: str = "arch") -> None:
    """Raise `ArchError` unless `arch` is a dict with exactly the `required` keys."""
    if not isinstance(arch, dict):
        raise ArchError(f"{where} must be a JSON object with keys {list(required)}, got {type(arch).__name__}")
    missing = [k for k in required if k not in arch]
    extra = [k for k in arch if k not in required]
    if missing or extra:
        raise ArchError(
            f"{where} has missing keys {missing} and unknown keys {extra}; expected exactly {list(required)}"
        )


def read_arch_file(path: str) -> tuple[Arch, Any]:
    """The arch of an arch JSON file (the arch itself or a file with an "arch" entry), and the whole document.

    The document carries what else a search's arch.json records (e.g. the space it names).
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ArchError(f"arch file '{path}' does not exist") from None
    except json.JSONDecodeError as e:
        raise ArchError(f"arch file '{path}' is not valid JSON: {e}") from None
    if isinstance(data, dict) and "arch" in data and isinstance(data["arch"], dict):
        return data["arch"], data
    return data, data


def load_arch(path: str) -> Arch:
    """Read an arch JSON file (either the arch itself or a file with an "arch" entry)."""
    return read_arch_file(path)[0]
