import json
from random import Random

import pytest

from cream.atomic import is_temp
from cream.errors import CheckpointError, ConfigError
from cream.search import METHODS, EvolutionSearch, SearchResult, cost_window, make_search, search
from cream.spaces.base import arch_key
from cream.spaces.nb201 import NB201Space, arch_to_index

WEIGHT = {"none": 0.0, "skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 3.5, "avg_pool_3x3": 0.5}
SMALL = {"random": {}, "regularized": {"population": 8, "sample": 3},
         "evolution": {"population": 10, "parents": 4, "mutations": 5, "crossovers": 5, "generations": None},
         "nsga2": {"population": 8, "objectives": ["macs"]}}


def score(arch):
    """A smooth synthetic score with unique values (index as tie-break)."""
    return sum(WEIGHT[op] * (e + 1) for e, op in enumerate(arch["ops"])) + arch_to_index(arch) * 1e-6


class Interrupt(Exception):
    pass


def interrupting(after):
    calls = []

    def fn(arch):
        if len(calls) == after:
            raise Interrupt
        calls.append(arch)
        return score(arch)

    return fn


@pytest.mark.parametrize("method", sorted(METHODS))
def test_reproducible_unique_and_within_budget(method):
    space = NB201Space()
    a = search(method, space, score, budget=120, seed=3, **SMALL[method]).to_dict()
    b = search(method, space, score, budget=120, seed=3, **SMALL[method]).to_dict()
    c = search(method, space, score, budget=120, seed=4, **SMALL[method]).to_dict()
    assert a == b and a["records"] != c["records"]
    keys = [arch_key(r["arch"]) for r in a["records"]]
    assert len(keys) == len(set(keys)) == 120 and a["stopped"] == "budget"
    assert a["best"]["score"] == max(r["score"] for r in a["records"]) == a["history"][-1]
    assert all(x <= y for x, y in zip(a["history"], a["history"][1:], strict=False))
    assert all(r["cost"] == space.cost(r["arch"]) for r in a["records"])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_constraint_is_respected(method):
    space = NB201Space()
    feasible = cost_window(space, {"params": (0, 400_000)})

    def guarded(arch):
        assert feasible(arch), "an infeasible arch was evaluated"
        return score(arch)

    out = search(method, space, guarded, feasible=feasible, budget=80, seed=0, **SMALL[method])
    assert len(out.records) == 80 and all(r["cost"]["params"] <= 400_000 for r in out.records)


def test_evolution_beats_random_on_a_smooth_score():
    space = NB201Space()
    evo = [search("evolution", space, score, budget=150, seed=s, **SMALL["evolution"]).best["score"]
           for s in range(5)]
    rnd = [search("random", space, score, budget=150, seed=s).best["score"] for s in range(5)]
    assert sum(evo) > sum(rnd)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("after", [7, 23, 41])
def test_resume_gives_the_uninterrupted_result(tmp_path, method, after):
    space, kwargs = NB201Space(), {"budget": 60, "seed": 5, "save_every": 2, **SMALL[method]}
    reference = search(method, space, score, **kwargs).to_dict()
    state = tmp_path / "state.json"
    with pytest.raises(Interrupt):
        search(method, space, interrupting(after), state_path=state, **kwargs)
    assert not [p for p in tmp_path.iterdir() if is_temp(p)]  # every write was renamed into place
    saved = len(json.loads(state.read_text())["records"]) if state.is_file() else 0  # none before step 1
    assert saved <= after
    calls = []

    def counted(arch):
        calls.append(arch)
        return score(arch)

    resumed = search(method, space, counted, state_path=state, resume=True, **kwargs).to_dict()
    assert resumed == reference
    assert len(calls) == 60 - saved  # the saved part is not evaluated again
    again = search(method, space, interrupting(0), state_path=state, resume=True, **kwargs).to_dict()
    assert again == reference  # a finished state returns its result without evaluating


def test_resume_refuses_another_configuration(tmp_path):
    state = tmp_path / "s.json"
    search("random", NB201Space(), score, budget=20, seed=0, state_path=state)
    with pytest.raises(CheckpointError, match="was made with seed = 0; this search has 1"):
        search("random", NB201Space(), score, budget=20, seed=1, state_path=state, resume=True)


def test_evolution_generations_and_spec_defaults():
    space = NB201Space()
    evo = EvolutionSearch(space, score, generations=3, population=10, parents=4, mutations=4, crossovers=3)
    out = evo.run()
    assert out.stopped == "generations" and len(out.records) == 10 * 4
    # The last generation is ranked: the parents hold the overall best.
    assert evo.records[evo.parents[0]]["score"] == out.best["score"]
    assert len(evo.parents) == 4
    spec = EvolutionSearch(space, score)
    assert (spec.generations, spec.population_size, spec.parents_size, spec.mutations, spec.crossovers,
            spec.mutation_attempts, spec.crossover_attempts) == (20, 50, 10, 25, 25, 250, 250)


class ToySpace:
    """Variable-depth archs; crossover only between equal depths; mutation probability passed through."""

    name = "toy"

    def __init__(self):
        self.mutate_probs = []

    def sample(self, rng):
        depth = rng.choice([2, 3])
        return {"depth": depth, "w": [rng.randrange(4) for _ in range(depth)]}

    def mutate(self, arch, rng, p=0.5):
        self.mutate_probs.append(p)
        w = [rng.randrange(4) if rng.random() < p else x for x in arch["w"]]
        return {"depth": arch["depth"], "w": w}

    def crossover(self, a, b, rng):
        if a["depth"] != b["depth"]:
            return None
        return {"depth": a["depth"], "w": [rng.choice(p) for p in zip(a["w"], b["w"], strict=True)]}

    def validate(self, arch):
        return arch

    def cost(self, arch):
        return {"params": sum(arch["w"]), "macs": len(arch["w"])}


def test_evolution_on_a_small_space_with_incompatible_parents():
    space = ToySpace()
    out = search("evolution", space, lambda a: sum(a["w"]) + 0.1 * a["depth"], seed=1, generations=30,
                 population=6, parents=4, mutations=3, crossovers=3, mutate_kwargs={"p": 0.9})
    assert all(len(r["arch"]["w"]) == r["arch"]["depth"] for r in out.records)
    assert set(space.mutate_probs) == {0.9}
    assert out.stopped == "exhausted" and len(out.records) == 4**2 + 4**3
    assert out.best["arch"] == {"depth": 3, "w": [3, 3, 3]}


def test_bad_settings():
    with pytest.raises(ConfigError, match="needs a budget"):
        make_search("random", NB201Space(), score)
    with pytest.raises(ConfigError, match="method 'bayes' is unknown"):
        make_search("bayes", NB201Space(), score, budget=3)
    with pytest.raises(ConfigError, match="budget = 0"):
        make_search("random", NB201Space(), score, budget=0)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        make_search("random", NB201Space(), score, budget=3, population=3)


def test_state_dict_round_trip_continues_identically():
    space = NB201Space()
    a = make_search("regularized", space, score, budget=40, seed=2)
    for _ in range(15):
        a.step()
    b = make_search("regularized", space, score, budget=40, seed=2)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert len(b.records) == 15
    assert b.run().to_dict() == a.run().to_dict()


def batches_of(sizes):
    """A batch scorer that records the size of every batch it is given."""
    def score_many(archs):
        sizes.append(len(archs))
        return [score(a) for a in archs]

    return score_many


@pytest.mark.parametrize("method", ["random", "board"])
def test_batch_size_does_not_change_random_or_board_results(method):
    space = NB201Space()
    extra = {"board": [{"arch": space.sample(Random(i))} for i in range(11)]} if method == "board" \
        else {"budget": 23}
    one = make_search(method, space, score, seed=5, **extra).run().to_dict()
    sizes: list[int] = []
    four = make_search(method, space, score, seed=5, batch=4, score_many=batches_of(sizes), **extra).run().to_dict()
    assert four == one
    assert max(sizes) == 4 and sum(sizes) == len(one["records"])  # scored in batches of (up to) four


def test_batched_regularized_evolution_breeds_from_the_scored_population(tmp_path):
    space = NB201Space()
    kwargs = {"budget": 40, "seed": 2, "population": 8, "sample": 3, "batch": 4}
    sizes: list[int] = []
    a = make_search("regularized", space, score, score_many=batches_of(sizes), **kwargs).run().to_dict()
    assert sizes == [4] * 10 and a == search("regularized", space, score, **kwargs).to_dict()
    assert a["records"] != search("regularized", space, score, **{**kwargs, "batch": 1}).to_dict()["records"]
    # resumable like every method: interrupted inside a batch, it ends where the uninterrupted run ends
    path = tmp_path / "state.json"
    with pytest.raises(Interrupt):
        make_search("regularized", space, interrupting(21), state_path=path, save_every=1, **kwargs).run()
    assert make_search("regularized", space, score, state_path=path, **kwargs).run(resume=True).to_dict() == a


def test_evolution_scores_each_generation_as_one_batch():
    sizes: list[int] = []
    kwargs = {"population": 10, "parents": 4, "mutations": 5, "crossovers": 5, "generations": 3, "seed": 1}
    a = make_search("evolution", NB201Space(), score, score_many=batches_of(sizes), **kwargs).run().to_dict()
    assert sizes == [10] * 4 and a == search("evolution", NB201Space(), score, **kwargs).to_dict()


def test_bad_batch():
    with pytest.raises(ConfigError, match="batch = 0"):
        make_search("random", NB201Space(), score, budget=3, batch=0)


def test_top_is_best_first_with_ties_to_the_earlier_record():
    records = [{"arch": {"i": i}, "score": s, "cost": {}} for i, s in enumerate([0.2, 0.9, 0.5, 0.9, 0.1])]
    result = SearchResult("random", 0, records, [0, 1, 1, 1, 1], "budget")
    assert [r["arch"]["i"] for r in result.top(3)] == [1, 3, 2]
    assert [r["arch"]["i"] for r in result.top(10)] == [1, 3, 2, 0, 4]
