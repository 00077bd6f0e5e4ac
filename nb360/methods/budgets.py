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


# Smoke searches validate on a fixed slice of val, the first ``max_eval_batches`` batches in storage order
# (the same samples for every candidate, so comparisons stay fair): a full validation pass of an embedded
# task can cost more than the training it judges (PSICOV: ~12 s for four 512 x 512 canvases on one core).
SMOKE_VALIDATION = {"eval_batch_size": 64, "max_eval_batches": 2}
SMOKE_VALIDATION_TASK = {
    "darcy": {"eval_batch_size": 8},
    "cosmic": {"eval_batch_size": 8},
    "psicov": {"eval_batch_size": 1, "max_eval_batches": 1},
}


def smoke_validation(task: str) -> dict[str, int]:
    """``TrainConfig`` fields of a smoke search's validation for ``task``."""
    return {**SMOKE_VALIDATION, **SMOKE_VALIDATION_TASK.get(task, {})}
