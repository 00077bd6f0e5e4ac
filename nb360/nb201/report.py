"""Tables and figures of the NB201-space benchmark on NinaPro and Darcy (nb201.md 6.4), from plain inputs.

Inputs are the search jobs' results files (JSON, format ``nb360-nb201-search/1``, one per task, see
:func:`validate_search`) and :class:`~nb360.nb201.table.Table` objects, never the NAS algorithms' Python
objects, so the report can be rebuilt from the files alone.

* :func:`algorithms_table` / :func:`write_algorithms_table`: the final value of the cell each algorithm
  returned, mean and std over its runs, per task (``results/tables/nb201_algorithms.{csv,md}``).
* :func:`plot_search`: best-so-far final value against simulated time, per algorithm
  (``results/figures/nb201_search_{task}.png`` and ``.pdf``). :func:`step_curve` and :func:`search_curves`
  compute what it draws.
* :func:`correlations` / :func:`write_correlations`: rank correlations between the low- and high-fidelity
  tables of a task and between the two tasks (``results/tables/nb201_correlations.{csv,md}``).
* :func:`plot_distribution`: the distribution (ECDF) of the final test values over the evaluated cells,
  one panel per task, low vs high fidelity (``results/figures/nb201_distribution.png``).

Std is the population std (``np.std``, ddof 0), as the NB360 search scripts print it (nb201.md 6.4); a
single run has no std (NaN). matplotlib is imported inside the plotting functions (Agg canvas, no pyplot),
so importing this module stays cheap for the jobs that only write tables.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nb360.data.shards import atomic_write_bytes, atomic_write_text
from nb360.nb201.table import TASKS, Table

SEARCH_FORMAT = "nb360-nb201-search/1"
SOURCES = ("embedded", "ours", "official")
SOURCE_CAPTIONS = {
    "embedded": "embedded synthetic tables (a smoke test; not the benchmark's numbers)",
    "ours": "tables we trained ourselves in the NB201 space",
    "official": "the official NB360 NATS-Bench files",
}
# The algorithms in the order of nb201.md 6.4's protocol; names outside this list are shown as given.
ALGORITHMS = {
    "random": "Random search",
    "rea": "Regularized evolution",
    "reinforce": "REINFORCE",
    "hyperband": "Hyperband",
    "bohb": "BOHB",
}
TASK_TITLES = {"ninapro": "NinaPro", "darcy": "Darcy Flow"}
FINAL_METRICS = {"ninapro": "test accuracy (%)", "darcy": "test rel. L2"}
HIGHER_IS_BETTER = {"ninapro": True, "darcy": False}
# The value a table reports per cell (its last epoch): what SearchView.final reports for the final table.
VALUE_KEYS = {"ninapro": "test_acc", "darcy": "test_loss"}
SEARCH_KEYS = (
    "task",
    "source",
    "time_budget",
    "final_higher_is_better",
    "final_metric",
    "best_final",
    "tables",
    "algorithms",
)
ALGORITHM_COLUMNS = ("task", "algorithm", "mean", "std", "runs", "metric", "table_source")
CORRELATION_COLUMNS = (
    "kind",
    "task",
    "x",
    "y",
    "n",
    "kendall_tau",
    "kendall_p",
    "spearman_rho",
    "spearman_p",
)
GRID_POINTS = 401  # default time grid: this many points from 0 to the budget (or the last event)
DPI = 200
_COLOURS = {
    "random": "#7f7f7f",
    "rea": "#1f77b4",
    "reinforce": "#2ca02c",
    "hyperband": "#ff7f0e",
    "bohb": "#d62728",
}
_SPARE_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MISSING = "–"


class SearchResultsError(ValueError):
    """A search results file or object that does not follow ``nb360-nb201-search/1``; the message says why."""


# ------------------------------------------------------------------------------------------ search files


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchResultsError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def validate_search(obj: Any, origin: str = "search results") -> dict[str, Any]:
    """Check a search results object (``nb360-nb201-search/1``) and return a normalised copy.

    Trajectories are ``[[simulated_time, best_so_far_final], ...]`` with non-decreasing times; the value is
    the final (reported) value of the cell that is best so far by the search's own score, so it need not be
    monotone. The task fixes the metric and its direction (NinaPro: test accuracy, higher is better; Darcy:
    test rel. L2, lower is better); a file that says otherwise is refused.
    """
    if not isinstance(obj, Mapping):
        raise SearchResultsError(f"{origin}: expected a JSON object, got {type(obj).__name__}")
    if obj.get("format") != SEARCH_FORMAT:
        raise SearchResultsError(f"{origin}: format is {obj.get('format')!r}, expected {SEARCH_FORMAT!r}")
    missing = [k for k in SEARCH_KEYS if k not in obj]
    if missing:
        raise SearchResultsError(f"{origin}: missing {', '.join(missing)}")
    task = obj["task"]
    if task not in TASKS:
        raise SearchResultsError(
            f"{origin}: unknown task {task!r} (NB201 tables exist for {', '.join(TASKS)})"
        )
    if obj["source"] not in SOURCES:
        raise SearchResultsError(f"{origin}: source {obj['source']!r} is not one of {', '.join(SOURCES)}")
    if (
        obj["final_higher_is_better"] is not HIGHER_IS_BETTER[task]
        or obj["final_metric"] != FINAL_METRICS[task]
    ):
        raise SearchResultsError(
            f"{origin}: {task} reports {FINAL_METRICS[task]!r} (higher is better: {HIGHER_IS_BETTER[task]}), "
            f"the file says {obj['final_metric']!r} (higher is better: {obj['final_higher_is_better']!r})"
        )
    budget = _number(obj["time_budget"], f"{origin}: time_budget")
    if budget <= 0:
        raise SearchResultsError(f"{origin}: time_budget must be positive, got {budget}")
    tables = obj["tables"]
    if not isinstance(tables, Mapping) or not all(isinstance(tables.get(k), str) for k in ("low", "final")):
        raise SearchResultsError(f"{origin}: tables must be {{'low': path, 'final': path}}, got {tables!r}")
    algorithms = obj["algorithms"]
    if not isinstance(algorithms, Mapping) or not algorithms:
        raise SearchResultsError(f"{origin}: algorithms must map each algorithm name to its runs")
    out_algs: dict[str, list[dict[str, Any]]] = {}
    for name, runs in algorithms.items():
        where = f"{origin}: algorithm {name!r}"
        if not isinstance(runs, Sequence) or isinstance(runs, str) or not runs:
            raise SearchResultsError(f"{where}: expected a non-empty list of runs")
        out_runs = []
        for k, run in enumerate(runs):
            w = f"{where}, run {k}"
            if not isinstance(run, Mapping) or any(x not in run for x in ("seed", "index", "final", "time")):
                raise SearchResultsError(f"{w}: a run has seed, index, final, time and trajectory")
            traj = run.get("trajectory", [])
            if not isinstance(traj, Sequence) or isinstance(traj, str):
                raise SearchResultsError(f"{w}: trajectory must be a list of [time, value] pairs")
            points = []
            for p in traj:
                if not isinstance(p, Sequence) or isinstance(p, str) or len(p) != 2:
                    raise SearchResultsError(f"{w}: trajectory point {p!r} is not a [time, value] pair")
                points.append(
                    (_number(p[0], f"{w}: trajectory time"), _number(p[1], f"{w}: trajectory value"))
                )
            if any(b[0] < a[0] for a, b in itertools.pairwise(points)):
                raise SearchResultsError(f"{w}: trajectory times must not decrease")
            out_runs.append(
                {
                    "seed": run["seed"],
                    "index": run["index"],
                    "final": _number(run["final"], f"{w}: final"),
                    "time": _number(run["time"], f"{w}: time"),
                    "trajectory": [list(p) for p in points],
                }
            )
        seeds = [r["seed"] for r in out_runs]
        if len(set(map(repr, seeds))) != len(seeds):
            raise SearchResultsError(f"{where}: two runs share a seed ({seeds}); runs must be independent")
        out_algs[str(name)] = out_runs
    return {
        "format": SEARCH_FORMAT,
        "task": task,
        "source": obj["source"],
        "time_budget": budget,
        "final_higher_is_better": HIGHER_IS_BETTER[task],
        "final_metric": FINAL_METRICS[task],
        "best_final": _number(obj["best_final"], f"{origin}: best_final"),
        "tables": {"low": tables["low"], "final": tables["final"]},
        "algorithms": out_algs,
    }


def load_search(search: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """A validated search results object: ``search`` itself, or the JSON file at that path."""
    if isinstance(search, Mapping):
        return validate_search(search)
    path = Path(search)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SearchResultsError(f"cannot read search results {path}: {e}") from None
    return validate_search(obj, str(path))


def load_searches(searches: Iterable[Mapping[str, Any] | str | os.PathLike]) -> list[dict[str, Any]]:
    """Validated search results, in task order (NinaPro, Darcy); at most one per task."""
    out = [load_search(s) for s in searches]
    tasks = [s["task"] for s in out]
    dup = sorted({t for t in tasks if tasks.count(t) > 1})
    if dup:
        raise SearchResultsError(f"several search results for {', '.join(dup)}; give one file per task")
    return sorted(out, key=lambda s: TASKS.index(s["task"]))


def algorithm_order(names: Iterable[str]) -> list[str]:
    """The known algorithms in protocol order, then any others alphabetically."""
    names = set(names)
    return [a for a in ALGORITHMS if a in names] + sorted(names - set(ALGORITHMS))


def algorithm_title(name: str) -> str:
    """The display name (e.g. "rea" -> "Regularized evolution"); unknown names as given."""
    return ALGORITHMS.get(name, name)


def _colours(names: Iterable[str]) -> dict[str, str]:
    spare = iter(_SPARE_COLOURS * 4)
    return {a: _COLOURS.get(a) or next(spare) for a in algorithm_order(names)}


def _fmt(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return MISSING
    return f"{value:.2f}" if "%" in metric else f"{value:.4f}"


# ------------------------------------------------------------------------------------- algorithms table


def algorithms_table(searches: Iterable[Mapping[str, Any] | str | os.PathLike]) -> pd.DataFrame:
    """Per task and algorithm: mean and std (population; NaN for one run) of the runs' final values.

    Columns :data:`ALGORITHM_COLUMNS`; ``metric`` is the task's final metric, ``table_source`` where the
    searched tables came from (embedded / ours / official).
    """
    rows = []
    for s in load_searches(searches):
        for alg in algorithm_order(s["algorithms"]):
            finals = np.array([r["final"] for r in s["algorithms"][alg]], dtype=float)
            rows.append(
                {
                    "task": s["task"],
                    "algorithm": alg,
                    "mean": float(finals.mean()),
                    "std": float(finals.std()) if len(finals) > 1 else math.nan,
                    "runs": len(finals),
                    "metric": s["final_metric"],
                    "table_source": s["source"],
                }
            )
    return pd.DataFrame(rows, columns=list(ALGORITHM_COLUMNS))


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines


def _sources_caption(sources: Mapping[str, str]) -> str:
    """'source: X' when all tasks share one, else 'sources: NinaPro: X; Darcy Flow: Y'."""
    distinct = sorted(set(sources.values()))
    if len(distinct) == 1:
        return f"table source: {SOURCE_CAPTIONS.get(distinct[0], distinct[0])}"
    return "table sources: " + "; ".join(
        f"{TASK_TITLES.get(t, t)}: {SOURCE_CAPTIONS.get(s, s)}" for t, s in sources.items()
    )


def write_algorithms_table(
    searches: Iterable[Mapping[str, Any] | str | os.PathLike],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Write :func:`algorithms_table` as CSV and as Markdown with a caption line; return the table."""
    loaded = load_searches(searches)
    table = algorithms_table(loaded)
    atomic_write_text(csv_path, table.to_csv(index=False, lineterminator="\n"))
    best = "; ".join(f"{TASK_TITLES[s['task']]} {_fmt(s['best_final'], s['final_metric'])}" for s in loaded)
    sources = _sources_caption({s["task"]: s["source"] for s in loaded})
    caption = (
        "**Table.** NB201 space: the final value (high-fidelity table) of the cell each NAS algorithm "
        "returned within its simulated time budget, mean ± std over runs (population std; std is over the "
        f"runs of one algorithm, each with its own seed); {sources}. "
        f"Best cell in the searched space: {best}."
    )
    rows = [
        (
            TASK_TITLES.get(r.task, r.task),
            algorithm_title(r.algorithm),
            r.metric,
            _fmt(r.mean, r.metric) + ("" if math.isnan(r.std) else f" ± {_fmt(r.std, r.metric)}"),
            str(r.runs),
        )
        for r in table.itertuples()
    ]
    lines = [caption, "", *_md_table(("Task", "Algorithm", "Metric", "Mean ± std", "Runs"), rows)]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return table


# ---------------------------------------------------------------------------------------- search curves


def step_curve(trajectory: Sequence[Sequence[float]], grid: Sequence[float] | np.ndarray) -> np.ndarray:
    """A run's best-so-far value on ``grid``: the value of the last trajectory point at or before each time.

    Step (previous-value) interpolation: a value holds until the next improvement; grid times before the
    first point are NaN (the run has not found anything yet). Points sharing a time: the last one counts.
    """
    grid = np.asarray(grid, dtype=float)
    out = np.full(grid.shape, np.nan)
    if len(trajectory) == 0:
        return out
    times = np.array([p[0] for p in trajectory], dtype=float)
    values = np.array([p[1] for p in trajectory], dtype=float)
    pos = np.searchsorted(times, grid, side="right") - 1
    found = pos >= 0
    out[found] = values[pos[found]]
    return out


def time_grid(search: Mapping[str, Any], points: int = GRID_POINTS) -> np.ndarray:
    """The default common grid: ``points`` times from 0 to the budget or the last trajectory time if later
    (the evaluation that crosses the budget may end after it)."""
    last = max(
        (p[0] for runs in search["algorithms"].values() for r in runs for p in r["trajectory"]), default=0
    )
    return np.linspace(0.0, max(float(search["time_budget"]), last), points)


def search_curves(
    search: Mapping[str, Any] | str | os.PathLike, grid: Sequence[float] | np.ndarray | None = None
) -> dict[str, pd.DataFrame]:
    """Per algorithm, a frame over the time grid: time, mean, std, lo, hi (= mean ∓ std), n (the runs that
    have found a cell by then; the statistics are over those runs, NaN where there are none)."""
    s = load_search(search)
    grid = time_grid(s) if grid is None else np.asarray(grid, dtype=float)
    out = {}
    for alg in algorithm_order(s["algorithms"]):
        curves = np.stack([step_curve(r["trajectory"], grid) for r in s["algorithms"][alg]])
        n = np.sum(~np.isnan(curves), axis=0)
        safe = np.where(np.isnan(curves), 0.0, curves)
        mean = np.where(n > 0, safe.sum(axis=0) / np.maximum(n, 1), np.nan)
        # population std over the runs present at each time (0 for one run: the band collapses to the line)
        dev = np.where(np.isnan(curves), 0.0, curves - mean) ** 2
        std = np.where(n > 0, np.sqrt(dev.sum(axis=0) / np.maximum(n, 1)), np.nan)
        out[alg] = pd.DataFrame(
            {"time": grid, "mean": mean, "std": std, "lo": mean - std, "hi": mean + std, "n": n}
        )
    return out


# --------------------------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style() -> Any:
    import matplotlib as mpl

    from nb360.report.figures import STYLE  # the other report figures' look

    return mpl.rc_context(STYLE)


def _save(fig: Any, png: str | os.PathLike, pdf: str | os.PathLike | None) -> list[Path]:
    """Write the PNG (and the PDF) atomically; no timestamps, so the same input gives the same bytes."""
    import io

    paths = []
    for path, fmt, meta in (
        (png, "png", {"Software": "nb360 / matplotlib"}),
        (pdf, "pdf", {"CreationDate": None, "Creator": "nb360 / matplotlib"}),
    ):
        if path is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=meta)
        atomic_write_bytes(path, buf.getvalue())
        paths.append(Path(path))
    return paths


def _runs_phrase(counts: Sequence[int]) -> str:
    lo, hi = min(counts), max(counts)
    return f"{hi} runs per algorithm" if lo == hi else f"{lo}–{hi} runs per algorithm"


def plot_search(
    search: Mapping[str, Any] | str | os.PathLike,
    png: str | os.PathLike,
    pdf: str | os.PathLike | None = None,
    grid: Sequence[float] | np.ndarray | None = None,
) -> list[Path]:
    """Best-so-far final value against simulated search time, one line per algorithm (mean over runs, band
    mean ± std), the best cell of the table as a dashed line; write ``png`` (and ``pdf``), return paths."""
    s = load_search(search)
    curves = search_curves(s, grid)
    colours = _colours(curves)
    task, metric = s["task"], s["final_metric"]
    counts = [len(r) for r in s["algorithms"].values()]
    same_n = min(counts) == max(counts)
    direction = "higher" if s["final_higher_is_better"] else "lower"
    with _style():
        fig = _new_figure(6.4, 5.2)
        ax = fig.add_subplot()
        for alg, c in curves.items():
            ok = c["n"].to_numpy() > 0
            t = c["time"].to_numpy()[ok]
            n_runs = len(s["algorithms"][alg])
            label = algorithm_title(alg) + ("" if same_n else f" ({n_runs} runs)")
            ax.plot(
                t, c["mean"].to_numpy()[ok], color=colours[alg], lw=1.6, drawstyle="steps-post", label=label
            )
            ax.fill_between(
                t,
                c["lo"].to_numpy()[ok],
                c["hi"].to_numpy()[ok],
                color=colours[alg],
                alpha=0.15,
                step="post",
                lw=0,
            )
        ax.axhline(
            s["best_final"],
            color="black",
            ls="--",
            lw=1.0,
            label=f"best cell in the table ({_fmt(s['best_final'], metric)})",
        )
        ax.axvline(
            s["time_budget"], color="0.5", ls=":", lw=0.8, label=f"time budget ({s['time_budget']:g} s)"
        )
        ax.set_xlabel("simulated search time (s)")
        ax.set_ylabel(f"final {metric} of the best cell so far\n({direction} is better)")
        ax.set_title(f"NB201 space on {TASK_TITLES[task]}: {_runs_phrase(counts)} ({s['source']} tables)")
        # below the axes: the bands fill most of the plot area
        fig.legend(
            loc="outside lower center",
            ncols=2,
            frameon=False,
            title="line: mean over runs; band: mean ± std (runs that have found a cell by then)",
        )
        return _save(fig, png, pdf)


def _values(table: Table) -> dict[int, float]:
    """Each evaluated cell's final value: the table's last epoch, mean over seeds (accuracy % / rel. L2)."""
    key = VALUE_KEYS[table.task]
    return {i: table.query(i)[key] for i in table.indices}


def _by_key(tables: Iterable[Table] | Mapping[Any, Table]) -> dict[tuple[str, str], Table]:
    items = tables.values() if isinstance(tables, Mapping) else tables
    out: dict[tuple[str, str], Table] = {}
    for t in items:
        if not isinstance(t, Table):
            raise TypeError(f"expected nb360.nb201.table.Table objects, got {type(t).__name__}")
        if (t.task, t.hp) in out:
            raise ValueError(f"two {t.task} tables with hp={t.hp}; give one per task and epoch budget")
        out[(t.task, t.hp)] = t
    return dict(sorted(out.items(), key=lambda kv: (TASKS.index(kv[0][0]), int(kv[0][1]))))


def plot_distribution(
    tables: Iterable[Table] | Mapping[Any, Table],
    png: str | os.PathLike,
    pdf: str | os.PathLike | None = None,
) -> list[Path]:
    """ECDF of the cells' final test values, one panel per task, one line per epoch budget (low vs high
    fidelity); write ``png`` (and ``pdf``), return the paths."""
    by = _by_key(tables)
    if not by:
        raise ValueError("no tables to plot")
    tasks = [t for t in TASKS if any(k[0] == t for k in by)]
    hps = sorted({k[1] for k in by}, key=int)
    # the highest budget (the reported values) solid red, lower ones dashed/dotted in other colours
    looks = [("#1f77b4", "--"), ("#2ca02c", ":"), ("#9467bd", "-.")]
    styles = {hp: looks[i % len(looks)] for i, hp in enumerate(hps[:-1])}
    styles[hps[-1]] = ("#d62728", "-")
    roles = {hps[0]: ", low fidelity", hps[-1]: ", final"} if len(hps) > 1 else {}
    with _style():
        fig = _new_figure(4.4 * len(tasks), 4.0)
        axes = fig.subplots(1, len(tasks), squeeze=False)[0]
        for ax, task in zip(axes, tasks, strict=True):
            lo, hi = math.inf, -math.inf
            for (t, hp), table in by.items():
                if t != task:
                    continue
                v = np.sort(np.fromiter(_values(table).values(), dtype=float))
                lo, hi = min(lo, v[0]), max(hi, v[-1])
                y = np.arange(1, len(v) + 1) / len(v)
                colour, ls = styles[hp]
                label = f"{hp} epochs{roles.get(hp, '')} ({len(v)} cells)"
                ax.step(v, y, where="post", color=colour, ls=ls, lw=1.5, label=label)
            # rel. L2 of poor cells can be orders of magnitude above the good ones': a log axis keeps both
            log = not HIGHER_IS_BETTER[task] and lo > 0 and hi / lo > 20
            if log:
                ax.set_xscale("log")
            better = "higher" if HIGHER_IS_BETTER[task] else "lower"
            scale = ", log scale" if log else ""
            ax.set_xlabel(f"{FINAL_METRICS[task]} ({better} is better{scale})")
            ax.set_ylabel("fraction of evaluated cells ≤ x")
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{TASK_TITLES[task]}: value at each table's last epoch (ECDF)")
            # below the panel: the curves can cross any corner
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        return _save(fig, png, pdf)


# ----------------------------------------------------------------------------------------- correlations


def _rank_corr(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    from scipy import stats

    if len(x) < 2:
        return {k: math.nan for k in ("kendall_tau", "kendall_p", "spearman_rho", "spearman_p")}
    tau = stats.kendalltau(x, y)  # tau-b: ties in either list are accounted for
    rho = stats.spearmanr(x, y)
    return {
        "kendall_tau": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
        "spearman_rho": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
    }


def correlations(tables: Iterable[Table] | Mapping[Any, Table]) -> pd.DataFrame:
    """Kendall τ and Spearman ρ (scipy.stats) of the cells' final test values between table pairs.

    ``kind="fidelity"``: per task, each pair of epoch budgets (12 vs 200), over the cells evaluated in both.
    ``kind="task"``: per epoch budget, NinaPro vs Darcy over the cells evaluated on both. Values are those
    the tables report (NinaPro test accuracy, Darcy test rel. L2); across tasks Darcy's rel. L2 is negated so
    that a positive correlation means that the same cells do well on both tasks. ``n`` = the cells
    compared; with fewer than 2 the statistics are NaN. Columns :data:`CORRELATION_COLUMNS`.
    """
    by = _by_key(tables)
    values = {k: _values(t) for k, t in by.items()}
    rows = []

    def add(kind: str, task: str, a: tuple[str, str], b: tuple[str, str], sign_b: float = 1.0) -> None:
        common = sorted(set(values[a]) & set(values[b]))
        x = [values[a][i] for i in common]
        y = [sign_b * values[b][i] for i in common]
        names = [f"{k[0]} {k[1]} epochs" for k in (a, b)]
        if sign_b < 0:
            names[1] = f"−({names[1]})"
        rows.append(
            {"kind": kind, "task": task, "x": names[0], "y": names[1], "n": len(common), **_rank_corr(x, y)}
        )

    for task in TASKS:
        hps = [k for k in by if k[0] == task]
        for i, a in enumerate(hps):
            for b in hps[i + 1 :]:
                add("fidelity", task, a, b)
    for hp in sorted({k[1] for k in by}, key=int):
        if ("ninapro", hp) in by and ("darcy", hp) in by:
            # Darcy's rel. L2 is lower-is-better: negate it so that agreement gives a positive correlation
            add("task", "ninapro vs darcy", ("ninapro", hp), ("darcy", hp), sign_b=-1.0)
    return pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))


def write_correlations(
    tables: Iterable[Table] | Mapping[Any, Table],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
    source: str | None = None,
) -> pd.DataFrame:
    """Write :func:`correlations` as CSV and Markdown with a caption (``source``: the tables' origin)."""
    table = correlations(tables)
    atomic_write_text(csv_path, table.to_csv(index=False, lineterminator="\n"))
    where = f" Table source: {SOURCE_CAPTIONS.get(source, source)}." if source else ""
    caption = (
        "**Table.** NB201 space: rank correlations (Kendall τ-b and Spearman ρ, scipy.stats, with two-sided "
        "p-values) of the cells' final test values (last epoch of each table, mean over seeds; NinaPro test "
        "accuracy, Darcy test rel. L2, negated across tasks so that a positive value means agreement) "
        "between the low- and high-fidelity tables of a task and between the tasks; n = cells evaluated in "
        f"both.{where}"
    )

    def num(v: float, p: bool = False) -> str:
        return MISSING if not math.isfinite(v) else (f"{v:.2g}" if p else f"{v:.3f}")

    rows = [
        (
            r.kind,
            r.x,
            r.y,
            str(r.n),
            num(r.kendall_tau),
            num(r.kendall_p, True),
            num(r.spearman_rho),
            num(r.spearman_p, True),
        )
        for r in table.itertuples()
    ]
    header = ("Kind", "x", "y", "n", "Kendall τ", "p", "Spearman ρ", "p")
    atomic_write_text(md_path, "\n".join([caption, "", *_md_table(header, rows)]) + "\n")
    return table
