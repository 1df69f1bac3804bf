"""What every search method shares: evaluation bookkeeping, the result format and resumable state.

A method runs in *steps* (`batch` queries for random search and regularised evolution, one
generation for AutoFormer-style evolution). A step *proposes* its candidates (`evaluate` takes an
arch's place in `records` at once, so legality and budget see it) and the base scores them all
together at the end of the step with `score_many`, which may split them across processes: scores
arrive in proposal order, so the result does not depend on how (or where) a batch was scored.

After every `save_every` steps, the whole state (random stream, evaluated archs, method
bookkeeping) is written atomically to `state_path`; `run(resume=True)` continues from that file
and ends exactly where an uninterrupted run with the same seed ends. Only what was evaluated
after the last save is recomputed.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cream.cost.limits import Feasible
from cream.errors import CheckpointError, ConfigError
from cream.run_dir import atomic_write_text
from cream.spaces.base import Arch, Space, arch_key

Score = Callable[[Arch], float]
ScoreMany = Callable[[list[Arch]], list[float]]


def best_first(records: list[dict[str, Any]], positions: Iterable[int]) -> list[int]:
    """Positions in `records` sorted by score, best first (earlier first on ties): the one order of every ranking."""
    return sorted(positions, key=lambda i: (-records[i]["score"], i))


@dataclass
class SearchResult:
    """Every evaluated arch in query order, and the best-so-far after each query.

    `records[i]` = `{"arch", "score", "cost"}`; `best_at[q]` = position in `records` of the best
    arch after q + 1 queries (ties keep the earlier arch). A multi-objective method also gives the
    positions of its Pareto `front`.
    """

    method: str
    seed: int
    records: list[dict[str, Any]]
    best_at: list[int]
    stopped: str
    front: list[int] | None = None

    @property
    def best(self) -> dict[str, Any]:
        return self.records[self.best_at[-1]]

    def history(self) -> list[float]:
        """Best score so far after each query."""
        return [self.records[i]["score"] for i in self.best_at]

    def top(self, k: int) -> list[dict[str, Any]]:
        """The k best records (score descending, earlier first on ties), e.g. to test only those."""
        return [self.records[i] for i in best_first(self.records, range(len(self.records)))[:k]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seed": self.seed,
            "queries": len(self.records),
            "stopped": self.stopped,
            "best": self.best if self.records else None,
            "history": self.history(),
            "best_at": self.best_at,
            "records": self.records,
            **({"front": self.front} if self.front is not None else {}),
        }


class Search:
    """Base of the methods: subclasses define `_step()` and, if they keep any, their extra state."""

    method = "search"

    def __init__(
        self,
        space: Space,
        score: Score,
        *,
        feasible: Feasible | None = None,
        budget: int | None = None,
        seed: int = 0,
        state_path: str | os.PathLike[str] | None = None,
        save_every: int = 1,
        max_attempts: int = 1000,
        scoring: dict[str, Any] | None = None,
        batch: int = 1,
        score_many: ScoreMany | None = None,
        writer: bool = True,
    ) -> None:
        """`score_many(archs)` scores a batch at once (default: `score` on each); `writer=False` never writes
        `state_path` (the other ranks of a distributed search, which still read it on resume)."""
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ConfigError(f"search budget = {budget!r} is not allowed; use a positive number of queries")
        if save_every < 1 or max_attempts < 1:
            raise ConfigError(f"save_every = {save_every}, max_attempts = {max_attempts}: both must be >= 1")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"search batch = {batch!r} is not allowed; use a positive number of archs per step")
        self.space = space
        self.feasible = feasible
        self.budget = budget
        self.seed = seed
        self.state_path = Path(state_path) if state_path is not None else None
        self.save_every = save_every
        self.scoring = scoring or {}  # how `score` scores an arch: a resumed search must score the same way
        self.max_attempts = max_attempts
        self.batch = batch
        self.score_many: ScoreMany = score_many or (lambda archs: [score(a) for a in archs])
        self.writer = writer
        self.rng = random.Random(seed)
        self.records: list[dict[str, Any]] = []
        self.best_at: list[int] = []
        self.steps = 0
        self.stopped: str | None = None
        self._positions: dict[Any, int] = {}
        self._pending: list[int] = []  # positions proposed in this step, not scored yet

    # ---- configuration and state -------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """What must match for a saved state to be resumed (subclasses add their parameters)."""
        return {"space": self.space.name, "seed": self.seed, "budget": self.budget,
                "max_attempts": self.max_attempts, "batch": self.batch, "scoring": self.scoring}

    def state_dict(self) -> dict[str, Any]:
        version, mt, gauss = self.rng.getstate()
        return {
            "method": self.method,
            "config": self.config(),
            "rng": [version, list(mt), gauss],
            "records": self.records,
            "best_at": self.best_at,
            "steps": self.steps,
            "stopped": self.stopped,
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, now = state.get("config") or {}, self.config()
        if state.get("method") != self.method:
            raise CheckpointError(f"search state '{self.state_path}' is for method {state.get('method')!r}; "
                                  f"this search is {self.method!r}")
        differs = _first_difference(saved, now)
        if differs is not None:
            key, was, new = differs
            raise CheckpointError(f"search state '{self.state_path}' was made with {key} = {was!r}; this search "
                                  f"has {new!r} (a resumed search must search and score as it began)")
        version, mt, gauss = state["rng"]
        self.rng.setstate((version, tuple(mt), gauss))
        self.records = list(state["records"])
        self.best_at = list(state["best_at"])
        self.steps = state["steps"]
        self.stopped = state["stopped"]
        self._positions = {arch_key(r["arch"]): i for i, r in enumerate(self.records)}
        self._load_extra_state(state["extra"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass

    def save(self) -> None:
        """Write the state file atomically, so a kill never leaves half a file."""
        assert self.state_path is not None
        if not self.writer:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.state_path, json.dumps(self.state_dict()))

    def load(self) -> None:
        assert self.state_path is not None
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"search state '{self.state_path}' cannot be read: {e}") from None
        self.load_state_dict(state)

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, resume: bool = False) -> SearchResult:
        """Run to the end (budget, generations or an exhausted space) and return the result."""
        if resume and self.state_path is not None and self.state_path.is_file():
            self.load()
        while self.stopped is None:
            self.step()
        return self.result()

    def step(self) -> None:
        """One step (a batch of queries, or a generation for evolution); saves the state when due."""
        self._step()
        self.score_pending()
        self.steps += 1
        if self.stopped is None and self.budget_spent:
            self.stopped = "budget"
        if self.state_path is not None and (self.stopped or self.steps % self.save_every == 0):
            self.save()

    def result(self) -> SearchResult:
        return SearchResult(self.method, self.seed, list(self.records), list(self.best_at),
                            self.stopped or "running")

    def _step(self) -> None:
        raise NotImplementedError

    # ---- evaluation --------------------------------------------------------------------------
    @property
    def budget_spent(self) -> bool:
        return self.budget is not None and len(self.records) >= self.budget

    def is_legal(self, arch: Arch) -> bool:
        """Not evaluated before, and inside the constraint."""
        return arch_key(arch) not in self._positions and (self.feasible is None or self.feasible(arch))

    def evaluate(self, arch: Arch) -> int | None:
        """Propose a legal arch and return its position in `records`; None (and no query) if illegal.

        Its score is filled in by `score_pending` (at the latest when the step ends)."""
        if self.budget_spent or not self.is_legal(arch):
            return None
        pos = len(self.records)
        self.records.append({"arch": arch, "score": None, "cost": self.space.cost(arch)})
        self._positions[arch_key(arch)] = pos
        self._pending.append(pos)
        return pos

    def score_pending(self) -> None:
        """Score the proposed archs as one batch, in proposal order, and extend the best-so-far."""
        if not self._pending:
            return
        scores = self.score_many([self.records[i]["arch"] for i in self._pending])
        for pos, score in zip(self._pending, scores, strict=True):
            self.records[pos]["score"] = float(score)
            if not self.best_at or self.records[pos]["score"] > self.records[self.best_at[-1]]["score"]:
                self.best_at.append(pos)
            else:
                self.best_at.append(self.best_at[-1])
        self._pending = []

    def evaluate_random(self) -> int | None:
        """Evaluate a random legal arch; None (and `stopped = "exhausted"`) after `max_attempts` misses."""
        for _ in range(self.max_attempts):
            pos = self.evaluate(self.space.sample(self.rng))
            if pos is not None:
                return pos
        if not self.budget_spent:
            self.stopped = "exhausted"
        return None

    def ranked(self, positions: list[int]) -> list[int]:
        """Positions sorted best first (earlier first on ties)."""
        return best_first(self.records, positions)


def _first_difference(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key whose value differs between two (nested) dicts, with both values."""
    for key in sorted({**saved, **now}, key=str):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _first_difference(a, b, f"{prefix}{key}.")
            if inner is not None:
                return inner
        elif a != b:
            return f"{prefix}{key}", a, b
    return None
