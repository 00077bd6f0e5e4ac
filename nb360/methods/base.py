"""The method registry: each method (baseline or search algorithm) is one module and one entry.

A method turns a task's shards into a :class:`~nb360.train.RunResult` for the ``retrain`` phase (and, for
search methods, first writes its searched architecture; issue 4). Snakemake's ``{method}`` wildcard is a
registry name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    workdir: Path  # checkpoints and other per-run files


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    retrain: Callable[[RunContext], RunResult]
    description: str = ""


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
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
