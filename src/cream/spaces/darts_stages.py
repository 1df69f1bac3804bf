"""The staged DARTS cell space CDARTS searches: one DARTS genotype per stage (spec §6.1).

A network of this space is cut into stages of cells; every stage but the last ends with its
reduction cell (stride 2, channels doubled), and each stage has a normal and a reduction cell of
its own (`cream.spaces.darts`'s genotype form). An arch lists them in stage order:

    {"stages": [{"normal": [...], "reduce": [...]}, {...}, {...}]}

The space holds the sizes of CDARTS's two networks: `search_cells` (the mixed search network's
cells per stage, default [3, 3, 2]) and `eval_cells` (the evaluation network's, and the default
depth of a retrained model: [7, 7, 6]), both at `channels` initial channels.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from cream.errors import ArchError, ConfigError, CreamError
from cream.registry import register_family, register_space
from cream.spaces.base import Arch, check_keys
from cream.spaces.darts import CELLS, NODES, OPS, validate_genotype

#: the ops a genotype may choose (`none` is only a mixed edge's)
GENE_OPS = OPS[1:]


def stage_cells(cells: Sequence[int]) -> list[tuple[int, bool]]:
    """(stage, reduction) of every cell of a network with `cells[s]` cells in stage s: each stage but the last
    ends with its reduction cell."""
    return [(s, s < len(cells) - 1 and i == n - 1) for s, n in enumerate(cells) for i in range(n)]


def _check_cells(key: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) < 1 \
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value):
        raise ConfigError(f"space.{key} = {value!r} is not allowed; use a list of cell counts >= 1, one per stage")
    return tuple(value)


class DartsStagesSpace:
    """One DARTS genotype per stage; 8 cells (C=16, [3, 3, 2]) searched, 20 ([7, 7, 6]) evaluated by default."""

    family = "darts_stages"

    def __init__(self, num_classes: int = 10, input_size: int = 32, channels: int = 16,
                 search_cells: Sequence[int] = (3, 3, 2), eval_cells: Sequence[int] = (7, 7, 6),
                 name: str = "cdarts-darts") -> None:
        for key, value in (("num_classes", num_classes), ("input_size", input_size), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"space.{key} = {value!r} is not allowed; use a positive integer")
        self.search_cells, self.eval_cells = _check_cells("search_cells", search_cells), \
            _check_cells("eval_cells", eval_cells)
        if len(self.eval_cells) != len(self.search_cells):
            raise ConfigError(f"space.eval_cells = {list(eval_cells)} must have one count per stage of "
                              f"space.search_cells = {list(search_cells)}")
        for s, (n_search, n_eval) in enumerate(zip(self.search_cells, self.eval_cells, strict=True)):
            # the two networks meet at stage ends (earlier stages run as evaluation cells in the search network),
            # so a stage's output widths must agree: a one-cell reducing stage in both or in neither
            if n_eval < n_search or (s < len(self.search_cells) - 1 and (n_search == 1) != (n_eval == 1)):
                raise ConfigError(f"space.eval_cells = {list(eval_cells)} does not fit space.search_cells = "
                                  f"{list(search_cells)} at stage {s}: use at least as many evaluation cells, and "
                                  "one cell in a reducing stage in both networks or in neither")
        self.num_classes, self.input_size, self.channels, self.name = num_classes, input_size, channels, name

    @property
    def stages(self) -> int:
        return len(self.search_cells)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DartsStagesSpace) and self.to_config() == other.to_config()

    def to_config(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "num_classes": self.num_classes,
                "input_size": self.input_size, "channels": self.channels, "search_cells": list(self.search_cells),
                "eval_cells": list(self.eval_cells)}

    # --- archs -----------------------------------------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        check_keys(arch, ["stages"], where="staged DARTS arch")
        stages = arch["stages"]
        if not isinstance(stages, list) or len(stages) != self.stages:
            raise ArchError(f"staged DARTS arch field 'stages' = {stages!r} must list {self.stages} genotypes")
        try:
            return {"stages": [validate_genotype(g) for g in stages]}
        except ConfigError as e:
            raise ArchError(str(e)) from None

    def _cell(self, rng: random.Random) -> list[list[Any]]:
        pairs: list[list[Any]] = []
        for node in range(2, 2 + NODES):
            for j in rng.sample(range(node), 2):
                pairs.append([rng.choice(GENE_OPS), j])
        return pairs

    def sample(self, rng: random.Random) -> Arch:
        return {"stages": [{cell: self._cell(rng) for cell in CELLS} for _ in range(self.stages)]}

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """One (op, input) pair of one cell of one stage gets another op."""
        out = {"stages": [{c: [list(p) for p in g[c]] for c in CELLS} for g in arch["stages"]]}
        pair = out["stages"][rng.randrange(self.stages)][rng.choice(CELLS)][rng.randrange(2 * NODES)]
        pair[0] = rng.choice([op for op in GENE_OPS if op != pair[0]])
        return out

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Each stage's cells from one parent or the other (a cell is kept whole: its pairs depend on each other)."""
        return {"stages": [{c: [list(p) for p in rng.choice((ga, gb))[c]] for c in CELLS}
                           for ga, gb in zip(a["stages"], b["stages"], strict=True)]}

    def num_archs(self) -> int:
        per_node = [len(GENE_OPS) ** 2 * node * (node - 1) // 2 for node in range(2, 2 + NODES)]
        cell = 1
        for n in per_node:
            cell *= n
        return cell ** (2 * self.stages)

    def choices(self) -> dict[str, tuple[Any, ...]]:
        return {f"stages[{s}].{c}[{m}]": GENE_OPS for s in range(self.stages) for c in CELLS for m in range(2 * NODES)}

    def arch_choices(self, arch: Arch) -> dict[str, tuple[Any, ...]]:
        return {f"stages[{s}].{c}[{m}]": (p[0],) for s, g in enumerate(arch["stages"]) for c in CELLS
                for m, p in enumerate(g[c])}

    def restrict(self, choices: Mapping[str, Sequence[Any]]) -> DartsStagesSpace:
        raise CreamError(f"space '{self.name}' cannot be restricted (no strategy narrows a DARTS cell space)")

    def cost(self, arch: Arch) -> dict[str, int]:
        """Params of the retrained network (`eval_cells` at `channels`, no auxiliary head; BN affine counted),
        in closed form; MACs are not counted (0)."""
        arch = self.validate(arch)
        c_curr = 3 * self.channels
        params = 27 * c_curr + 2 * c_curr  # stem conv + BN
        c_pp, c_p, c_curr = c_curr, c_curr, self.channels
        for stage, reduction in stage_cells(self.eval_cells):
            c_curr = 2 * c_curr if reduction else c_curr
            params += (c_pp + 2) * c_curr + (c_p + 2) * c_curr  # the two input adapters (either kind)
            for op, j in arch["stages"][stage]["reduce" if reduction else "normal"]:
                params += _op_params(op, c_curr, 2 if reduction and j < 2 else 1)
            c_pp, c_p = c_p, NODES * c_curr
        return {"params": params + c_p * self.num_classes + self.num_classes, "macs": 0}


def _op_params(op: str, c: int, stride: int) -> int:
    """Params of one DARTS op at c channels (as `cream.models.darts.make_op` builds it)."""
    if op == "skip_connect":
        return c * c + 2 * c if stride == 2 else 0  # a factorized reduction at stride 2
    if op.startswith(("sep_conv", "dil_conv")):
        k = int(op[-1])
        one = c * k * k + c * c + 2 * c  # depthwise, pointwise, BN
        return 2 * one if op.startswith("sep") else one
    return 0  # pools


def from_config(**cfg: Any) -> DartsStagesSpace:
    allowed = ("name", "num_classes", "input_size", "channels", "search_cells", "eval_cells")
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f"space keys {unknown} are unknown for family 'darts_stages'; allowed {list(allowed)}")
    return DartsStagesSpace(**cfg)


register_space("cdarts-darts", DartsStagesSpace)
register_family("darts_stages", from_config)
