"""What the NB201 jobs train: which cells, in which chunks, at which epoch budgets (nb201.md 6.2).

Light on purpose (no torch): Snakemake imports it while it builds the DAG, so a dry run of the paper's
2 x 2 x 15,625 cells stays fast.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

from nb360.methods.budgets import check_budget
from nb360.nb201.space import NUM_ARCHS

TASKS = ("ninapro", "darcy")
# The four official files (nb201.md 6.3), placed by the user in <raw_dir>/nb201/.
OFFICIAL_FILES = {
    ("ninapro", "200"): "NATS-tss-v1_0-daa55.pickle.pbz2",
    ("darcy", "200"): "NATS-tss-v1_0-48858.pickle.pbz2",
    ("ninapro", "12"): "NATS-tss-v1_0-2397f.pickle.pbz2",
    ("darcy", "12"): "NATS-tss-v1_0-70680.pickle.pbz2",
}
OFFICIAL_HPS = ("12", "200")  # the low-fidelity (searched) and the final (reported) table
RAW_SUBDIR = "nb201"
ALWAYS = (0, 9, 123)  # the reference's check cells: every sample holds them
# The official tables' time budgets of a search, in the tables' own (simulated) seconds (nb201.md 6.4).
OFFICIAL_TIME_BUDGET = {"ninapro": 40.0, "darcy": 230.0}
# A table of a sample of cells is searched for this many median low-fidelity evaluations (a 64-cell table
# would be exhausted by the official budgets' 40-50 evaluations).
SAMPLE_EVALUATIONS = 10


@dataclass(frozen=True)
class PrecomputeBudget:
    """How one table's cells are trained: epochs (the table's hp key), network width and depth, batches."""

    epochs: int
    channels: int = 16  # C
    cells_per_stage: int = 5  # N
    batch_size: int | None = None  # None: the protocol's (NinaPro 256, Darcy 16)
    max_batches_per_epoch: int | None = None  # None: whole epochs

    @property
    def hp(self) -> str:
        return str(self.epochs)


# The paper's tables: 12 epochs (the search's low fidelity) and 200 (the reported value), C=16, N=5.
PAPER = (PrecomputeBudget(12), PrecomputeBudget(200))
# The embedded default: tiny networks (one cell per stage; C=4 on NinaPro, C=2 on Darcy, whose 85 x 85 inputs
# run through every cell at full resolution) trained 3 and 4 short epochs (NinaPro 12 batches of 64, Darcy 2
# of 8), so that the default 32-cell sample costs about a minute of CPU per task (README, "Precomputed NB201
# benchmark"); every epoch is still evaluated on the whole test split, as the protocol says. The low table
# has 3 epochs, not 2: Hyperband's budgets 1..2 at eta 3 are a single rung, i.e. random search.
SMOKE = {
    "ninapro": (
        PrecomputeBudget(3, channels=4, cells_per_stage=1, batch_size=64, max_batches_per_epoch=12),
        PrecomputeBudget(4, channels=4, cells_per_stage=1, batch_size=64, max_batches_per_epoch=12),
    ),
    "darcy": (
        PrecomputeBudget(3, channels=2, cells_per_stage=1, batch_size=8, max_batches_per_epoch=2),
        PrecomputeBudget(4, channels=2, cells_per_stage=1, batch_size=8, max_batches_per_epoch=2),
    ),
}


def budgets(task: str, budget: str) -> tuple[PrecomputeBudget, PrecomputeBudget]:
    """The (low-fidelity, final) training budgets of ``task``'s two tables."""
    if task not in TASKS:
        raise ValueError(f"the NB201 benchmark covers {', '.join(TASKS)}, not {task!r}")
    return PAPER if check_budget(budget) == "paper" else SMOKE[task]


def hps(task: str, budget: str) -> tuple[str, str]:
    """The hp keys ("12", "200" at the paper's budget) of the low-fidelity and the final table."""
    low, final = budgets(task, budget)
    return low.hp, final.hp


def budget_of(task: str, budget: str, hp: str) -> PrecomputeBudget:
    for b in budgets(task, budget):
        if b.hp == hp:
            return b
    raise ValueError(f"no NB201 table of {hp} epochs for {task} at the {budget} budget: {hps(task, budget)}")


def cell_indices(cells: int | str, seed: int) -> list[int]:
    """The cells to train, sorted: all 15,625, or a fixed sample of ``cells`` that holds 0, 9 and 123."""
    if cells == "all":
        return list(range(NUM_ARCHS))
    n = int(cells)
    if not len(ALWAYS) <= n <= NUM_ARCHS:
        raise ValueError(f"nb201.cells must be 'all' or between {len(ALWAYS)} and {NUM_ARCHS}, got {cells!r}")
    rest = [i for i in range(NUM_ARCHS) if i not in ALWAYS]
    return sorted([*ALWAYS, *random.Random(seed).sample(rest, n - len(ALWAYS))])


def n_chunks(cells: int | str, chunk_size: int) -> int:
    n = NUM_ARCHS if cells == "all" else int(cells)
    return math.ceil(n / chunk_size)


def chunk(cells: int | str, seed: int, chunk_size: int, k: int) -> list[int]:
    """The cells of job ``k``: consecutive runs of the sorted cell list."""
    if not 0 <= k < n_chunks(cells, chunk_size):
        raise IndexError(f"chunk {k} of {n_chunks(cells, chunk_size)}")
    return cell_indices(cells, seed)[k * chunk_size : (k + 1) * chunk_size]


def official_path(raw_dir: str | os.PathLike, task: str, hp: str | int) -> Path:
    """Where the user places the official file of ``task`` at ``hp``: ``<raw_dir>/nb201/<official name>``."""
    key = (task, str(hp))
    if key not in OFFICIAL_FILES:
        raise ValueError(f"no official NB201 file for task {task!r} hp={hp!r}; known: {list(OFFICIAL_FILES)}")
    return Path(raw_dir) / RAW_SUBDIR / OFFICIAL_FILES[key]


def time_budget(task: str, n_evaluated: int, median_cost: float) -> float:
    """A search's simulated time budget: the official one on a full table, else ``SAMPLE_EVALUATIONS``
    median low-fidelity evaluations of the table at hand (its own seconds)."""
    if n_evaluated == NUM_ARCHS:
        return OFFICIAL_TIME_BUDGET[task]
    return SAMPLE_EVALUATIONS * median_cost
