"""The method registry: each method (baseline or search algorithm) is one module and one entry.

A method turns a task's shards into a :class:`~nb360.train.RunResult` (``retrain``: train on train + val,
report on test). A search method first runs ``search``: it returns a :class:`SearchResult` whose
architecture the workflow writes to ``results/search/{task}/{method}/seed{seed}/arch.json``, and
``retrain`` then reads that file (``ctx.arch``): nothing is copied by hand. A search that several jobs share
(e.g. ASHA on SLURM, one job per worker) also defines ``search_worker``; the workflow runs it once per
worker, on one storage under the search's folder, before ``search`` collects the result.
Snakemake's ``{method}`` wildcard is a registry name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb360.tasks import TaskSpec, get_task
from nb360.train import RunResult


@dataclass(frozen=True)
class RunContext:
    """Everything a method run needs; paths are per task x method x seed."""

    task: TaskSpec
    manifest: Path
    seed: int
    budget: str  # "smoke" or "paper" (see nb360.methods.budgets)
    device: str
    workdir: Path  # checkpoints and other per-run files (for a search: the storage its workers share)
    arch: Path | None = None  # retrain of a search method: the searched architecture file
    inputs: Mapping[str, Path] = field(default_factory=dict)  # search: arch.json of the methods it reads
    workers: int = 1  # search: how many worker jobs share it

    @classmethod
    def for_job(
        cls, job: Any, workdir: str | os.PathLike, device: str | None = None, **extra: Any
    ) -> RunContext:
        """The context of a Snakemake job (its wildcards task/seed, input manifest, params budget/device);
        ``device`` replaces params.device (the one :func:`nb360.devices.claim_device` placed the job on);
        ``extra`` sets the other fields."""
        return cls(
            task=get_task(job.wildcards.task),
            manifest=Path(job.input.manifest),
            seed=int(job.wildcards.seed),
            budget=job.params.budget,
            device=job.params.device if device is None else device,
            workdir=Path(workdir),
            **extra,
        )


@dataclass
class SearchResult:
    """What a search found: ``arch`` (JSON-serialisable) is what the method's ``retrain`` reads back."""

    kind: str  # the architecture format, e.g. "darts_genotype", "densenas_arch", "wrn_hparams"
    arch: dict[str, Any]
    summary: str  # one line for the architecture table of the report
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch or per trial
    device: str = "cpu"
    seconds: float = 0.0


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    retrain: Callable[[RunContext], RunResult]
    description: str = ""
    search: Callable[[RunContext], SearchResult] | None = None
    # Parallel search: one job per worker (worker index 0..workers-1) returns a JSON-able record.
    search_worker: Callable[[RunContext, int], dict[str, Any]] | None = None
    reads: tuple[str, ...] = ()  # methods whose searched architecture this method's search reads
    # Stages ("search", "retrain") that never train a network on a GPU: their jobs ask for no GPU, so they
    # neither hold a GPU slot nor wait in a cluster's GPU queue.
    cpu_only: tuple[str, ...] = ()

    @property
    def searches(self) -> bool:
        return self.search is not None


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.search_worker is not None and method.search is None:
        raise ValueError(f"method {method.name!r} has search workers but no search to collect them")
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(_METHODS)}") from None


def list_methods() -> list[str]:
    return list(_METHODS)
