"""The method contract: what a method (baseline or search algorithm) implements, and its registration.

A method turns a task's shards into a :class:`~nb360.train.RunResult` (``retrain``: train on train + val,
report on test). A search method first runs ``search``: it returns a :class:`SearchResult` whose
architecture the workflow writes to ``results/search/{task}/{method}/seed{seed}/arch.json``, and
``retrain`` then reads that file (``ctx.arch``): nothing is copied by hand. A search that several jobs share
(e.g. ASHA on SLURM, one job per worker) also defines ``search_worker``; the workflow runs it once per
worker, on one storage under the search's folder, before ``search`` collects the result. A method that
tunes (DASH) also defines ``tune``: its own job between the search and the retraining, which reads
``arch.json`` and returns a :class:`TuneResult` whose hyper-parameters the workflow writes to ``hparams.json``
beside it; ``retrain`` reads that file (``ctx.hparams``).
Snakemake's ``{method}`` wildcard is a registry name.

What the workflow needs to build its DAG (title, whether a method searches, ...) is the method's entry in
:mod:`nb360.methods.registry`, which imports nothing heavy; this module is light too (the task registry and
torch are imported when a job builds its context), and :func:`get_method` imports a method's module, with its
torch and optuna, only when a job runs it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb360.methods.registry import MethodInfo, method_info

if TYPE_CHECKING:
    from nb360.tasks import TaskSpec
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
    arch: Path | None = None  # tune and retrain of a search method: the searched architecture file
    hparams: Path | None = None  # retrain of a tuning method: the chosen hyper-parameters (hparams.json)
    # search: arch.json of the methods it reads; retrain: scores.json of the runs it may reuse (by method)
    inputs: Mapping[str, Path] = field(default_factory=dict)
    workers: int = 1  # search: how many worker jobs share it

    @classmethod
    def for_job(
        cls, job: Any, workdir: str | os.PathLike, device: str | None = None, **extra: Any
    ) -> RunContext:
        """The context of a Snakemake job (its wildcards task/seed, input manifest, params budget/device);
        ``device`` replaces params.device (the one :func:`nb360.devices.claim_device` placed the job on);
        ``extra`` sets the other fields."""
        from nb360.tasks import get_task  # the task registry imports scipy: only jobs need it

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


@dataclass
class TuneResult:
    """What a hyper-parameter stage chose: ``hparams`` (JSON-serialisable) is what ``retrain`` reads back."""

    hparams: dict[str, Any]
    summary: str  # one line for the report
    trials: list[dict[str, Any]] = field(default_factory=list)  # each configuration tried and its score
    device: str = "cpu"
    seconds: float = 0.0


@dataclass(frozen=True)
class Method:
    """A method's functions; its metadata is its registry entry (:attr:`info`)."""

    name: str  # a name with an entry in nb360/methods/registry.py
    retrain: Callable[[RunContext], RunResult]
    search: Callable[[RunContext], SearchResult] | None = None
    # Parallel search: one job per worker (worker index 0..workers-1) returns a JSON-able record.
    search_worker: Callable[[RunContext, int], dict[str, Any]] | None = None
    # Hyper-parameter stage: the searched architecture's training configuration, chosen on validation.
    tune: Callable[[RunContext], TuneResult] | None = None

    @property
    def info(self) -> MethodInfo:
        return method_info(self.name)

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def description(self) -> str:
        return self.info.description

    @property
    def reads(self) -> tuple[str, ...]:
        return self.info.reads

    @property
    def cpu_only(self) -> tuple[str, ...]:
        return self.info.cpu_only

    @property
    def searches(self) -> bool:
        return self.search is not None

    @property
    def tunes(self) -> bool:
        return self.tune is not None


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Register a method's functions (called by its module); they must match its registry entry."""
    try:
        info = method_info(method.name)
    except KeyError:
        raise ValueError(
            f"method {method.name!r} has no entry in nb360/methods/registry.py; add a MethodInfo to METHODS"
        ) from None
    if not callable(method.retrain):
        raise TypeError(f"method {method.name!r}: retrain must be a function of a RunContext")
    given = (method.searches, method.search_worker is not None, method.tunes)
    if given != (info.searches, info.search_workers, info.tunes):
        raise ValueError(
            f"method {method.name!r}: its module gives search={given[0]}, search_worker={given[1]}, "
            f"tune={given[2]}, but its entry in nb360/methods/registry.py says searches={info.searches}, "
            f"search_workers={info.search_workers}, tunes={info.tunes}; make them agree"
        )
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    _METHODS[method.name] = method
    return method


def require_task(method: str, task: TaskSpec) -> None:
    """Stops a task-specific method (its registry entry's ``tasks``) called on another task."""
    info = method_info(method)
    if not info.applies_to(task.name):
        raise ValueError(
            f"{info.title} runs on {', '.join(info.tasks)} (as in the paper), not on {task.name}"
        )


def get_method(name: str) -> Method:
    """The method ``name``, importing the module its registry entry names on first use."""
    info = method_info(name)  # KeyError naming the registered methods
    if name not in _METHODS:
        importlib.import_module(info.module)
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            f"method {name!r}: its module {info.module} registers no method of that name "
            "(register_method(Method(name, ...)))"
        ) from None
