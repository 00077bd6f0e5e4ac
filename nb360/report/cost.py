"""What each method cost: the search-cost table and the error-versus-compute figure (PNG and PDF).

The times come from Snakemake's ``benchmark:`` files, one per job, which the workflow writes next to the
job's JSON output (:func:`benchmark_path`)::

    results/runs/{task}/{method}/seed{seed}/scores.json          -> .../benchmark.tsv   (retrain job)
    results/search/{task}/{method}/seed{seed}/arch.json          -> .../benchmark.tsv   (search job)
    results/search/{task}/{method}/seed{seed}/worker{i}.json     -> .../worker{i}.benchmark.tsv
    results/search/{task}/{method}/seed{seed}/hparams.json       -> .../hparams.benchmark.tsv (tune job)

A benchmark file has Snakemake's columns ``s, h:m:s, max_rss, ..., mean_load, cpu_time``: ``s`` is the job's
wall-clock seconds, ``cpu_time`` the user + system CPU seconds of all its processes ("NA" when the job ended
before Snakemake's first sample). A file with several rows (``repeat()``) counts as the mean of its rows,
the cost of one run.

A benchmark file holds only the job's last, successful attempt. The attempts before it (killed, failed,
retried, requeued by SLURM) come from the job's attempts file beside it (:mod:`nb360.attempts`): each one's
wall and CPU seconds up to its end or its last heartbeat, on its own device. A job's cost is its benchmark
plus those earlier attempts; ``attempts`` counts them all (1: the job succeeded at once; a job without an
attempts file, from before they were written, counts its benchmark alone).

Per job: wall hours; GPU-hours = wall hours × GPUs, where a job on CUDA holds one GPU (every method trains
on one device) and a CPU job none; CPU core-hours = ``cpu_time`` / 3600, or wall hours × the job's threads
where ``cpu_time`` is missing. The device is the one the job recorded: ``scores.json["device"]`` for a
retrain job, ``arch.json["search"]["device"]`` for a search job, and a worker's own ``"device"`` (the
search's where its record has none; a tune job's ``hparams.json["tune"]["device"]``). A method's search cost
is its search job plus all its workers plus its hyper-parameter stage (the tune job: DASH's selection, like
WRN-ASHA's tuning, is part of what the method spends before its final training); methods without a search
cost 0 there. Per task and method the table shows the mean over seeds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from nb360.attempts import SHARED_FOLDER_OUTPUTS, attempts_path, job_attempts, read_attempts
from nb360.report.figures import (
    STYLE,
    legend_in_blank_cells,
    method_colours,
    new_figure,
    panel_grid,
    plain_log_ticks,
    save_figure,
)
from nb360.report.tables import (
    DATA_SOURCE_CAPTIONS,
    MISSING,
    data_source,
    method_order,
    method_title,
    metric_format,
    order_rows,
    primary_metric,
    task_order,
    task_title,
    write_text_atomic,
)
from nb360.runs import read_arch, read_hparams

BENCHMARK_NAME = "benchmark.tsv"  # the search and retrain rules' ``benchmark:`` file, next to their JSON
DEVICE_GPUS = {"cpu": 0, "cuda": 1}  # GPUs one job holds, by device type (one device per job)
MIN_SECONDS = 1.0  # the log axis of the figure starts here: a job shorter than a second is drawn at 1 s

JOB_COLUMNS = [
    "task", "method", "seed", "stage", "job", "device", "wall_h", "gpu_h", "cpu_core_h", "cpu_time_measured",
    "attempts", "attempts_recorded", "data_source", "budget", "benchmark",
]  # fmt: skip
SEED_COLUMNS = [
    "task", "method", "seed", "device", "search_h", "retrain_h", "total_h", "gpu_h", "cpu_core_h",
    "search_jobs", "jobs", "attempts", "metric", "error", "data_source", "budget",
]  # fmt: skip
TABLE_COLUMNS = [
    "task", "method", "device", "search_h", "retrain_h", "total_h", "gpu_h", "cpu_core_h", "n_seeds", "jobs",
    "attempts",
]  # fmt: skip
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


# ------------------------------------------------------------------------------------------- one job


@dataclass(frozen=True)
class Benchmark:
    """One job's Snakemake benchmark: wall-clock seconds and CPU seconds (``None``: not measured)."""

    seconds: float
    cpu_seconds: float | None


def benchmark_path(json_path: str | os.PathLike) -> Path:
    """The benchmark file of the job that wrote ``json_path``: ``benchmark.tsv`` beside ``arch.json`` or
    ``scores.json``, ``{stem}.benchmark.tsv`` beside the other jobs' files (``worker{i}.json``,
    ``hparams.json``)."""
    path = Path(json_path)
    if path.name in SHARED_FOLDER_OUTPUTS:
        return path.with_name(BENCHMARK_NAME)
    return path.with_name(f"{path.stem}.{BENCHMARK_NAME}")


def read_benchmark(path: str | os.PathLike) -> Benchmark:
    """Read a Snakemake benchmark TSV; errors name the file and say what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no benchmark file; it is written by the job's Snakemake `benchmark:` directive, "
            "so rerun that job with Snakemake (e.g. --forcerun) rather than by hand"
        )
    try:
        df = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty benchmark file; rerun the job that writes it") from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: not a Snakemake benchmark TSV ({e})") from None
    if "s" not in df.columns:
        raise ValueError(
            f"{path}: not a Snakemake benchmark TSV (no column 's'; "
            f"columns: {', '.join(map(str, df.columns))})"
        )
    if df.empty:
        raise ValueError(f"{path}: benchmark file has a header but no row; rerun the job that writes it")
    seconds = pd.to_numeric(df["s"], errors="coerce")
    if seconds.isna().any() or (seconds < 0).any():
        raise ValueError(f"{path}: column 's' must hold non-negative seconds, found {df['s'].tolist()}")
    cpu = pd.to_numeric(df["cpu_time"], errors="coerce") if "cpu_time" in df.columns else None
    # Repeated benchmarks (several rows) are repetitions of one job: the mean is the cost of one run.
    cpu_seconds = float(cpu.mean()) if cpu is not None and cpu.notna().all() else None
    return Benchmark(float(seconds.mean()), cpu_seconds)


def device_type(device: str, origin: str = "device") -> str:
    """``"cpu"`` or ``"cuda"`` for a recorded torch device (``"cuda:1"`` -> ``"cuda"``)."""
    kind = str(device).split(":", 1)[0].strip()
    if kind not in DEVICE_GPUS:
        # Counting an unknown accelerator as 0 GPUs would understate the cost; better to stop and say so.
        raise ValueError(f"{origin}: device {device!r} is neither CPU nor CUDA; GPU-hours are undefined")
    return kind


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; run the job that writes it") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return body


def _require(body: Mapping[str, Any], keys: Iterable[str], path: Path) -> None:
    missing = [k for k in keys if k not in body]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}; rerun the job that wrote it")


def _job(
    meta: Mapping[str, Any], stage: str, job: str, device: str, json_path: Path, threads: int
) -> dict[str, Any]:
    """One job's row; ``json_path`` is the JSON file the job wrote (its benchmark and attempts files lie
    beside it): the benchmark's last attempt plus the earlier attempts of the attempts file."""
    bench_path = benchmark_path(json_path)
    bench = read_benchmark(bench_path)
    kind = device_type(device, str(json_path))
    att_path = attempts_path(json_path)
    earlier, _ = job_attempts(read_attempts(att_path))
    kinds = [device_type(a.kind, f"{att_path}, attempt {a.attempt}") for a in earlier]
    wall_s = bench.seconds + sum(a.wall_s for a in earlier)
    gpu_s = bench.seconds * DEVICE_GPUS[kind]  # one GPU per attempt on CUDA, each on its own device
    gpu_s += sum(a.wall_s * DEVICE_GPUS[k] for a, k in zip(earlier, kinds, strict=True))
    cpu_last = bench.cpu_seconds if bench.cpu_seconds is not None else bench.seconds * threads
    wall_h = wall_s / 3600
    return {
        "task": str(meta["task"]),
        "method": str(meta["method"]),
        "seed": int(meta["seed"]),
        "stage": stage,
        "job": job,
        "device": _devices([kind, *kinds]),
        "wall_h": wall_h,
        "gpu_h": gpu_s / 3600,
        "cpu_core_h": (cpu_last + sum(a.cpu_s for a in earlier)) / 3600,
        "cpu_time_measured": bench.cpu_seconds is not None,
        "attempts": 1 + len(earlier),
        "attempts_recorded": att_path.exists(),
        "data_source": str(meta.get("data_source", "")),
        "budget": str(meta.get("budget", "")),
        "benchmark": str(bench_path),
    }


def job_costs(
    runs: Iterable[str | os.PathLike],
    searches: Iterable[str | os.PathLike] = (),
    workers: Iterable[str | os.PathLike] = (),
    tunes: Iterable[str | os.PathLike] = (),
    *,
    threads: int = 1,
) -> pd.DataFrame:
    """One row per job (columns :data:`JOB_COLUMNS`): retrain jobs from their ``scores.json``, search jobs
    from their ``arch.json``, workers of parallel searches from their ``worker{i}.json``, tune jobs (stage
    "search", job "tune") from their ``hparams.json``; each job's times
    from its benchmark file (:func:`benchmark_path`) and its earlier attempts
    (:func:`nb360.attempts.attempts_path`).

    ``threads``: the jobs' thread count, used only where a benchmark has no CPU time.
    """
    rows = []
    for p in map(Path, runs):
        run = _read_json(p)
        _require(run, ("task", "method", "seed", "device"), p)
        # A run that reuses another method's identical training is charged that training's cost.
        source = Path(run["reused_from"]) if run.get("reused_from") else p
        rows.append(_job(run, "retrain", "retrain", run["device"], source, threads))
    search_of: dict[Path, dict[str, Any]] = {}
    for p in map(Path, searches):
        arch = read_arch(p)
        _require(arch, ("task", "method", "seed"), p)
        device = (arch.get("search") or {}).get("device")
        if device is None:
            raise ValueError(
                f"{p}: no search device (arch.json 'search': {{'device': ...}}); rerun the search"
            )
        search_of[p.parent] = {**arch, "device": device}
        rows.append(_job(arch, "search", "search", device, p, threads))
    for p in map(Path, workers):
        search = search_of.get(p.parent)
        if search is None:
            raise ValueError(f"{p}: a search worker without its search's arch.json among the inputs")
        record = _read_json(p)
        device = record.get("device", search["device"])
        rows.append(_job(search, "search", p.stem, device, p, threads))
    for p in map(Path, tunes):
        if p.parent not in search_of:
            raise ValueError(f"{p}: a tune stage without its search's arch.json among the inputs")
        record = read_hparams(p)
        _require(record, ("task", "method", "seed"), p)
        device = (record.get("tune") or {}).get("device")
        if device is None:
            raise ValueError(f"{p}: no tune device (hparams.json 'tune': {{'device': ...}}); rerun it")
        rows.append(_job(record, "search", "tune", device, p, threads))
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


# ------------------------------------------------------------------------------------ per seed, per method


def _primary_errors(runs: Iterable[str | os.PathLike]) -> pd.DataFrame:
    rows = []
    for p in map(Path, runs):
        run = _read_json(p)
        _require(run, ("task", "method", "seed", "metrics"), p)
        metric = primary_metric(run["task"], run["metrics"])
        if metric not in run["metrics"]:
            raise ValueError(f"{p}: no {metric!r}, the primary metric of {run['task']}")
        rows.append(
            {
                "task": run["task"],
                "method": run["method"],
                "seed": int(run["seed"]),
                "metric": metric,
                "error": float(run["metrics"][metric]),
            }
        )
    return pd.DataFrame(rows, columns=["task", "method", "seed", "metric", "error"])


def _devices(labels: Iterable[str]) -> str:
    """The device types of several jobs or attempts (each a type or a label of types) in one label:
    ``"cuda"``, ``"cpu"`` or ``"cpu+cuda"``."""
    return "+".join(sorted({k for label in labels for k in label.split("+")}))


def seed_costs(
    runs: Iterable[str | os.PathLike],
    searches: Iterable[str | os.PathLike] = (),
    workers: Iterable[str | os.PathLike] = (),
    tunes: Iterable[str | os.PathLike] = (),
    *,
    threads: int = 1,
) -> pd.DataFrame:
    """One row per task × method × seed (columns :data:`SEED_COLUMNS`): hours of the search (job plus
    workers plus tune stage; 0 without a search), of the retraining, their total, GPU- and CPU core-hours,
    and the test error of the task's primary metric."""
    runs = list(runs)
    jobs = job_costs(runs, searches, workers, tunes, threads=threads)
    keys = ["task", "method", "seed"]
    if jobs.empty:
        raise ValueError("no runs given")
    retrained = set(map(tuple, jobs.loc[jobs["stage"] == "retrain", keys].to_numpy().tolist()))
    orphans = jobs[jobs["stage"] == "search"].drop_duplicates(keys)
    orphans = orphans[[tuple(r) not in retrained for r in orphans[keys].to_numpy().tolist()]]
    if not orphans.empty:
        raise ValueError(
            f"search without a retrained run: {orphans['benchmark'].iloc[0]} "
            "(the cost of a method is its search plus its retraining; give both)"
        )
    stage_h = jobs.pivot_table(index=keys, columns="stage", values="wall_h", aggfunc="sum", fill_value=0.0)
    g = jobs.groupby(keys)
    out = pd.DataFrame(
        {
            "device": g["device"].agg(_devices),
            "search_h": stage_h.get("search", 0.0),
            "retrain_h": stage_h["retrain"],
            "gpu_h": g["gpu_h"].sum(),
            "cpu_core_h": g["cpu_core_h"].sum(),
            "search_jobs": g["stage"].agg(lambda s: int((s == "search").sum())),
            "jobs": g["job"].count(),
            "attempts": g["attempts"].sum(),
        }
    )
    out["total_h"] = out["search_h"] + out["retrain_h"]
    # Provenance is the retrain job's (search jobs of the same run share it).
    retrain = jobs[jobs["stage"] == "retrain"].set_index(keys)
    out["data_source"] = retrain["data_source"]
    out["budget"] = retrain["budget"]
    out = out.reset_index().merge(_primary_errors(runs), on=keys, how="left")
    return order_rows(out[SEED_COLUMNS], ["seed"])


def cost_table(seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per task and method (columns :data:`TABLE_COLUMNS`), in table order; ``jobs`` and
    ``attempts`` are totals over the seeds (more attempts than jobs: some were killed or failed and ran
    again, and the hours include those attempts)."""
    g = seeds.groupby(["task", "method"])
    hours = ["search_h", "retrain_h", "total_h", "gpu_h", "cpu_core_h"]
    out = g[hours].mean()
    out["device"] = g["device"].agg(_devices)
    out["n_seeds"] = g["seed"].nunique()
    out["jobs"] = g["jobs"].sum()
    out["attempts"] = g["attempts"].sum()
    return order_rows(out.reset_index()[TABLE_COLUMNS])


def format_hours(hours: float) -> str:
    """Hours at a readable precision: three significant digits below 10 h, one decimal above."""
    if hours is None or math.isnan(hours):
        return MISSING
    if hours == 0:
        return "0"
    if hours < 0.001:
        return "<0.001"
    return f"{hours:.3g}" if hours < 10 else f"{hours:,.1f}"


def cost_caption(seeds: pd.DataFrame) -> str:
    """Caption: data source, budget, seeds, and how each column was measured."""
    source = data_source(seeds)
    budgets = ", ".join(sorted(set(seeds["budget"]) - {""})) or "unknown"
    n = seeds.groupby(["task", "method"])["seed"].nunique()
    lo, hi = int(n.min()), int(n.max())
    count = f"{hi} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"
    return (
        f"Compute cost per task and method on {DATA_SOURCE_CAPTIONS.get(source, source)}, budget {budgets}; "
        f"mean over {count}. Wall-clock hours from Snakemake's benchmark files plus the jobs' earlier "
        "attempts (killed, failed or requeued, up to their last heartbeat): search = the search job "
        "plus all workers of a parallel search plus a hyper-parameter stage (DASH's tune job; 0 for methods "
        "without a search), retrain = training on "
        "train ∪ validation and the test evaluation. GPU-hours = wall hours of jobs that ran on CUDA (one "
        "GPU per job), 0 on CPU; CPU core-hours = CPU time (user + system) of the jobs' processes. Jobs and "
        "attempts: totals over the seeds."
    )


def _to_markdown(table: pd.DataFrame, caption: str) -> str:
    header = [
        "Task", "Method", "Device", "Search (h)", "Retrain (h)", "Total (h)", "GPU-hours", "CPU core-hours",
        "Seeds", "Jobs", "Attempts",
    ]  # fmt: skip
    lines = [f"**Table.** {caption}", "", "| " + " | ".join(header) + " |"]
    lines.append("| " + " | ".join([":---"] * 3 + ["---:"] * 8) + " |")
    for r in table.itertuples(index=False):
        hours = [r.search_h, r.retrain_h, r.total_h, r.gpu_h, r.cpu_core_h]
        cells = [task_title(r.task), method_title(r.method), r.device, *map(format_hours, hours)]
        lines.append("| " + " | ".join([*cells, *map(str, (r.n_seeds, r.jobs, r.attempts))]) + " |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- the figure


def compute_axis(seeds: pd.DataFrame) -> tuple[str, str]:
    """The column and axis label of the figure's x: GPU-hours if any job ran on CUDA, else CPU core-hours.

    GPU- and CPU-hours are not one quantity, so the axis shows one of them: on a GPU run a method that used
    no GPU (the trivial baseline always runs on the CPU) has 0 GPU-hours, which is what it cost in GPU time.
    """
    if "cuda" in _devices(seeds["device"]).split("+"):
        return "gpu_h", "GPU-hours of search + retraining (log scale)"
    return "cpu_core_h", "CPU core-hours of search + retraining (log scale)"


def error_vs_cost(seeds: pd.DataFrame, out_stem: str | os.PathLike) -> list[Path]:
    """One panel per task: test error of the primary metric (y) against compute hours of search + retrain
    (x, log scale, :func:`compute_axis`), one marker per method at the mean over seeds, bars over the seeds'
    range (min to max) where there are several. A log axis cannot show 0 or tiny costs: they are drawn at
    :data:`MIN_SECONDS`, and a method that cost 0 (no GPU used) with a hollow marker. Returns the PNG and
    PDF paths."""
    if seeds.empty:
        raise ValueError("no runs to draw")
    x_col, x_label = compute_axis(seeds)
    tasks = task_order(seeds["task"])
    methods = method_order(seeds["method"])
    colours = method_colours(methods)
    markers = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(methods)}
    floor = MIN_SECONDS / 3600
    rows, cols = panel_grid(len(tasks))
    any_zero = False
    with mpl.rc_context(STYLE):
        fig = new_figure(3.1 * cols, 2.5 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, task in zip(axes.flat, tasks, strict=False):
            panel = seeds[seeds["task"] == task]
            xs_all = []
            for method in [m for m in methods if m in set(panel["method"])]:
                run = panel[panel["method"] == method]
                raw = run[x_col].to_numpy(float)
                x = np.maximum(raw, floor)
                y = run["error"].to_numpy(float)
                mx, my = max(float(raw.mean()), floor), float(y.mean())
                several = len(run) > 1
                zero = float(raw.max()) == 0.0
                any_zero |= zero
                ax.errorbar(
                    mx,
                    my,
                    xerr=[[max(mx - x.min(), 0.0)], [max(x.max() - mx, 0.0)]] if several else None,
                    yerr=[[my - y.min()], [y.max() - my]] if several else None,
                    color=colours[method],
                    marker=markers[method],
                    markerfacecolor="white" if zero else colours[method],
                    ms=6,
                    linestyle="none",
                    elinewidth=0.9,
                    capsize=2,
                )
                xs_all += [*x, mx]
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis, min(xs_all), max(xs_all))
            ax.set_title(task_title(task))
            metrics = set(panel["metric"])
            metric = metrics.pop() if len(metrics) == 1 else "error"
            ax.set_ylabel(f"test {metric_format(metric).label} ↓")
        fig.supxlabel(x_label, fontsize=STYLE["axes.labelsize"])
        handles = [
            Line2D([], [], color=colours[m], marker=markers[m], linestyle="none", ms=6, label=method_title(m))
            for m in methods
        ]
        if any_zero:
            handles.append(
                Line2D(
                    [],
                    [],
                    color="black",
                    marker="o",
                    markerfacecolor="white",
                    linestyle="none",
                    ms=6,
                    label=f"hollow: 0 {x_label.split(' of ')[0]} (drawn at {MIN_SECONDS:g} s)",
                )
            )
        legend_in_blank_cells(fig, axes, len(tasks), handles)
        return save_figure(fig, out_stem)


# ---------------------------------------------------------------------------------------------- the rule


def write_cost(
    runs: Iterable[str | os.PathLike],
    searches: Iterable[str | os.PathLike],
    workers: Iterable[str | os.PathLike],
    tunes: Iterable[str | os.PathLike] = (),
    *,
    csv: str | os.PathLike,
    md: str | os.PathLike,
    seeds_csv: str | os.PathLike,
    figure: str | os.PathLike,
    threads: int = 1,
) -> pd.DataFrame:
    """Rule ``cost``: the cost table (CSV, Markdown with caption), the per-seed CSV and the error-versus-cost
    figure (``figure`` is the path stem; ``.png`` and ``.pdf`` are written). Returns the table."""
    seeds = seed_costs(runs, searches, workers, tunes, threads=threads)
    table = cost_table(seeds)
    write_text_atomic(seeds_csv, seeds.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(csv, table.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(md, _to_markdown(table, cost_caption(seeds)))
    error_vs_cost(seeds, figure)
    return table


__all__ = [
    "Benchmark",
    "benchmark_path",
    "compute_axis",
    "cost_caption",
    "cost_table",
    "device_type",
    "error_vs_cost",
    "format_hours",
    "job_costs",
    "read_benchmark",
    "seed_costs",
    "write_cost",
]
