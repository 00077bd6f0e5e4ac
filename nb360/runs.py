"""Per-run outputs (task x method x seed) and their collection into the tidy score table.

Search methods also write ``arch.json`` (:func:`write_arch`, format ``nb360-arch/1``), the file their
retraining reads back (:func:`read_arch`)::

    {"format": "nb360-arch/1", "task": "cifar100", "method": "gaea", "seed": 0, "budget": "smoke",
     "kind": "darts_genotype", "arch": {...the method's architecture...}, "summary": "one line",
     "search": {"seconds": 12.3, "device": "cpu"}}

A method with a hyper-parameter stage (DASH) writes ``hparams.json`` beside it (:func:`write_hparams`,
format ``nb360-hparams/1``), read back by its retraining (:func:`read_hparams`)::

    {"format": "nb360-hparams/1", "task": "ninapro", "method": "dash", "seed": 0, "budget": "smoke",
     "hparams": {"lr": 0.1, ...}, "summary": "one line", "trials": [{..., "value": 0.2}],
     "tune": {"seconds": 8.1, "device": "cpu"}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb360.data.shards import atomic_write_text

if TYPE_CHECKING:  # nb360.train imports torch, which the report jobs that read runs do not need
    import pandas as pd

    from nb360.train import RunResult

ARCH_FORMAT = "nb360-arch/1"
HPARAMS_FORMAT = "nb360-hparams/1"

SCORE_COLUMNS = ["task", "method", "seed", "metric", "value", "lower_is_better", "data_source"]


def write_run(
    result: RunResult,
    scores_path: str | os.PathLike,
    history_path: str | os.PathLike,
    meta: Mapping[str, Any],
) -> None:
    """``scores.json`` (final metrics) and ``history.json`` (per-epoch record), each written atomically."""
    body = {
        **meta,
        "phase": result.phase,
        "splits": list(result.eval_splits),
        "params": result.params,
        "device": result.device,
    }
    if result.selected_epoch is not None:
        body["selected_epoch"] = result.selected_epoch
    if result.reused_from is not None:
        body["reused_from"] = result.reused_from
    atomic_write_text(
        history_path, json.dumps({**body, "epochs": result.history, "test": result.metrics}, indent=1)
    )
    atomic_write_text(scores_path, json.dumps({**body, "metrics": result.metrics}, indent=1))


def reuse_run(scores_path: str | os.PathLike) -> RunResult:
    """The result of another method's run (its ``scores.json`` and the ``history.json`` beside it), as this
    method's: the same training, not run twice (see ``MethodInfo.reuses``)."""
    from nb360.train import RunResult

    scores_path = Path(scores_path)
    history_path = scores_path.with_name("history.json")
    try:
        history = json.loads(history_path.read_text())
        scores = json.loads(scores_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RuntimeError(
            f"{history_path} or {scores_path} cannot be read ({e}); rerun the job that writes them"
        ) from e
    if history.get("test") != scores.get("metrics"):
        raise RuntimeError(f"{history_path} and {scores_path} disagree; rerun the job that writes them")
    return RunResult(
        dict(scores["metrics"]),
        list(history["epochs"]),
        int(scores["params"]),
        str(scores["phase"]),
        tuple(scores["splits"]),
        str(scores["device"]),
        0.0,
        scores.get("selected_epoch"),
        reused_from=str(scores_path),
    )


def collect_scores(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per task, method, seed and metric; every metric is in the paper's lower-is-better form."""
    import pandas as pd  # only the report jobs collect scores: training jobs skip its 0.2 s import

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


def write_search_history(result: Any, path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    """``search.json``: the search's per-epoch (or per-trial) record, its wall time and device."""
    body = {**meta, "kind": result.kind, "summary": result.summary, "device": result.device}
    body |= {"seconds": result.seconds, "history": result.history}
    atomic_write_text(path, json.dumps(body, indent=1) + "\n")


def write_arch(
    kind: str,
    arch: Mapping[str, Any],
    summary: str,
    path: str | os.PathLike,
    meta: Mapping[str, Any],
    search: Mapping[str, Any] | None = None,
) -> None:
    """The searched architecture of one task x method x seed, written atomically."""
    body = {"format": ARCH_FORMAT, **meta, "kind": kind, "arch": dict(arch), "summary": summary}
    body["search"] = dict(search or {})
    atomic_write_text(path, json.dumps(body, indent=1) + "\n")


def job_meta(ctx: Any, method: str, data_source: str, placement: Any) -> dict[str, Any]:
    """What every job's record says about its run: task, method, seed, budget, data source and placement
    (``ctx`` a :class:`~nb360.methods.RunContext`, ``placement`` a :class:`~nb360.devices.Placement`)."""
    return {
        "task": ctx.task.name,
        "method": method,
        "seed": ctx.seed,
        "budget": ctx.budget,
        "data_source": data_source,
        "placement": placement.record(),
    }


def _read_record(path: Path, fmt: str, what: str, missing: str, rerun: str) -> dict[str, Any]:
    """A JSON record of format ``fmt`` (an nb360 ``what`` file); a missing file says ``missing``, an
    unreadable one to delete it and ``rerun``."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: {missing} (snakemake {path})")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun {rerun}") from e
    if not isinstance(body, dict) or body.get("format") != fmt:
        raise ValueError(f"{path} is not an nb360 {what} file (format {fmt!r} expected)")
    return body


def read_arch(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The architecture record of ``path``; ``kind``: the format the caller can build (checked)."""
    path = Path(path)
    missing = "no searched architecture; run the method's search first"
    body = _read_record(path, ARCH_FORMAT, "architecture", missing, "the search")
    if kind is not None and body.get("kind") != kind:
        raise ValueError(
            f"{path} holds a {body.get('kind')!r} architecture, but {kind!r} is needed: "
            "it was written by another method"
        )
    return body


def write_hparams(result: Any, path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    """The hyper-parameters a tune stage chose (a :class:`~nb360.methods.TuneResult`), written atomically."""
    body = {"format": HPARAMS_FORMAT, **meta, "hparams": dict(result.hparams), "summary": result.summary}
    body |= {"trials": list(result.trials), "tune": {"seconds": result.seconds, "device": result.device}}
    atomic_write_text(path, json.dumps(body, indent=1) + "\n")


def read_hparams(path: str | os.PathLike, keys: Iterable[str] = ()) -> dict[str, Any]:
    """The record of ``path`` (:func:`write_hparams`); ``keys``: the hyper-parameters the caller needs
    (checked), so a file of another method or version stops the job instead of training with defaults."""
    path = Path(path)
    missing = "no tuned hyper-parameters; run the method's tune stage first"
    body = _read_record(path, HPARAMS_FORMAT, "hyper-parameter", missing, "the tune stage")
    hparams = body.get("hparams")
    missing = [k for k in keys if not isinstance(hparams, dict) or k not in hparams]
    if missing:
        raise ValueError(
            f"{path}: hyper-parameter(s) {', '.join(missing)} missing; delete it and rerun the tune stage"
        )
    return body


def check_implied_params(path: str | os.PathLike, implied: int, built: int) -> None:
    """Stops a retraining whose network (``built`` parameters) is not the one its ``arch.json`` implies
    (``implied``, recorded by the search): the file was searched under another budget or version."""
    if built != implied:
        raise ValueError(
            f"{path}: the architecture implies {implied} parameters, the retraining network has {built}: "
            "it was searched under another budget; rerun the search"
        )
