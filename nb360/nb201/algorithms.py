"""Black-box NAS algorithms on the precomputed NB201 tables (nb201.md 6.4).

Random search, regularized evolution (REA), REINFORCE, Hyperband and BOHB query a *search view* of the
tables (the ``SearchTable`` protocol below): the low-fidelity (12-epoch) table gives the score a search sees
and the simulated seconds it pays, the 200-epoch table gives the value reported for the cell it picks.
NATS-Bench's scripts as NB360 ran them are followed, with these documented deviations:

* One run is one numpy ``Generator`` seeded by the run's seed; nothing global is touched.
* Time: every evaluation is charged ``cost(index, epochs)`` (the cumulative training time of that many
  epochs, as ``simulate_train_eval``); a search evaluates while the used time is below the budget, so its
  last evaluation may cross it, as in the scripts (``strict=True`` instead never starts an evaluation that
  would not fit). The scripts' Hyperband and BOHB ignore ``--time_budget`` (hpbandster runs ``n_iters=300``
  iterations); here they stop at the budget like the others, and also after ``n_iters`` brackets.
* The chosen cell is the one with the best low-fidelity score seen, over whatever epochs it was scored at
  (for Hyperband/BOHB that mixes budgets, as the scripts' ``max(trajectory)`` does); ties keep the first.
* Hyperband and BOHB are a local synchronous port of hpbandster 0.7.4 with one worker (no Pyro4 name
  server): the same brackets (``hyperband_schedule``), configurations sampled one at a time in stage 0 and
  the model refitted after every result, the top ``n`` by score promoted to the next budget and charged that
  budget in full (tables are looked up, not continued).
* BOHB's model is a numpy port of hpbandster's ``CG_BOHB`` (good/bad Aitchison-Aitken KDEs per budget,
  normal-reference bandwidths, ``num_samples`` candidates drawn around good points, minimise g/l). Optuna's
  TPESampler was considered: it has no per-budget models, and an ask/tell costs about 1.5 ms here, which
  alone would take BOHB's 1,000 runs x ~100 evaluations past the few minutes the whole sweep may take. The
  KDE uses the 5 real op levels (statsmodels counts the levels present in the data and divides by zero on a
  constant column) and clips bandwidths to 0.8 (= uniform) when scoring; proposals use hpbandster's
  unclipped rule. ``bandwidth_factor`` only widens continuous parameters in hpbandster, so it has no
  effect on the six categorical edges; it is kept for the record.
* Tables with a subset of the cells (``table.indices``): uniform random cells are drawn among the evaluated
  ones; an arch proposed by mutation or by BOHB's model that was not evaluated is mapped to the nearest
  evaluated cell (Hamming distance over the 6 edges, ties at random; a REA child never maps back to its
  parent); REINFORCE's policy is renormalised over the evaluated cells (exact log-probability gradient).
  On the full 15,625-cell table none of this changes anything.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from nb360.nb201 import space

BUDGETS: dict[str, float] = {"ninapro": 40.0, "darcy": 230.0}  # simulated seconds [R:precompute/*/algo.sh]
ALGORITHMS = ("random", "rea", "reinforce", "hyperband", "bohb")
NUM_OPS = len(space.OPS)
NUM_EDGES = len(space.EDGES)
NODES_WITH_INPUTS = space.NODES - 1  # nodes 1..3; node j has j input edges
_PLACE = NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1)  # base-5 code of an op vector, edge 0 most significant


class SearchTable(Protocol):
    """The search view of a precomputed table (low-fidelity scores and costs, reported finals)."""

    @property
    def indices(self) -> Sequence[int]: ...

    @property
    def max_epochs(self) -> int: ...

    def score(self, index: int, epochs: int) -> float: ...

    def cost(self, index: int, epochs: int) -> float: ...

    def final(self, index: int) -> float: ...

    @property
    def final_higher_is_better(self) -> bool: ...


@functools.cache
def _all_ops() -> np.ndarray:
    """(15625, 6) op codes of every cell, by official index."""
    position = {op: k for k, op in enumerate(space.OPS)}
    ops = np.array([[position[op] for op in space.parse(s)] for s in space.arch_strings()], dtype=np.int64)
    ops.flags.writeable = False
    return ops


@dataclass(frozen=True, eq=False)
class Lookup:
    """A ``SearchTable`` read once into arrays; build it with ``compile_table`` and reuse it across runs."""

    indices: np.ndarray  # (n,) official indexes of the searchable cells
    ops: np.ndarray  # (n, 6) op codes
    score: np.ndarray  # (n, max_epochs) score after 1..max_epochs epochs; NaN read as -inf
    cost: np.ndarray  # (n, max_epochs) simulated seconds
    final: np.ndarray  # (n,) reported value
    final_higher_is_better: bool
    task: str | None = None
    row_of_code: np.ndarray = field(init=False, repr=False)  # (15625,) row of an op code, -1 if absent
    score_rows: list[list[float]] = field(init=False, repr=False)  # Python floats for the hot loops
    cost_rows: list[list[float]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        row_of_code = np.full(space.NUM_ARCHS, -1, dtype=np.int64)
        row_of_code[self.ops @ _PLACE] = np.arange(len(self.indices))
        object.__setattr__(self, "row_of_code", row_of_code)
        object.__setattr__(self, "score_rows", self.score.tolist())
        object.__setattr__(self, "cost_rows", self.cost.tolist())

    @property
    def max_epochs(self) -> int:
        return self.score.shape[1]

    @property
    def complete(self) -> bool:
        return len(self.indices) == space.NUM_ARCHS


def compile_table(table: SearchTable | Lookup) -> Lookup:
    """Read every score, cost and final of ``table`` once (costs must be finite and non-negative)."""
    if isinstance(table, Lookup):
        return table
    indices = np.array([int(i) for i in table.indices], dtype=np.int64)
    if len(indices) == 0 or len(np.unique(indices)) != len(indices):
        raise ValueError("a search table needs at least one cell and no repeated index")
    epochs = int(table.max_epochs)
    steps = range(1, epochs + 1)
    score = np.array([[table.score(int(i), e) for e in steps] for i in indices], dtype=np.float64)
    cost = np.array([[table.cost(int(i), e) for e in steps] for i in indices], dtype=np.float64)
    final = np.array([table.final(int(i)) for i in indices], dtype=np.float64)
    if not (np.isfinite(cost).all() and (cost >= 0).all()):
        raise ValueError("search costs must be finite and non-negative")
    score[np.isnan(score)] = -np.inf  # a diverged cell is never the best
    return Lookup(
        indices=indices,
        ops=_all_ops()[indices],
        score=score,
        cost=cost,
        final=final,
        final_higher_is_better=bool(table.final_higher_is_better),
        task=getattr(table, "task", None),
    )


def default_budget(table: SearchTable | Lookup) -> float:
    """The scripts' time budget for the table's task (``BUDGETS``), read from an optional ``task``."""
    task = getattr(table, "task", None)
    if task not in BUDGETS:
        raise ValueError(f"no default time budget for task {task!r}; pass budget= (defaults: {BUDGETS})")
    return BUDGETS[task]


@dataclass(frozen=True)
class SearchResult:
    """One search run: the chosen cell, its reported value and the best-so-far trajectory."""

    algorithm: str
    seed: int
    index: int  # official index of the chosen cell (-1 if nothing was evaluated)
    final: float  # its reported (200-epoch) value
    total_time: float  # simulated seconds used
    trajectory: tuple[tuple[float, float], ...]  # (used time, final of the best-so-far cell) per evaluation
    best_indices: tuple[int, ...]  # the best-so-far cell per evaluation (the scripts' current_best_index)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        out = asdict(self)
        out["trajectory"] = [list(p) for p in self.trajectory]
        out["best_indices"] = list(self.best_indices)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        """The inverse of ``to_dict``."""
        return cls(
            algorithm=str(data["algorithm"]),
            seed=int(data["seed"]),
            index=int(data["index"]),
            final=float(data["final"]),
            total_time=float(data["total_time"]),
            trajectory=tuple((float(t), float(v)) for t, v in data["trajectory"]),
            best_indices=tuple(int(i) for i in data["best_indices"]),
        )


class _Run:
    """Charges simulated time and tracks the best cell by low-fidelity score."""

    def __init__(self, lookup: Lookup, budget: float, strict: bool) -> None:
        if not budget > 0:
            raise ValueError(f"the time budget must be positive, got {budget}")
        self.lookup, self.budget, self.strict = lookup, float(budget), strict
        self.used = 0.0
        self.best_row, self.best_score = -1, -math.inf
        self.times: list[float] = []
        self.best_rows: list[int] = []

    def evaluate(self, row: int, epochs: int) -> float | None:
        """The score of ``row`` after ``epochs`` epochs, or None once the budget stops the search."""
        cost = self.lookup.cost_rows[row][epochs - 1]
        if (self.used + cost > self.budget) if self.strict else (self.used >= self.budget):
            return None
        self.used += cost
        score = self.lookup.score_rows[row][epochs - 1]
        if self.best_row < 0 or score > self.best_score:
            self.best_row, self.best_score = row, score
        self.times.append(self.used)
        self.best_rows.append(self.best_row)
        return score

    def result(self, algorithm: str, seed: int) -> SearchResult:
        lk = self.lookup
        finals = lk.final[self.best_rows].tolist()
        return SearchResult(
            algorithm=algorithm,
            seed=seed,
            index=int(lk.indices[self.best_row]) if self.best_row >= 0 else -1,
            final=finals[-1] if finals else math.nan,
            total_time=self.used,
            trajectory=tuple(zip(self.times, finals, strict=True)),
            best_indices=tuple(lk.indices[self.best_rows].tolist()),
        )


def _nearest(lookup: Lookup, ops: np.ndarray, rng: np.random.Generator, exclude: int = -1) -> int:
    """The row of ``ops`` if evaluated, else a random one among the nearest evaluated cells (Hamming)."""
    row = int(lookup.row_of_code[int(ops @ _PLACE)])
    if row >= 0 and row != exclude:
        return row
    distance = (lookup.ops != ops).sum(axis=1)
    if exclude >= 0 and len(distance) > 1:
        distance[exclude] = NUM_EDGES + 1
    candidates = np.flatnonzero(distance == distance.min())
    return int(candidates[rng.integers(len(candidates))])


def _setup(table: SearchTable | Lookup, budget: float | None, strict: bool) -> tuple[Lookup, _Run]:
    lookup = compile_table(table)
    spent = float(budget) if budget is not None else default_budget(lookup)
    return lookup, _Run(lookup, spent, strict)


def random_search(
    table: SearchTable | Lookup, seed: int, budget: float | None = None, strict: bool = False
) -> SearchResult:
    """Uniformly random cells at full low fidelity until the budget runs out [random_wo_share.py]."""
    lookup, run = _setup(table, budget, strict)
    rng = np.random.default_rng(seed)
    n, epochs = len(lookup.indices), lookup.max_epochs
    while run.evaluate(int(rng.integers(n)), epochs) is not None:
        pass
    return run.result("random", seed)


def _mutate(lookup: Lookup, row: int, rng: np.random.Generator) -> int:
    """The scripts' mutation: a node uniformly, one of its input edges uniformly, a different op."""
    node = int(rng.integers(NODES_WITH_INPUTS))
    edge = node * (node + 1) // 2 + int(rng.integers(node + 1))  # node j's edges start at j(j-1)/2
    ops = lookup.ops[row].copy()
    ops[edge] = (ops[edge] + int(rng.integers(1, NUM_OPS))) % NUM_OPS  # uniform among the other 4 ops
    return _nearest(lookup, ops, rng, exclude=row)


def regularized_evolution(
    table: SearchTable | Lookup,
    seed: int,
    budget: float | None = None,
    strict: bool = False,
    population_size: int = 10,
    sample_size: int = 3,
) -> SearchResult:
    """Aging evolution [regularized_ea.py]: tournaments of ``sample_size`` drawn with replacement from the
    population, the winner's one-edge mutant joins, the oldest leaves; the budget also bounds the
    initial population."""
    lookup, run = _setup(table, budget, strict)
    rng = np.random.default_rng(seed)
    n, epochs = len(lookup.indices), lookup.max_epochs
    population: collections.deque[tuple[int, float]] = collections.deque()
    while len(population) < population_size:
        row = int(rng.integers(n))
        score = run.evaluate(row, epochs)
        if score is None:
            return run.result("rea", seed)
        population.append((row, score))
    while True:
        picks = rng.integers(len(population), size=sample_size).tolist()
        parent = max((population[k] for k in picks), key=lambda member: member[1])[0]
        child = _mutate(lookup, parent, rng)
        score = run.evaluate(child, epochs)
        if score is None:
            return run.result("rea", seed)
        population.append((child, score))
        population.popleft()


class ReinforcePolicy:
    """REINFORCE's 6x5 categorical policy with Adam and a bias-corrected EMA baseline [reinforce.py].

    ``restrict_to`` (op codes of the evaluated cells) renormalises the policy over those cells.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        lr: float = 0.01,
        momentum: float = 0.9,
        restrict_to: np.ndarray | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.logits = 1e-3 * rng.standard_normal((NUM_EDGES, NUM_OPS))
        self.lr, self.momentum, self.betas, self.eps = lr, momentum, betas, eps
        self.restrict_to = restrict_to
        self._m = np.zeros_like(self.logits)
        self._v = np.zeros_like(self.logits)
        self._step = 0
        self._numerator = self._denominator = 0.0

    def probs(self) -> np.ndarray:
        """Per-edge op probabilities (softmax of the logits)."""
        z = np.exp(self.logits - self.logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def _restricted(self) -> np.ndarray:
        assert self.restrict_to is not None
        log_p = np.log(self.probs())
        cell = log_p[np.arange(NUM_EDGES), self.restrict_to].sum(axis=1)
        p = np.exp(cell - cell.max())
        return p / p.sum()

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Op codes of a sampled cell (one op per edge, or an evaluated cell when restricted)."""
        if self.restrict_to is not None:
            row = int(np.searchsorted(np.cumsum(self._restricted()), rng.random()))
            return self.restrict_to[min(row, len(self.restrict_to) - 1)]
        cumulative = np.cumsum(self.probs(), axis=1)
        return np.minimum((rng.random((NUM_EDGES, 1)) > cumulative).sum(axis=1), NUM_OPS - 1)

    @property
    def baseline(self) -> float:
        return self._numerator / self._denominator if self._denominator else 0.0

    def update(self, ops: np.ndarray, reward: float) -> None:
        """One step on loss ``-log pi(ops) * (reward - b)``, the baseline updated with ``reward`` first."""
        self._numerator = self.momentum * self._numerator + (1 - self.momentum) * reward
        self._denominator = self.momentum * self._denominator + (1 - self.momentum)
        advantage = reward - self.baseline
        if self.restrict_to is None:
            expected = self.probs()
        else:  # gradient of the normaliser: the policy's mean one-hot over the evaluated cells
            weights, cells = self._restricted(), self.restrict_to
            expected = np.zeros_like(self.logits)
            for e in range(NUM_EDGES):
                expected[e] = np.bincount(cells[:, e], weights=weights, minlength=NUM_OPS)
        chosen = np.zeros_like(self.logits)
        chosen[np.arange(NUM_EDGES), ops] = 1.0
        grad = -advantage * (chosen - expected)  # d(-log pi * advantage)/d logits
        b1, b2 = self.betas
        self._step += 1
        self._m = b1 * self._m + (1 - b1) * grad
        self._v = b2 * self._v + (1 - b2) * grad * grad
        denom = np.sqrt(self._v) / math.sqrt(1 - b2**self._step) + self.eps  # torch.optim.Adam's form
        self.logits = self.logits - (self.lr / (1 - b1**self._step)) * self._m / denom


def reinforce(
    table: SearchTable | Lookup,
    seed: int,
    budget: float | None = None,
    strict: bool = False,
    lr: float = 0.01,
    momentum: float = 0.9,
) -> SearchResult:
    """REINFORCE with the score as reward; the best cell seen is reported [reinforce.py]."""
    lookup, run = _setup(table, budget, strict)
    rng = np.random.default_rng(seed)
    restrict_to = None if lookup.complete else lookup.ops
    policy = ReinforcePolicy(rng, lr=lr, momentum=momentum, restrict_to=restrict_to)
    finite = lookup.score[np.isfinite(lookup.score)]
    floor = float(finite.min()) if finite.size else 0.0  # a diverged cell's reward: -inf would poison Adam
    while True:
        ops = policy.sample(rng)
        reward = run.evaluate(int(lookup.row_of_code[int(ops @ _PLACE)]), lookup.max_epochs)
        if reward is None:
            return run.result("reinforce", seed)
        policy.update(ops, reward if math.isfinite(reward) else floor)


def hyperband_schedule(
    min_budget: float = 1, max_budget: float = 12, eta: float = 3
) -> list[list[tuple[int, float]]]:
    """hpbandster's brackets, in the order it runs them: per stage (number of configs, budget).

    With eta 3 and budgets 1..12: [(9, 1.33), (3, 4), (1, 12)], [(3, 4), (1, 12)], [(3, 12)]; a budget
    ``b`` trains ``int(b)`` epochs (the scripts' ``iepoch = int(budget) - 1``).
    """
    stages = -int(np.log(min_budget / max_budget) / np.log(eta)) + 1
    budgets = max_budget * np.power(eta, -np.linspace(stages - 1, 0, stages))
    brackets = []
    for s in range(stages - 1, -1, -1):
        n0 = int(np.floor(stages / (s + 1)) * eta**s)
        counts = [max(int(n0 * eta ** (-i)), 1) for i in range(s + 1)]
        brackets.append([(n, float(b)) for n, b in zip(counts, budgets[-s - 1 :], strict=True)])
    return brackets


class _BohbModel:
    """hpbandster's CG_BOHB over the 6 categorical edges (see the module docstring for deviations)."""

    def __init__(
        self,
        lookup: Lookup,
        rng: np.random.Generator,
        num_samples: int,
        random_fraction: float,
        min_bandwidth: float,
        top_n_percent: int,
        min_points_in_model: int | None,
    ) -> None:
        self.lookup, self.rng = lookup, rng
        self.num_samples, self.random_fraction = num_samples, random_fraction
        self.min_bandwidth, self.top_n_percent = min_bandwidth, top_n_percent
        self.min_points = min_points_in_model or NUM_EDGES + 1
        self.configs: dict[float, list[np.ndarray]] = {}
        self.losses: dict[float, list[float]] = {}
        self.models: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def propose(self) -> int:
        lookup, rng = self.lookup, self.rng
        if not self.models or rng.random() < self.random_fraction:
            return int(rng.integers(len(lookup.indices)))
        good, good_bw, bad, bad_bw = self.models[max(self.models)]
        candidates = np.empty((self.num_samples, NUM_EDGES), dtype=np.int64)
        for k in range(self.num_samples):
            datum = good[rng.integers(len(good))]
            keep = rng.random(NUM_EDGES) < 1 - np.maximum(good_bw, self.min_bandwidth)
            candidates[k] = np.where(keep, datum, rng.integers(NUM_OPS, size=NUM_EDGES))
        ratio = np.maximum(self._pdf(candidates, bad, bad_bw), 1e-32) / np.maximum(
            self._pdf(candidates, good, good_bw), 1e-32
        )
        return _nearest(lookup, candidates[int(np.argmin(ratio))], rng)

    @staticmethod
    def _pdf(x: np.ndarray, data: np.ndarray, bw: np.ndarray) -> np.ndarray:
        # Aitchison-Aitken kernel over 5 levels; bw <= 0.8 keeps it a distribution (0.8 = uniform)
        h = np.minimum(bw, (NUM_OPS - 1) / NUM_OPS)
        same = x[:, None, :] == data[None, :, :]
        return np.where(same, 1 - h, h / (NUM_OPS - 1)).prod(axis=2).mean(axis=1)

    def observe(self, row: int, budget: float, score: float) -> None:
        loss = -score if math.isfinite(score) else math.inf
        configs = self.configs.setdefault(budget, [])
        losses = self.losses.setdefault(budget, [])
        if self.models and max(self.models) > budget:  # a model on a larger budget exists already
            return
        configs.append(self.lookup.ops[row])
        losses.append(loss)
        if len(configs) <= self.min_points - 1:
            return
        n = len(configs)
        n_good = max(self.min_points, (self.top_n_percent * n) // 100)
        n_bad = max(self.min_points, ((100 - self.top_n_percent) * n) // 100)
        order = np.argsort(np.asarray(losses), kind="stable")
        train = np.asarray(configs)
        good, bad = train[order[:n_good]], train[order[n_good : n_good + n_bad]]
        if len(good) <= NUM_EDGES or len(bad) <= NUM_EDGES:
            return
        self.models[budget] = (good, self._bandwidth(good), bad, self._bandwidth(bad))

    def _bandwidth(self, data: np.ndarray) -> np.ndarray:
        # statsmodels' normal reference rule on the integer codes, clipped below as hpbandster does
        bw = 1.06 * data.std(axis=0) * len(data) ** (-1.0 / (4 + data.shape[1]))
        return np.maximum(bw, self.min_bandwidth)


def _successive_halving(
    table: SearchTable | Lookup,
    seed: int,
    budget: float | None,
    strict: bool,
    algorithm: str,
    eta: float,
    min_budget: float,
    n_iters: int,
    make_sampler: Callable[[Lookup, np.random.Generator], tuple[Callable[[], int], Callable[..., None]]],
) -> SearchResult:
    lookup, run = _setup(table, budget, strict)
    rng = np.random.default_rng(seed)
    propose, observe = make_sampler(lookup, rng)
    schedule = hyperband_schedule(min_budget, lookup.max_epochs, eta)
    for iteration in range(n_iters):
        stages = schedule[iteration % len(schedule)]
        rows: list[int] = []
        for stage, (_, stage_budget) in enumerate(stages):
            epochs = min(max(int(stage_budget), 1), lookup.max_epochs)
            if stage == 0:  # one worker: each config is sampled after the previous result came in
                rows = [-1] * stages[0][0]
            scores = []
            for k, row in enumerate(rows):
                if row < 0:
                    rows[k] = row = propose()
                score = run.evaluate(row, epochs)
                if score is None:
                    return run.result(algorithm, seed)
                observe(row, stage_budget, score)
                scores.append(score)
            if stage + 1 < len(stages):  # the best n go on, in their original order
                ranked = sorted(range(len(rows)), key=lambda k: -scores[k])
                promoted = sorted(ranked[: stages[stage + 1][0]])
                rows = [rows[k] for k in promoted]
    return run.result(algorithm, seed)


def hyperband(
    table: SearchTable | Lookup,
    seed: int,
    budget: float | None = None,
    strict: bool = False,
    eta: float = 3,
    min_budget: float = 1,
    n_iters: int = 300,
) -> SearchResult:
    """Hyperband over budgets ``min_budget..max_epochs`` with uniformly random configs [hyperband.py]."""

    def sampler(lookup: Lookup, rng: np.random.Generator) -> tuple[Callable[[], int], Callable[..., None]]:
        n = len(lookup.indices)
        return (lambda: int(rng.integers(n))), (lambda *_: None)

    return _successive_halving(table, seed, budget, strict, "hyperband", eta, min_budget, n_iters, sampler)


def bohb(
    table: SearchTable | Lookup,
    seed: int,
    budget: float | None = None,
    strict: bool = False,
    eta: float = 3,
    min_budget: float = 1,
    n_iters: int = 300,
    num_samples: int = 4,
    random_fraction: float = 0.0,
    bandwidth_factor: float = 3,
    min_bandwidth: float = 0.3,
    top_n_percent: int = 15,
    min_points_in_model: int | None = None,
) -> SearchResult:
    """BOHB: Hyperband with configs from a KDE model [bohb.py: num_samples 4, random_fraction 0,
    bandwidth_factor 3 (no effect on categoricals), min_bandwidth 0.3]."""
    del bandwidth_factor  # hpbandster applies it to continuous parameters only

    def sampler(lookup: Lookup, rng: np.random.Generator) -> tuple[Callable[[], int], Callable[..., None]]:
        model = _BohbModel(
            lookup, rng, num_samples, random_fraction, min_bandwidth, top_n_percent, min_points_in_model
        )
        return model.propose, model.observe

    return _successive_halving(table, seed, budget, strict, "bohb", eta, min_budget, n_iters, sampler)


_RUNNERS: dict[str, Callable[..., SearchResult]] = {
    "random": random_search,
    "rea": regularized_evolution,
    "reinforce": reinforce,
    "hyperband": hyperband,
    "bohb": bohb,
}


def run(
    table: SearchTable | Lookup,
    algorithm: str,
    seed: int,
    budget: float | None = None,
    strict: bool = False,
    **options: Any,
) -> SearchResult:
    """One run of ``algorithm`` (one of ``ALGORITHMS``); ``options`` go to the algorithm's function."""
    if algorithm not in _RUNNERS:
        raise ValueError(f"unknown NB201 search algorithm {algorithm!r}; choose from {ALGORITHMS}")
    return _RUNNERS[algorithm](table, seed, budget=budget, strict=strict, **options)


def run_seeds(runs: int, seed: int = 0) -> list[int]:
    """The per-run seeds ``run_many`` uses: distinct 32-bit ints drawn from ``seed``."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(runs, dtype=np.uint32)]


def run_many(
    table: SearchTable | Lookup,
    algorithm: str,
    runs: int = 500,
    seed: int = 0,
    budget: float | None = None,
    strict: bool = False,
    **options: Any,
) -> list[SearchResult]:
    """``runs`` independent runs (the scripts' ``loops_if_rand``); result ``k`` is ``run(..., seed=s_k)``."""
    lookup = compile_table(table)
    spent = float(budget) if budget is not None else default_budget(lookup)
    return [run(lookup, algorithm, s, budget=spent, strict=strict, **options) for s in run_seeds(runs, seed)]


@dataclass(frozen=True)
class Summary:
    """Mean and (population) std of the reported values over runs, as the scripts print them."""

    algorithm: str
    runs: int
    mean: float
    std: float
    mean_time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(results: Sequence[SearchResult]) -> Summary:
    """Mean/std of the final values of one algorithm's runs (``np.std``, ddof 0, like the scripts)."""
    if not results:
        raise ValueError("no results to summarise")
    names = {r.algorithm for r in results}
    if len(names) != 1:
        raise ValueError(f"summarise one algorithm at a time, got {sorted(names)}")
    finals = np.array([r.final for r in results], dtype=np.float64)
    return Summary(
        algorithm=names.pop(),
        runs=len(results),
        mean=float(np.mean(finals)),
        std=float(np.std(finals)),
        mean_time=float(np.mean([r.total_time for r in results])),
    )


@dataclass(frozen=True)
class Curve:
    """Best-so-far final value on a common time grid: mean/std over the runs that have a value there."""

    times: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray  # runs with at least one evaluation by that time


def curve(results: Sequence[SearchResult], times: Sequence[float] | None = None, points: int = 101) -> Curve:
    """The best-so-far curve of ``results`` at ``times`` (default: ``points`` from 0 to the longest run)."""
    if not results:
        raise ValueError("no results for a curve")
    if times is None:
        grid = np.linspace(0.0, max(r.total_time for r in results), points)
    else:
        grid = np.asarray(times, dtype=np.float64)
    values = np.full((len(results), len(grid)), np.nan)
    for k, result in enumerate(results):
        if not result.trajectory:
            continue
        at, finals = np.asarray(result.trajectory, dtype=np.float64).T
        last = np.searchsorted(at, grid, side="right") - 1  # the latest evaluation done by each time
        values[k] = np.where(last >= 0, finals[np.maximum(last, 0)], np.nan)
    count = (~np.isnan(values)).sum(axis=0)
    filled = np.where(np.isnan(values), 0.0, values)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / count
        std = np.sqrt(np.where(np.isnan(values), 0.0, (values - mean) ** 2).sum(axis=0) / count)
    return Curve(times=grid, mean=mean, std=std, count=count)
