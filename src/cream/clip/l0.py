"""Automatic weight inheritance (TinyCLIP, CoFi-style): hard-concrete masks, expected size, Lagrangian.

`L0Masks` holds log_alpha for the `hidden`, `heads` and `intermediate` masks of each pruned
tower and two Lagrange multipliers per sparsity group (one group when the towers are pooled).
A training step samples masks (`sample`), runs the model under them (`call`), and adds
`lagrangian(step)` to the distillation loss. The multipliers must be *ascended*: torch rejects a
negative learning rate, so `param_groups` puts them in a group with `maximize=True` (the
original's "lr -0.02"), which every torch optimizer that has a `maximize` option honours per
group. At the prune step `deterministic()` gives the masks that `prune` folds into a smaller
dense model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cream.clip.prune import Masks, Tower, masked_call, prune, tower_shape, towers
from cream.errors import ConfigError

LIMIT_LOW, LIMIT_HIGH = -0.1, 1.1
EPSILON = 1e-6
BETA = 2.0 / 3.0
INIT_LOG_ALPHA = 10.0
INIT_LAMBDA = 10.0
DETERMINISTIC_FACTOR = 0.8
KINDS = ("hidden", "heads", "intermediate")


def sample_hard_concrete(log_alpha: torch.Tensor) -> torch.Tensor:
    """One training-time gate draw: stretched, clamped concrete; exact 0 and 1 have mass."""
    u = torch.empty_like(log_alpha).uniform_(EPSILON, 1.0 - EPSILON)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return (s * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW).clamp(0.0, 1.0)


def keep_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z != 0) = 1 - cdf(0) of the stretched concrete, clamped like the original to [eps, 1 - eps]."""
    x = (0.0 - LIMIT_LOW) / (LIMIT_HIGH - LIMIT_LOW)
    cdf = torch.sigmoid(math.log(x / (1.0 - x)) * BETA - log_alpha).clamp(EPSILON, 1.0 - EPSILON)
    return 1.0 - cdf


def deterministic_mask(log_alpha: torch.Tensor) -> torch.Tensor:
    """The prune-step mask of one group: soft scores, with the expected number of zeros set to 0."""
    soft = torch.sigmoid(log_alpha.detach() / BETA * DETERMINISTIC_FACTOR)
    zeros = round(log_alpha.numel() - keep_probability(log_alpha.detach()).sum().item())
    if zeros > 0:
        soft = soft.clone()
        soft[torch.topk(soft, zeros, largest=False).indices] = 0.0
    return soft


def tower_params(model: nn.Module, tower: Tower) -> int:
    """Counted parameters of a tower: everything except the text token-embedding table (the
    convention behind the TinyCLIP names, spec §5.4)."""
    skip = f"{tower.prefix}token_embedding.weight"
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(tower.owns) and n != skip)


class _TowerCounts:
    """Parameter counts per head, per neuron and per hidden dim of one tower (for the expected size).

    With h = expected kept hidden dims, a head of dim d costs 4*d*h + 3*d (qkv rows, out_proj
    columns, qkv bias), a neuron 2*h + 1; `per_hidden` collects what scales with h alone
    (LayerNorms, output biases, embeddings, projections)."""

    def __init__(self, model: nn.Module, tower: Tower) -> None:
        shape = tower_shape(model, tower)
        d = shape.hidden
        self.sizes = {"heads": [la.heads for la in shape.layers],
                      "intermediate": [la.intermediate for la in shape.layers]}
        self.head_dims = torch.cat([torch.full((la.heads,), float(la.head_dim)) for la in shape.layers])
        per_hidden = 0
        for layer, block in zip(shape.layers, model.get_submodule(tower.blocks).resblocks, strict=True):
            total = sum(p.numel() for p in block.parameters())
            linked = layer.heads * (4 * layer.head_dim * d + 3 * layer.head_dim) + layer.intermediate * (2 * d + 1)
            per_hidden += (total - linked) // d
        for name, axis in tower.hidden_params:
            if name != f"{tower.prefix}token_embedding.weight":
                p = model.get_parameter(name)
                per_hidden += p.numel() // p.shape[axis]
        self.per_hidden = per_hidden + 2 * len(tower.norms)
        self.full = tower_params(model, tower)
        self.fixed = 0
        ones = {k: torch.ones(n) for k, n in (("hidden", d), ("heads", sum(self.sizes["heads"])),
                                               ("intermediate", sum(self.sizes["intermediate"])))}
        self.fixed = self.full - round(self.count(ones).item())

    def count(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expected parameters from flat keep scores (binary masks give the exact pruned count)."""
        h = scores["hidden"].sum()
        head_width = scores["heads"] @ self.head_dims.to(scores["heads"])
        neurons = scores["intermediate"].sum()
        return h * (self.per_hidden + 4 * head_width + 2 * neurons) + 3 * head_width + neurons + self.fixed


class L0Masks(nn.Module):
    """Hard-concrete masks and Lagrange multipliers for the transformer towers of an open_clip CLIP.

    target_sparsity is relative to `reference_params` (default: the model's counted parameters
    now), so a later stage of a 100 -> 75 -> 50 % schedule passes the original size and 0.5.
    start_sparsity defaults to the current sparsity; the target ramps linearly to target_sparsity
    over warmup_steps. pooled=True joins the towers into one sparsity (the total-loss flag).
    two_sided=False is the spec's Lagrangian, which only penalises too little sparsity; True is CoFi's
    l1 * (t - s) + l2 * (t - s)^2, which also pulls an overshoot back (short runs overshoot the target)."""

    def __init__(self, model: nn.Module, target_sparsity: float, *, tower_names: tuple[str, ...] = ("image", "text"),
                 warmup_steps: int = 0, start_sparsity: float | None = None, pooled: bool = True,
                 reference_params: dict[str, int] | None = None, init_log_alpha: float = INIT_LOG_ALPHA,
                 two_sided: bool = False) -> None:
        super().__init__()
        if not 0.0 <= target_sparsity < 1.0:
            raise ConfigError(f"target_sparsity = {target_sparsity!r} is not allowed; use a number in [0, 1)")
        if warmup_steps < 0:
            raise ConfigError(f"warmup_steps = {warmup_steps!r} is not allowed; use an integer >= 0")
        self.towers = towers(model, tower_names)
        self.counts = {t.name: _TowerCounts(model, t) for t in self.towers}
        self.reference = {t.name: (reference_params or {}).get(t.name, self.counts[t.name].full) for t in self.towers}
        self.groups = [tuple(tower_names)] if pooled else [(n,) for n in tower_names]
        self.target_sparsity, self.warmup_steps, self.two_sided = target_sparsity, warmup_steps, two_sided
        now = [self._sparsity_of(g, {n: torch.tensor(float(self.counts[n].full)) for n in g}).item()
               for g in self.groups]
        self.start_sparsity = [start_sparsity if start_sparsity is not None else s for s in now]
        self.log_alpha = nn.ModuleDict({
            t.name: nn.ParameterDict({
                "hidden": nn.Parameter(torch.full((tower_shape(model, t).hidden,), init_log_alpha)),
                **{kind: nn.Parameter(torch.full((sum(self.counts[t.name].sizes[kind]),), init_log_alpha))
                   for kind in ("heads", "intermediate")}})
            for t in self.towers})
        self.lambdas = nn.Parameter(torch.full((len(self.groups), 2), INIT_LAMBDA))

    def per_gate(self, fn) -> dict[str, dict[str, torch.Tensor]]:
        """`fn` of each tower's flat log_alpha vectors (hidden, heads, intermediate)."""
        return {name: {kind: fn(la[kind]) for kind in KINDS} for name, la in self.log_alpha.items()}

    def _per_layer(self, name: str, kind: str, flat: torch.Tensor) -> list[torch.Tensor]:
        return list(flat.split(self.counts[name].sizes[kind]))

    def sample(self) -> Masks:
        """Training-time masks (differentiable in log_alpha)."""
        return self.unflatten(self.per_gate(sample_hard_concrete))

    def deterministic(self) -> Masks:
        """Prune-step masks, decided per group: hidden; each layer's heads; each layer's neurons."""
        return {name: {"hidden": deterministic_mask(la["hidden"]),
                       **{kind: [deterministic_mask(t) for t in self._per_layer(name, kind, la[kind])]
                          for kind in ("heads", "intermediate")}}
                for name, la in self.log_alpha.items()}

    def unflatten(self, flat: dict[str, dict[str, torch.Tensor]]) -> Masks:
        return {name: {"hidden": f["hidden"], **{kind: self._per_layer(name, kind, f[kind])
                                                 for kind in ("heads", "intermediate")}}
                for name, f in flat.items()}

    def scores(self) -> dict[str, dict[str, torch.Tensor]]:
        """P(z != 0) per gate, flat per kind."""
        return self.per_gate(keep_probability)

    def expected_params(self, scores: Masks | None = None) -> dict[str, torch.Tensor]:
        """Expected counted parameters per tower (hidden enters as outer products with heads/neurons);
        `scores` may be flat (as from `scores`) or per layer (as masks)."""
        scores = self.scores() if scores is None else scores
        flat = {n: {k: torch.cat(v) if isinstance(v, list) else v for k, v in s.items()} for n, s in scores.items()}
        return {n: self.counts[n].count(flat[n]) for n in self.log_alpha}

    def _sparsity_of(self, group: tuple[str, ...], params: dict[str, torch.Tensor]) -> torch.Tensor:
        return 1.0 - sum(params[n] for n in group) / sum(self.reference[n] for n in group)

    def expected_sparsity(self) -> list[torch.Tensor]:
        params = self.expected_params()
        return [self._sparsity_of(g, params) for g in self.groups]

    def target(self, step: int) -> list[float]:
        """The target sparsity of each group at `step`, linear warm-up from the start sparsity."""
        frac = 1.0 if self.warmup_steps == 0 else min(1.0, step / self.warmup_steps)
        return [s + (self.target_sparsity - s) * frac for s in self.start_sparsity]

    def lagrangian(self, step: int) -> torch.Tensor:
        """sum over groups of l1 * g + l2 * g^2, g = max(t - s, 0) (or t - s when two-sided)."""
        loss = self.lambdas.new_zeros(())
        for (l1, l2), t, s in zip(self.lambdas, self.target(step), self.expected_sparsity(), strict=True):
            gap = t - s if self.two_sided else (t - s).clamp(min=0.0)
            loss = loss + l1 * gap + l2 * gap * gap
        return loss

    def param_groups(self, lr: float = 0.02, lambda_lr: float = 0.02) -> list[dict]:
        """Optimizer groups: log_alpha descends at lr, the multipliers ascend (maximize=True) at lambda_lr."""
        alphas = [p for name, p in self.named_parameters() if name.startswith("log_alpha.")]
        return [{"params": alphas, "lr": lr, "weight_decay": 0.0},
                {"params": [self.lambdas], "lr": lambda_lr, "weight_decay": 0.0, "maximize": True}]

    def call(self, model: nn.Module, masks: Masks, fn):
        """`fn(model)` under `masks` (e.g. `lambda m: (m.encode_image(x), m.encode_text(t))`)."""
        return masked_call(model, self.towers, masks, fn)

    def prune(self, model: nn.Module) -> nn.Module:
        """Physically prune `model` in place with the deterministic masks."""
        return prune(model, self.towers, self.deterministic())
