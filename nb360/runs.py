"""Per-run outputs (task x method x seed) and their collection into the tidy score table."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from nb360.data.shards import atomic_write_text
from nb360.train import RunResult

SCORE_COLUMNS = ["task", "method", "seed", "metric", "value", "lower_is_better", "data_source"]


def write_run(
    result: RunResult,
    scores_path: str | os.PathLike,
    history_path: str | os.PathLike,
    meta: Mapping[str, Any],
) -> None:
    """``scores.json`` (final metrics) and ``history.json`` (per-epoch record), each written atomically."""
    body = {**meta, "phase": result.phase, "splits": list(result.eval_splits), "params": result.params}
    atomic_write_text(
        history_path, json.dumps({**body, "epochs": result.history, "test": result.metrics}, indent=1)
    )
    atomic_write_text(scores_path, json.dumps({**body, "metrics": result.metrics}, indent=1))


def collect_scores(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per task, method, seed and metric; every metric is in the paper's lower-is-better form."""
    rows = []
    for p in paths:
        run = json.loads(Path(p).read_text())
        for metric, value in run["metrics"].items():
            rows.append(
                {
                    "task": run["task"],
                    "method": run["method"],
                    "seed": int(run["seed"]),
                    "metric": metric,
                    "value": float(value),
                    "lower_is_better": True,
                    "data_source": run["data_source"],
                }
            )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def write_scores(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    df = collect_scores(paths)
    atomic_write_text(out, df.to_csv(index=False))
    return df
