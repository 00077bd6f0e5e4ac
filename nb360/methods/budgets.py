"""Compute budgets: the paper's protocol, or a smoke budget that runs every task in minutes on a CPU.

``paper`` reproduces the benchmark (WRN-16-4, 200 epochs, the paper's batch sizes and learning rates).
``smoke`` is the embedded default: the same code, architecture family and optimiser, but narrower networks,
few epochs and capped epochs, so that the whole DAG runs on a laptop. Smoke results show that the pipeline
works and that models learn; they are not comparable to the paper's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

BUDGETS = ("smoke", "paper")


@dataclass(frozen=True)
class Budget:
    epochs: int
    max_batches_per_epoch: int | None = None  # None: whole epochs
    width: float = 1.0  # multiplier of the architecture's paper width
    batch_size: int | None = None  # None: the paper's batch size
    lr: float | None = None  # None: the paper's learning rate


def check_budget(name: str) -> str:
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; use one of {', '.join(BUDGETS)}")
    return name
