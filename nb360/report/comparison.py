"""The paper's comparison figures (more-methods.md 6.5), each drawn from our scores and, beside it, from the
published numbers, so that the paper's figure is reproduced next to ours.

* ``profiles_all``: performance profiles of every method on every task;
* ``profiles_2d``: the 2-D point tasks only (CIFAR-100, Spherical, NinaPro, FSD50K);
* ``profiles_constrained``: the constrained setting (WRN vs DenseNAS) and the less-constrained one
  (WRN-ASHA vs DARTS-GAEA);
* ``profiles_nas_vs_nonnas``: per task, the best NAS method against the best non-NAS one (families from the
  method registry: NAS = architecture search; non-NAS = WRN, XGBoost, Perceiver IO and any other fixed
  model; WRN-ASHA tunes hyperparameters and is neither);
* ``size_vs_performance``: parameter count against test score of every trained network on FSD50K, Cosmic
  and ECG, with the Pearson correlation and a least-squares line (both on log10 parameters).

The published panels use the methods and tasks of our panel (so both compare the same rows); a method the
paper has no number for on a task counts as a failure there (ratio ∞), as in the performance profiles. The
trivial baseline is in no comparison.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from scipy import stats

from nb360.methods.registry import list_methods, method_info
from nb360.report.figures import (
    STYLE,
    draw_profiles,
    load_histories,
    method_colours,
    new_figure,
    plain_log_ticks,
    profile_ratios,
    save_figure,
)
from nb360.report.tables import (
    method_order,
    method_title,
    metric_format,
    primary_metric,
    task_order,
    task_specific,
    task_title,
    validate_scores,
)
from nb360.tasks import get_task

PROFILE_FIGURES = ("all", "2d", "constrained", "nas_vs_nonnas")
# (title, methods) of the two settings of the paper's resource-constrained comparison.
SETTINGS = (
    ("Constrained setting", ("wrn", "densenas")),
    ("Less-constrained setting", ("wrn_asha", "gaea")),
)
BEST_NAS, BEST_NON_NAS = "best NAS", "best non-NAS"
SIZE_TASKS = ("fsd50k", "cosmic", "ecg")


def family(method: str) -> str | None:
    """The method's family in the registry (None for a method only the paper has)."""
    return method_info(method).family if method in list_methods() else None


def paper_scores(paper: pd.DataFrame) -> pd.DataFrame:
    """The published means as a scores frame (one "seed" per task, method and metric)."""
    df = pd.DataFrame(
        {
            "task": paper["task"],
            "method": paper["method"],
            "seed": 0,
            "metric": paper["metric"],
            "value": paper["mean"].astype(float),
            "lower_is_better": True,
            "data_source": "real",
        }
    )
    return validate_scores(df, origin="paper_results.csv")


def best_of_families(scores: pd.DataFrame) -> pd.DataFrame:
    """Per task, the best (lowest mean primary metric) NAS method and the best non-NAS one, as two rows named
    :data:`BEST_NAS` and :data:`BEST_NON_NAS` (a family without a result on a task has no row there)."""
    means = _primary_means(scores)
    rows = []
    for name, fam in ((BEST_NAS, "nas"), (BEST_NON_NAS, "non_nas")):
        members = [m for m in means.columns if family(m) == fam]
        if not members:
            continue
        for task, value in means[members].min(axis=1).dropna().items():
            rows.append({"task": task, "method": name, "metric": primary_metric(task), "value": value})
    df = pd.DataFrame(rows, columns=["task", "method", "metric", "value"])
    return validate_scores(df.assign(seed=0, lower_is_better=True, data_source=_source(scores)))


def _primary_means(scores: pd.DataFrame) -> pd.DataFrame:
    primary = scores[scores["metric"] == scores["task"].map(primary_metric)]
    return primary.groupby(["task", "method"])["value"].mean().unstack("method")


def _source(scores: pd.DataFrame) -> str:
    return str(scores["data_source"].iloc[0]) if len(scores) else "real"


def comparison_methods(scores: pd.DataFrame) -> list[str]:
    """Every method of ``scores`` but the reference (trivial) one and the task-specific ones (AMBER,
    Auto-DeepLab: no result on most tasks, so their curve would say nothing), in table order."""
    return [m for m in method_order(scores["method"]) if family(m) != "reference" and not task_specific(m)]


def _panels(
    which: str, ours: pd.DataFrame, published: pd.DataFrame
) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """(title, scores, methods) of each panel of figure ``which``, ours then published per row."""
    tasks = task_order(ours["task"])
    if which == "2d":
        tasks = [t for t in tasks if get_task(t).dim == 2 and get_task(t).output_kind != "dense"]
    ours = ours[ours["task"].isin(tasks)]
    published = published[published["task"].isin(tasks)]
    if which in ("all", "2d"):
        settings = [("", comparison_methods(ours))]
    elif which == "constrained":
        settings = [(title, list(methods)) for title, methods in SETTINGS]
    elif which == "nas_vs_nonnas":
        ran = published[published["method"].isin(ours["method"])]  # the methods we ran, as published
        ours, published = best_of_families(ours), best_of_families(ran)
        settings = [("", [BEST_NAS, BEST_NON_NAS])]
    else:
        raise ValueError(f"unknown comparison figure {which!r}; figures are {PROFILE_FIGURES}")
    panels = []
    for title, methods in settings:
        present = [m for m in methods if m in set(ours["method"])]
        prefix = f"{title}: " if title else ""
        n = ours["task"].nunique()
        panels.append((f"{prefix}ours ({n} tasks)", ours[ours["method"].isin(present)], present))
        paper_rows = published[published["method"].isin(present) & published["task"].isin(ours["task"])]
        # Methods the paper has no number for (e.g. random search) are left out of the published panel.
        in_paper = [m for m in present if m in set(paper_rows["method"])]
        panels.append((f"{prefix}published", paper_rows, in_paper))
    return panels


def comparison_profiles(scores: pd.DataFrame, paper: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """``profiles_{all,2d,constrained,nas_vs_nonnas}`` (PNG and PDF) in ``out_dir``; returns the paths."""
    ours, published = validate_scores(scores), paper_scores(paper)
    paths = []
    for which in PROFILE_FIGURES:
        panels = _panels(which, ours, published)
        paths += _draw(panels, Path(out_dir) / f"profiles_{which}")
    return paths


def _draw(panels: Sequence[tuple[str, pd.DataFrame, list[str]]], out_stem: Path) -> list[Path]:
    rows = len(panels) // 2
    methods = [m for _, _, ms in panels for m in ms]
    colours = method_colours(dict.fromkeys(methods))
    with mpl.rc_context(STYLE):
        fig = new_figure(9.0, 3.2 * rows)
        axes = np.asarray(fig.subplots(rows, 2, squeeze=False))
        for ax, (title, frame, ms) in zip(axes.flat, panels, strict=True):
            if frame.empty or not ms:
                ax.set_axis_off()
                ax.set_title(f"{title}\n(no scores)")
                continue
            draw_profiles(ax, profile_ratios(frame, ms), colours)
            ax.set_title(title)
        _shared_legend(fig, axes.flat)
        return save_figure(fig, out_stem)


def _shared_legend(fig: Any, axes: Iterable[Any]) -> None:
    """One legend right of the panels: every label of the axes once, in order of first appearance."""
    handles, labels = [], []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="outside right upper", frameon=False)


# ---------------------------------------------------------------------------------------- size vs score


def size_scores(
    histories: Iterable[Mapping[str, Any] | str | os.PathLike], tasks: Sequence[str]
) -> pd.DataFrame:
    """(task, method, seed, params, value) of every trained network (parameters > 0) of ``tasks``: the
    run's test value of the task's primary metric."""
    rows = []
    for h in load_histories(histories):
        if h["task"] in tasks and int(h["params"]) > 0:
            metric = primary_metric(h["task"])
            if metric in h["test"]:
                rows.append(
                    {
                        "task": h["task"],
                        "method": h["method"],
                        "seed": int(h["seed"]),
                        "params": int(h["params"]),
                        "value": float(h["test"][metric]),
                    }
                )
    return pd.DataFrame(rows, columns=["task", "method", "seed", "params", "value"])


def correlation(params: np.ndarray, values: np.ndarray) -> tuple[float, float, float] | None:
    """(Pearson r, slope, intercept) of the value against log10 parameters; None with fewer than three
    points or no spread (r is undefined)."""
    x, y = np.log10(np.asarray(params, dtype=float)), np.asarray(values, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    r = float(stats.pearsonr(x, y).statistic)
    slope, intercept = np.polyfit(x, y, 1)
    return r, float(slope), float(intercept)


def size_vs_performance(
    histories: Iterable[Mapping[str, Any] | str | os.PathLike],
    out_stem: str | os.PathLike,
    tasks: Sequence[str] = SIZE_TASKS,
) -> list[Path]:
    """Scatter of parameters (log axis) against test score per task, one panel each, with Pearson r and the
    fitted line."""
    df = size_scores(histories, tasks)
    colours = method_colours(df["method"].unique())
    with mpl.rc_context(STYLE):
        fig = new_figure(3.4 * len(tasks) + 1.6, 3.4)
        axes = fig.subplots(1, len(tasks), squeeze=False)[0]
        for ax, task in zip(axes, tasks, strict=True):
            sub = df[df["task"] == task]
            ax.set_title(task_title(task))
            ax.set_xlabel("parameters (log scale)")
            ax.set_ylabel(metric_format(primary_metric(task)).label)
            if sub.empty:
                ax.text(0.5, 0.5, "no trained network", ha="center", va="center", transform=ax.transAxes)
                continue
            for method in method_order(sub["method"]):
                m = sub[sub["method"] == method]
                ax.plot(m["params"], m["value"], "o", color=colours[method], label=method_title(method), ms=5)
            ax.set_xscale("log")
            fit = correlation(sub["params"].to_numpy(), sub["value"].to_numpy())
            if fit is None:
                ax.text(0.03, 0.95, f"n = {len(sub)}: r undefined", transform=ax.transAxes, va="top")
                continue
            r, slope, intercept = fit
            lo, hi = math.log10(sub["params"].min()), math.log10(sub["params"].max())
            xs = np.logspace(lo, hi, 50)
            ax.plot(xs, slope * np.log10(xs) + intercept, color="black", linewidth=1, linestyle="--")
            ax.text(0.03, 0.95, f"Pearson r = {r:.2f} (n = {len(sub)})", transform=ax.transAxes, va="top")
            plain_log_ticks(ax.xaxis, sub["params"].min(), sub["params"].max())
        _shared_legend(fig, axes)
        return save_figure(fig, out_stem)
