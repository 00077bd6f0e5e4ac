"""Figures for the paper: performance profiles, learning curves and parameter counts (PNG and PDF).

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through pyplot,
so no global backend or figure registry is touched; styling is applied inside ``matplotlib.rc_context``.
Output is deterministic for the same input: fixed sizes and resolution, and the PDF carries no creation
date (PNG has none by default), so re-running a rule gives identical bytes.

Performance profiles (Dolan & Moré, 2002), as in the paper's ``performance_profiles`` notebook: for each
task t and method m, the ratio r(t, m) = score(t, m) / min over methods of score(t, ·), where score is the
mean over seeds of the task's primary metric (every metric is lower-is-better). The profile of a method is
ρ_m(τ) = fraction of tasks with r(t, m) ≤ τ, drawn as a step function of τ on a log axis. A method without
a result on a task gets r = ∞ there (it never counts as within τ), as in Dolan–Moré's treatment of failures.

Ties give every tied method the ratio 1 exactly. Zeros: a perfect best score (0 % error) would make every
other ratio infinite, so on such a task ratios are (score + ε_t) / ε_t with ε_t = 1e-6 × the largest score
on the task: finite (at most about 10⁶, far right on the τ axis) and still ordered by score. Tasks whose best
score is positive get the exact ratios (ε_t = 0), and a task whose scores are all zero gives every method 1.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from nb360.report.tables import (
    atomic_output,
    md_cell,
    method_order,
    method_title,
    metric_format,
    primary_metric,
    primary_metrics,
    task_order,
    task_specific,
    task_title,
    validate_scores,
    write_text_atomic,
)

DPI = 200  # PNG resolution; PDFs are vector
RELATIVE_EPS = 1e-6  # ε_t for a task whose best score is 0, as a fraction of its largest score

STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    # TrueType fonts in PDFs keep text editable and avoid Type 3 fonts, which many venues reject.
    "pdf.fonttype": 42,
    "svg.hashsalt": "nb360",
}

# Metadata per format: the PDF's creation date is dropped so that identical input gives identical bytes.
_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": "nb360 / matplotlib"},
    "pdf": {"CreationDate": None, "Creator": "nb360 / matplotlib"},
}

HISTORY_KEYS = ("task", "method", "seed", "params", "epochs", "test")

# Fixed colours for the known methods (same in every figure); other methods take the remaining colours.
_KNOWN_COLOURS = {
    "trivial": "#7f7f7f",
    "wrn": "#1f77b4",
    "wrn_asha": "#ff7f0e",
    "random_search": "#2ca02c",
    "densenas": "#d62728",
    "densenas_random": "#9467bd",
    "gaea": "#8c564b",
    "xgboost": "#e377c2",
    "perceiver_io": "#17becf",
    "expert": "#bcbd22",
    "best NAS": "#d62728",
    "best non-NAS": "#1f77b4",
}
_SPARE_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
_LINESTYLES = ("-", "--", "-.", ":")


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """Colour per method: fixed for known methods, the spare palette in method order for the others."""
    colours: dict[str, str] = {}
    spare = 0
    for m in method_order(methods):
        if m in _KNOWN_COLOURS:
            colours[m] = _KNOWN_COLOURS[m]
        else:
            colours[m] = _SPARE_COLOURS[spare % len(_SPARE_COLOURS)]
            spare += 1
    return colours


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_stem: str | os.PathLike) -> list[Path]:
    """Write ``<out_stem>.png`` and ``<out_stem>.pdf`` atomically; return both paths."""
    paths = []
    for fmt in ("png", "pdf"):
        path = Path(f"{os.fspath(out_stem)}.{fmt}")
        with atomic_output(path) as f:
            fig.savefig(f, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------- profiles


def profile_ratios(scores: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Performance ratios r(t, m): index tasks (benchmark order), columns methods (table order).

    Each ratio is the method's mean primary metric on the task over the best (lowest) mean of any method
    on that task (a small ε_t where that best is 0, see the module docstring); ``inf`` where a method has
    no result.
    """
    scores = validate_scores(scores)
    if methods is not None:
        unknown = sorted(set(methods) - set(scores["method"]))
        if unknown:
            raise ValueError(f"no scores for method(s) {unknown}")
        scores = scores[scores["method"].isin(methods)]
    metric_of = primary_metrics(scores)
    primary = scores[scores["metric"] == scores["task"].map(metric_of)]
    means = primary.groupby(["task", "method"])["value"].mean().unstack("method")
    if (means < 0).any().any():
        raise ValueError("performance profiles need non-negative metrics (all NB360 metrics are)")
    order = list(methods) if methods is not None else method_order(scores["method"])
    means = means.reindex(index=task_order(means.index), columns=order)
    best = means.min(axis=1)
    # ε only where the best score is 0 (see the module docstring); all-zero task: ε = 1, every ratio is 1.
    eps = (RELATIVE_EPS * means.max(axis=1)).where(best <= 0, 0.0)
    eps = eps.where((best > 0) | (eps > 0), 1.0)
    ratios = means.add(eps, axis=0).div(best + eps, axis=0)
    ratios.index.name, ratios.columns.name = "task", "method"
    return ratios.fillna(math.inf)


def profile_curve(ratios: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints (τ, ρ(τ)) of one method's profile: ρ jumps at each finite ratio, starting at τ = 1."""
    r = np.sort(ratios.to_numpy(dtype=float))
    n = len(r)
    finite = r[np.isfinite(r)]
    taus = np.concatenate([[1.0], finite])
    rho = np.array([np.count_nonzero(r <= t) / n for t in taus])
    return taus, rho


def plain_log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Label a log axis with plain numbers (1, 2, 5, 10) instead of 2×10⁰; minor labels on short ranges."""
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    axis.set_major_formatter(plain)
    # Within about one decade the major ticks alone leave the axis almost unlabelled; label the minor ticks
    # at 2 and 5 times a power of ten only, so that long labels (0.0008) do not overlap.
    two_five = FuncFormatter(
        lambda v, _pos: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v)), 6) in (2, 5) else ""
    )
    axis.set_minor_formatter(two_five if hi / lo < 15 else NullFormatter())


def draw_profiles(ax: Any, ratios: pd.DataFrame, colours: Mapping[str, str]) -> None:
    """Draw the profiles of ``ratios`` (:func:`profile_ratios`) on ``ax``: one step curve per method."""
    finite = ratios.to_numpy()[np.isfinite(ratios.to_numpy())]
    tau_max = max(2.0, float(finite.max()) * 1.15) if finite.size else 2.0
    for i, method in enumerate(ratios.columns):
        taus, rho = profile_curve(ratios[method])
        ax.step(
            np.append(taus, tau_max),
            np.append(rho, rho[-1]),
            where="post",
            color=colours[method],
            linestyle=_LINESTYLES[i % len(_LINESTYLES)],
            linewidth=1.8,
            label=method_title(method),
        )
    ax.set_xscale("log")
    ax.set_xlim(1.0, tau_max)
    plain_log_ticks(ax.xaxis, 1.0, tau_max)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("τ (ratio to the best method on the task, log scale)")
    ax.set_ylabel(f"fraction of tasks with ratio ≤ τ (n = {len(ratios)})")


def performance_profiles(
    scores: pd.DataFrame, out_stem: str | os.PathLike, methods: Sequence[str] | None = None
) -> list[Path]:
    """Dolan–Moré performance profiles over the tasks in ``scores`` (PNG and PDF); returns the paths.
    ``methods`` defaults to every method of ``scores`` but the task-specific ones, whose curve would only
    say that they have no result on most tasks."""
    if methods is None:
        methods = [m for m in method_order(scores["method"]) if not task_specific(m)]
    ratios = profile_ratios(scores, methods)
    with mpl.rc_context(STYLE):
        fig = new_figure(6.5, 4.0)
        ax = fig.add_subplot()
        draw_profiles(ax, ratios, method_colours(ratios.columns))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return save_figure(fig, out_stem)


# ------------------------------------------------------------------------------------------- histories


def read_history(path: str | os.PathLike) -> dict[str, Any]:
    """Read one run's history JSON; a missing key is reported with the file name."""
    with open(path) as f:
        history = json.load(f)
    missing = [k for k in HISTORY_KEYS if k not in history]
    if missing:
        raise ValueError(f"{path}: history is missing key(s) {', '.join(missing)}")
    return history


def load_histories(histories: Iterable[Mapping[str, Any] | str | os.PathLike]) -> list[dict[str, Any]]:
    """Histories given as dicts or JSON paths, all as dicts (paths are read and checked)."""
    out = []
    for h in histories:
        if isinstance(h, Mapping):
            missing = [k for k in HISTORY_KEYS if k not in h]
            if missing:
                raise ValueError(f"history {h.get('task')}/{h.get('method')} is missing key(s) {missing}")
            out.append(dict(h))
        else:
            out.append(read_history(h))
    if not out:
        raise ValueError("no histories given")
    return out


def legend_in_blank_cells(fig: Figure, axes: np.ndarray, used: int, handles: list[Any]) -> None:
    """Hide the grid cells after the first ``used`` and put the legend in them (keeps the figure compact);
    below the panels when the grid is full."""
    blank = list(axes.flat[used:])
    for ax in blank:
        ax.set_axis_off()
    if blank:
        blank[0].legend(handles=handles, loc="center left" if len(blank) > 1 else "center", frameon=False)
    else:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)


def panel_grid(n: int) -> tuple[int, int]:
    """Rows and columns of a panel grid: at most 3 columns, so 10 tasks fit a page at readable size."""
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def _val_metric(task: str, runs: list[dict[str, Any]]) -> str | None:
    """The validation metric to draw: the task's primary metric if logged, else the first logged one."""
    names = sorted({k for h in runs for e in h["epochs"] if e.get("val") for k in e["val"]})
    if not names:
        return None
    try:
        metric = primary_metric(task, names)
    except ValueError:
        metric = names[0]
    return metric if metric in names else names[0]


def _plot_run(ax: Any, x: Sequence[float], y: Sequence[float], colour: str, dashed: bool) -> None:
    ax.plot(
        x,
        y,
        color=colour,
        linewidth=1.1 if dashed else 1.3,
        linestyle="--" if dashed else "-",
        alpha=0.85,
        marker="o" if len(x) == 1 else None,  # a one-epoch run is a point, not an invisible line
        ms=3,
    )


def learning_curves(
    histories: Iterable[Mapping[str, Any] | str | os.PathLike], out_stem: str | os.PathLike
) -> list[Path]:
    """One panel per task: training loss per epoch (solid, left axis) and, where logged, the validation
    metric (dashed, right axis); one line per method and seed, coloured by method.

    The loss axis is logarithmic where a panel's losses are positive and span more than a factor 20.
    Runs without epochs (a constant predictor) draw nothing and are left out of the legend.
    """
    runs = load_histories(histories)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for h in runs:
        by_task.setdefault(h["task"], []).append(h)
    tasks = task_order(by_task)
    methods = method_order({h["method"] for h in runs})
    colours = method_colours(methods)
    rows, cols = panel_grid(len(tasks))
    drawn: set[str] = set()
    any_val = False
    with mpl.rc_context(STYLE):
        fig = new_figure(3.1 * cols, 2.5 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, task in zip(axes.flat, tasks, strict=False):
            task_runs = sorted(by_task[task], key=lambda h: (methods.index(h["method"]), int(h["seed"])))
            metric = _val_metric(task, task_runs)
            ax2 = ax.twinx() if metric else None
            losses: list[float] = []
            for h in task_runs:
                colour = colours[h["method"]]
                train = [
                    (e["epoch"], float(e["train_loss"]))
                    for e in h["epochs"]
                    if e.get("train_loss") is not None
                ]
                if train:
                    x, y = zip(*train, strict=True)
                    _plot_run(ax, x, y, colour, dashed=False)
                    losses += y
                    drawn.add(h["method"])
                val = [
                    (e["epoch"], float(e["val"][metric]))
                    for e in h["epochs"]
                    if metric and (e.get("val") or {}).get(metric) is not None
                ]
                if ax2 is not None and val:
                    x, y = zip(*val, strict=True)
                    _plot_run(ax2, x, y, colour, dashed=True)
                    any_val = True
                    drawn.add(h["method"])
            if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
                ax.set_yscale("log")
                plain_log_ticks(ax.yaxis, min(losses), max(losses))
            ax.set_title(task_title(task))
            ax.set_xlabel("epoch")
            ax.set_ylabel("train loss")
            if ax2 is not None:
                ax2.set_ylabel(f"val {metric_format(metric).label} ↓")
                ax2.grid(False)
                ax2.spines["right"].set_visible(True)
        handles = [
            Line2D([], [], color=colours[m], linewidth=2, label=method_title(m))
            for m in methods
            if m in drawn
        ]
        handles.append(Line2D([], [], color="black", linewidth=1.3, label="train loss (left axis)"))
        if any_val:
            handles.append(
                Line2D([], [], color="black", linewidth=1.1, linestyle="--", label="val metric (right axis)")
            )
        legend_in_blank_cells(fig, axes, len(tasks), handles)
        return save_figure(fig, out_stem)


def _params_frame(histories: Iterable[Mapping[str, Any] | str | os.PathLike]) -> pd.DataFrame:
    """(task, method, params) of every run."""
    runs = load_histories(histories)
    return pd.DataFrame(
        [{"task": h["task"], "method": h["method"], "params": int(h["params"])} for h in runs]
    )


def parameter_table(histories: Iterable[Mapping[str, Any] | str | os.PathLike]) -> pd.DataFrame:
    """Trainable parameters of the trained networks: the median over seeds, one row per method (in method
    order) and one column per task (in task order); missing where a method did not run on a task."""
    df = _params_frame(histories)
    table = df.groupby(["method", "task"])["params"].median().unstack("task")
    return table.reindex(index=method_order(df["method"]), columns=task_order(df["task"]))


def write_parameter_table(
    histories: Iterable[Mapping[str, Any] | str | os.PathLike], out_stem: str | os.PathLike
) -> list[Path]:
    """The parameter table as ``<out_stem>.csv`` (integers, empty where not run) and ``<out_stem>.md``."""
    table = parameter_table(histories)
    stem = Path(out_stem)
    csv = table.astype("Int64").rename_axis(index="method", columns=None).reset_index()
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md")]
    write_text_atomic(paths[0], csv.to_csv(index=False, lineterminator="\n"))
    lines = [
        "**Table.** Trainable parameters of each method's network per task (median over seeds; – not run).",
        "",
        "| Method | " + " | ".join(md_cell(task_title(t)) for t in table.columns) + " |",
        "| :--- | " + " | ".join(["---:"] * len(table.columns)) + " |",
    ]
    for method, row in table.iterrows():
        cells = ["–" if pd.isna(v) else f"{int(v):,}" for v in row]
        lines.append(f"| {md_cell(method_title(method))} | " + " | ".join(cells) + " |")
    write_text_atomic(paths[1], "\n".join(lines) + "\n")
    return paths


def parameter_counts(
    histories: Iterable[Mapping[str, Any] | str | os.PathLike], out_stem: str | os.PathLike
) -> list[Path]:
    """Grouped bar chart (log scale) of trainable parameters per task and method.

    A bar is the median over seeds; when seeds differ (searched architectures), each seed is also drawn as a
    dot. Methods with zero parameters (e.g. a constant predictor) are marked "0" at the axis bottom, since
    a log axis cannot show them.
    """
    df = _params_frame(histories)
    tasks = task_order(df["task"])
    methods = method_order(df["method"])
    colours = method_colours(methods)
    width = 0.8 / len(methods)
    positive = df.loc[df["params"] > 0, "params"]
    # Bars start at least half a decade below the smallest count, so the smallest bar stays visible.
    bottom = 10.0 ** math.floor(math.log10(positive.min()) - 0.5) if len(positive) else 1.0
    with mpl.rc_context(STYLE):
        fig = new_figure(min(14.0, max(6.0, 1.5 + 0.8 * len(tasks) * max(1.0, len(methods) / 4))), 4.0)
        ax = fig.add_subplot()
        ax.set_yscale("log")
        for j, method in enumerate(methods):
            offset = (j - (len(methods) - 1) / 2) * width
            for i, task in enumerate(tasks):
                counts = df.loc[(df["task"] == task) & (df["method"] == method), "params"]
                if counts.empty:
                    continue
                x = i + offset
                median = float(counts.median())
                if median <= 0:
                    ax.annotate("0", (x, bottom), ha="center", va="bottom", fontsize=8, color=colours[method])
                    continue
                ax.bar(x, median - bottom, bottom=bottom, width=width * 0.92, color=colours[method])
                if counts.nunique() > 1:
                    ax.plot([x] * int((counts > 0).sum()), counts[counts > 0], "o", color="black", ms=2.5)
        ax.set_ylim(bottom=bottom)
        ax.set_xticks(range(len(tasks)), [task_title(t) for t in tasks], rotation=30, ha="right")
        ax.set_ylabel("trainable parameters (log scale)")
        ax.grid(axis="x", visible=False)
        handles = [Patch(color=colours[m], label=method_title(m)) for m in methods]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return save_figure(fig, out_stem)


__all__ = [
    "draw_profiles",
    "learning_curves",
    "load_histories",
    "method_colours",
    "parameter_counts",
    "parameter_table",
    "performance_profiles",
    "profile_curve",
    "profile_ratios",
    "read_history",
    "save_figure",
    "write_parameter_table",
]
