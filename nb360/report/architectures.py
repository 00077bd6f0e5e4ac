"""The architectures the search methods found: a table of all of them and a figure of the DARTS cells.

Input is every search's ``arch.json`` (:func:`nb360.runs.read_arch`, format ``nb360-arch/1``) and the
retrained runs' ``scores.json`` (for the retrained model's parameter count). The table has one row per
task × search method × seed with the architecture's kind and one-line summary; the figure draws each
``darts_genotype`` (GAEA, random search, DARTS) as two small DAGs, its normal and its reduction cell, in pure
matplotlib: the cell inputs c_{k-2} and c_{k-1} on the left, the four intermediate nodes, the output c_{k}
(the concatenation of the nodes in ``*_concat``) on the right, every selected edge labelled with its op.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import pandas as pd
from matplotlib.patches import FancyArrowPatch

from nb360.report.figures import STYLE, new_figure, save_figure
from nb360.report.tables import (
    MISSING,
    md_cell,
    method_order,
    method_title,
    order_rows,
    task_order,
    task_title,
    write_text_atomic,
)
from nb360.runs import read_arch
from nb360.search.darts_space import STEPS, Genotype

DARTS_KIND = "darts_genotype"

TABLE_COLUMNS = [
    "task", "method", "seed", "kind", "summary", "params", "search_h", "search_device", "data_source",
    "budget",
]  # fmt: skip

# Edge colours by op family, so that convolutions, pools and skips can be told apart at a glance.
_OP_COLOURS = {
    "sep_conv": "#1f77b4",
    "dil_conv": "#9467bd",
    "max_pool": "#2ca02c",
    "avg_pool": "#17a398",
    "skip_connect": "#7f7f7f",
}
_NODE_COLOURS = {"input": "#cfe2f3", "node": "#fff2cc", "output": "#d9ead3"}
_NODE_SIZE = 20.0  # node marker diameter in points; edges stop this far (half of it) from a node's centre


# ------------------------------------------------------------------------------------------------ table


def read_archs(searches: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every ``arch.json`` (checked by :func:`nb360.runs.read_arch`) with its path under ``"path"``."""
    out = []
    for p in searches:
        body = read_arch(p)
        missing = [k for k in ("task", "method", "seed", "kind", "arch") if k not in body]
        if missing:
            raise ValueError(f"{p}: missing key(s) {', '.join(missing)}; rerun the search")
        out.append({**body, "path": str(p)})
    return out


def architecture_table(
    searches: Iterable[str | os.PathLike], runs: Iterable[str | os.PathLike] = ()
) -> pd.DataFrame:
    """One row per task × search method × seed (columns :data:`TABLE_COLUMNS`), in table order.

    ``params``: trainable parameters of the retrained model (from the run's ``scores.json``; missing where
    the run is not among ``runs``); ``search_h``: the search's own time from ``arch.json`` (the workers of a
    parallel search are in the cost table, not here).
    """
    params: dict[tuple[str, str, int], int] = {}
    for p in runs:
        try:
            run = json.loads(Path(p).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} is not valid JSON ({e}); rerun the retraining") from None
        if "params" not in run:
            raise ValueError(f"{p}: no 'params' (trainable parameter count); rerun the retraining")
        params[(run["task"], run["method"], int(run["seed"]))] = int(run["params"])
    rows = []
    for a in read_archs(searches):
        search = a.get("search") or {}
        key = (a["task"], a["method"], int(a["seed"]))
        seconds = search.get("seconds")
        rows.append(
            {
                "task": a["task"],
                "method": a["method"],
                "seed": key[2],
                "kind": a["kind"],
                "summary": a.get("summary", ""),
                "params": params.get(key),
                "search_h": float(seconds) / 3600 if seconds is not None else None,
                "search_device": search.get("device"),
                "data_source": a.get("data_source"),
                "budget": a.get("budget"),
            }
        )
    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    df["params"] = df["params"].astype("Int64")  # missing stays missing instead of turning float
    df["search_h"] = df["search_h"].astype(float)
    return order_rows(df, ["seed"]) if len(df) else df


def table_caption(table: pd.DataFrame) -> str:
    sources = ", ".join(sorted({str(s) for s in table["data_source"].dropna()}))
    return (
        "Architectures found by the search methods, one per task, method and seed"
        + (f" (data source: {sources})" if sources else "")
        + ". Params: trainable parameters of the retrained model. Search (h): the search job's own wall "
        "time as the search recorded it (workers of a parallel search are counted in the cost table). "
        "Architecture: the method's one-line summary (DARTS cells: op<input per edge, inputs 0 and 1 the "
        "cell inputs, 2–5 the intermediate nodes)."
    )


def _to_markdown(table: pd.DataFrame) -> str:
    lines = [f"**Table.** {table_caption(table)}", ""]
    if table.empty:
        return "\n".join([*lines, "No search method was run, so there is no searched architecture."]) + "\n"
    header = ["Task", "Method", "Seed", "Kind", "Params", "Search (h)", "Architecture"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join([":---", ":---", "---:", ":---", "---:", "---:", ":---"]) + " |")
    for r in table.itertuples(index=False):
        params = MISSING if pd.isna(r.params) else f"{int(r.params):,}"
        hours = MISSING if pd.isna(r.search_h) else f"{r.search_h:.3g}"
        cells = [task_title(r.task), method_title(r.method), str(r.seed), r.kind, params, hours, r.summary]
        lines.append("| " + " | ".join(md_cell(str(c)) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- cells


def _op_colour(op: str) -> str:
    return next((c for prefix, c in _OP_COLOURS.items() if op.startswith(prefix)), "black")


def _positions() -> dict[int, tuple[float, float]]:
    """Node positions: 0, 1 the cell inputs (left), 2..5 the intermediate nodes (zigzag), 6 the output."""
    pos = {0: (0.0, 1.4), 1: (0.0, -1.4)}
    for i in range(STEPS):
        pos[2 + i] = (2.1 + 1.3 * i, 0.85 if i % 2 == 0 else -0.85)
    pos[2 + STEPS] = (2.1 + 1.3 * STEPS, 0.0)
    return pos


def _curve_mid(a: tuple[float, float], b: tuple[float, float], rad: float) -> tuple[float, float]:
    """Midpoint of matplotlib's ``arc3,rad=rad`` curve from a to b (a quadratic Bézier), for the label."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    # arc3's control point is the chord's midpoint moved by rad × (dy, -dx); the curve's midpoint is halfway.
    return (x0 + x1) / 2 + rad * dy / 2, (y0 + y1) / 2 - rad * dx / 2


def draw_cell(ax: Any, pairs: Sequence[tuple[str, int]], concat: Sequence[int]) -> None:
    """Draw one DARTS cell on ``ax``: ``pairs`` are the (op, input) pairs, two per node in node order."""
    pos = _positions()
    out = 2 + STEPS
    seen: dict[tuple[int, int], int] = {}
    edge = {"shrinkA": _NODE_SIZE / 2, "shrinkB": _NODE_SIZE / 2, "mutation_scale": 7, "zorder": 1}
    for n, (op, j) in enumerate(pairs):
        node = 2 + n // 2
        # Edges run left to right; they bow away from the middle (upwards in the upper half), off the nodes
        # they pass. A node taking the same input twice gets its second edge bent the other way.
        k = seen.get((j, node), 0)
        seen[(j, node)] = k + 1
        upper = pos[j][1] + pos[node][1] >= 0
        rad = 0.18 * (-1 if upper else 1) * (-1 if k % 2 else 1)
        colour = _op_colour(op)
        arrow = FancyArrowPatch(
            pos[j],
            pos[node],
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            color=colour,
            linewidth=1.0,
            **edge,
        )
        ax.add_patch(arrow)
        x, y = _curve_mid(pos[j], pos[node], rad)
        ax.text(
            x,
            y,
            op,
            fontsize=5.5,
            color=colour,
            ha="center",
            va="center",
            zorder=3,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )
    for node in concat:
        ax.add_patch(
            FancyArrowPatch(
                pos[node],
                pos[out],
                connectionstyle="arc3,rad=0",
                arrowstyle="-|>",
                color="#b0b0b0",
                linewidth=0.8,
                **edge,
            )
        )
    labels = {0: r"$c_{k-2}$", 1: r"$c_{k-1}$", out: r"$c_{k}$"} | {2 + i: str(i) for i in range(STEPS)}
    for node, (x, y) in pos.items():
        role = "input" if node < 2 else "output" if node == out else "node"
        ax.plot(
            x,
            y,
            "o",
            ms=_NODE_SIZE,
            color=_NODE_COLOURS[role],
            markeredgecolor="#555555",
            markeredgewidth=0.8,
            zorder=2,
        )
        ax.text(x, y, labels[node], fontsize=7, ha="center", va="center", zorder=4)
    ax.set_xlim(-0.6, pos[out][0] + 0.6)
    ax.set_ylim(-1.9, 1.9)
    ax.set_axis_off()


def _genotype(arch: dict[str, Any]) -> Genotype:
    try:
        return Genotype.from_json(json.dumps(arch["arch"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{arch['path']}: not a valid DARTS genotype ({e})") from None


def draw_cells(searches: Iterable[str | os.PathLike], out_stem: str | os.PathLike) -> list[Path]:
    """The DARTS cells among ``searches`` (PNG and PDF): one row per task (and seed), per method its normal
    and reduction cell side by side. Without any DARTS genotype the figure says so (the file still exists,
    as the workflow expects it). Returns the paths."""
    archs = [a for a in read_archs(searches) if a["kind"] == DARTS_KIND]
    if not archs:
        return _no_cells(out_stem)
    genotypes = {(a["task"], int(a["seed"]), a["method"]): _genotype(a) for a in archs}
    methods = method_order({m for _, _, m in genotypes})
    rows = sorted(
        {(t, s) for t, s, _ in genotypes},
        key=lambda r: (task_order({t for t, _, _ in genotypes}).index(r[0]), r[1]),
    )
    several_seeds = len({s for _, s in rows}) > 1
    with mpl.rc_context(STYLE | {"axes.titlesize": 8}):
        fig = new_figure(3.3 * 2 * len(methods), 2.2 * len(rows))
        # One subfigure per row, titled with the task, so that panel titles stay short.
        for sub, (task, seed) in zip(fig.subfigures(len(rows), 1, squeeze=False).flat, rows, strict=True):
            sub.suptitle(task_title(task) + (f" (seed {seed})" if several_seeds else ""), fontweight="bold")
            axes = sub.subplots(1, 2 * len(methods), squeeze=False)[0]
            for c, method in enumerate(methods):
                g = genotypes.get((task, seed, method))
                cells = [("normal", g.normal, g.normal_concat), ("reduction", g.reduce, g.reduce_concat)]
                for ax, (name, pairs, concat) in zip(
                    axes[2 * c : 2 * c + 2], cells if g else [], strict=False
                ):
                    ax.set_title(f"{method_title(method)} · {name} cell")
                    if pairs:
                        draw_cell(ax, pairs, concat)
                    else:
                        ax.text(
                            0.5,
                            0.5,
                            "no reduction cell\n(dense task)",
                            ha="center",
                            va="center",
                            transform=ax.transAxes,
                            fontsize=8,
                            color="#555555",
                        )
            for ax in axes:
                ax.set_axis_off()  # cells are diagrams; a panel without a genotype stays empty
        return save_figure(fig, out_stem)


def _no_cells(out_stem: str | os.PathLike) -> list[Path]:
    with mpl.rc_context(STYLE):
        fig = new_figure(6.0, 1.6)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            "No DARTS cell among the searched architectures\n"
            "(no search method of kind darts_genotype was run, e.g. gaea, random_search, darts)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return save_figure(fig, out_stem)


# ---------------------------------------------------------------------------------------------- the rule


def write_architectures(
    searches: Iterable[str | os.PathLike],
    runs: Iterable[str | os.PathLike],
    *,
    csv: str | os.PathLike,
    md: str | os.PathLike,
    figure: str | os.PathLike,
) -> pd.DataFrame:
    """Rule ``architectures``: the table (CSV, Markdown with caption) and the cells figure (``figure`` is the
    path stem; ``.png`` and ``.pdf`` are written). Returns the table."""
    searches = list(searches)
    table = architecture_table(searches, runs)
    write_text_atomic(csv, table.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(md, _to_markdown(table))
    draw_cells(searches, figure)
    return table


__all__ = ["architecture_table", "draw_cell", "draw_cells", "read_archs", "write_architectures"]
