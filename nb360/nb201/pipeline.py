"""The NB201 benchmark's workflow jobs, one function per rule (workflow/rules/nb201.smk).

chunk: train a chunk of cells -> table: merge a task's chunks into one official-format file per epoch
budget -> search: the five NAS algorithms, ``runs`` seeded runs each, on the low-fidelity table, reporting
the final table -> report: tables and figures.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nb360.data.shards import atomic_write_text
from nb360.nb201 import plan
from nb360.nb201.table import Table, read_official

log = logging.getLogger(__name__)

SEARCH_FORMAT = "nb360-nb201-search/1"
CHUNK_FORMAT = "nb360-nb201-chunk/1"


def _write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=1, allow_nan=True) + "\n")


def chunk_job(
    task: str,
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    hp: str,
    chunk: int,
    *,
    budget: str,
    cells: int | str,
    chunk_size: int,
    seed: int,
    device: str,
) -> None:
    """Train chunk ``chunk`` of the configured cells at the table's budget; ``out`` lists their records.

    Each cell's record is written beside ``out`` as soon as it is trained, so a killed job resumes at its
    first unfinished cell; ``out`` is written last.
    """
    from nb360.nb201 import precompute  # torch: only the training jobs import it

    b = plan.budget_of(task, budget, hp)
    indices = plan.chunk(cells, seed, chunk_size, chunk)
    cell_dir = Path(out).with_suffix("")  # chunk<k>/cell-<index>.json
    records = precompute.run_chunk(
        task,
        indices,
        manifest,
        cell_dir,
        b.epochs,
        seed=seed,
        device=device,
        C=b.channels,
        N=b.cells_per_stage,
        batch_size=b.batch_size,
        max_batches=b.max_batches_per_epoch,
    )
    _write_json(out, {"format": CHUNK_FORMAT, "task": task, "hp": hp, "chunk": chunk, "records": records})


def read_chunk(path: str | os.PathLike) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    if data.get("format") != CHUNK_FORMAT:
        raise ValueError(f"{path} is not an NB201 chunk file ({CHUNK_FORMAT}); delete it and rerun its job")
    return data["records"]


def table_job(task: str, hp: str, chunks: Iterable[str | os.PathLike], out: str | os.PathLike) -> None:
    """Merge the chunks of ``task``'s ``hp``-epoch table into one file in the official format."""
    records = [r for path in chunks for r in read_chunk(path)]
    table = Table.from_records(records, task, hp)
    table.write_official(out)
    log.info("%s hp=%s: %d cells -> %s", task, hp, len(table.indices), out)


def load_tables(
    task: str, low: str | os.PathLike, final: str | os.PathLike, lockfile: str | os.PathLike | None = None
) -> tuple[Table, Table]:
    """Read a task's two tables; with ``lockfile`` (official files), check them against it first."""
    if lockfile is None:
        return read_official(low, task=task), read_official(final, task=task)
    from nb360.data.rawfolder import LockFile
    from nb360.nb201.table import verify_official

    lock = LockFile(Path(lockfile))
    return verify_official(low, lock, task=task), verify_official(final, lock, task=task)


def search_job(
    task: str,
    low: str | os.PathLike,
    final: str | os.PathLike,
    out: str | os.PathLike,
    *,
    runs: int,
    seed: int,
    source: str,
    lockfile: str | os.PathLike | None = None,
    algorithms: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every NAS algorithm, ``runs`` seeded runs, on the low-fidelity table; the results as JSON."""
    from nb360.nb201 import algorithms as algos

    low_table, final_table = load_tables(task, low, final, lockfile)
    view = low_table.search_view(final_table)
    lookup = algos.compile_table(view)
    median_cost = statistics.median(view.cost(i, view.max_epochs) for i in view.indices)
    budget = plan.time_budget(task, len(view.indices), median_cost)
    finals = [view.final(i) for i in view.indices]
    result: dict[str, Any] = {
        "format": SEARCH_FORMAT,
        "task": task,
        "source": source,
        "time_budget": budget,
        "final_higher_is_better": view.final_higher_is_better,
        "final_metric": "test accuracy (%)" if view.final_higher_is_better else "test rel. L2",
        "best_final": max(finals) if view.final_higher_is_better else min(finals),
        "cells": len(view.indices),
        "epochs": {"low": low_table.epochs, "final": final_table.epochs},
        "tables": {"low": str(low), "final": str(final)},
        "algorithms": {},
    }
    for name in algorithms or algos.ALGORITHMS:
        t0 = time.perf_counter()
        results = algos.run_many(lookup, name, runs=runs, seed=seed, budget=budget)
        result["algorithms"][name] = [
            {
                "seed": r.seed,
                "index": r.index,
                "final": r.final,
                "time": r.total_time,
                "trajectory": [list(p) for p in r.trajectory],
            }
            for r in results
        ]
        log.info("%s: %s, %d runs in %.1f s", task, name, runs, time.perf_counter() - t0)
    _write_json(out, result)
    return result


def report_job(searches: Iterable[str | os.PathLike], outputs: Mapping[str, Any]) -> None:
    """Tables and figures from the search files (and the tables they name)."""
    from nb360.nb201 import report

    data = [json.loads(Path(p).read_text()) for p in searches]
    for d in data:
        if d.get("format") != SEARCH_FORMAT:
            raise ValueError(f"not an NB201 search file ({SEARCH_FORMAT}): task {d.get('task')}")
    report.write_algorithms_table(data, outputs["algorithms_csv"], outputs["algorithms_md"])
    for d, png in zip(data, outputs["searches"], strict=True):
        report.plot_search(d, png, Path(png).with_suffix(".pdf"))
    tables = [
        read_official(d["tables"][fidelity], task=d["task"]) for d in data for fidelity in ("low", "final")
    ]
    report.write_correlations(tables, outputs["correlations_csv"], outputs["correlations_md"])
    distribution = Path(outputs["distribution"])
    report.plot_distribution(tables, distribution, distribution.with_suffix(".pdf"))
