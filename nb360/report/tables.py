"""The main results table: ours beside the paper's, as CSV, Markdown and LaTeX.

Input is the tidy score file ``results/tables/scores.csv`` written by the evaluation rules, one row per
(task, method, seed, metric) with columns ``task, method, seed, metric, value, lower_is_better,
data_source``. Every metric is stored in the paper's direction (lower is better: error %, 1 − mAP, relative
ℓ2, MAE₈, 1 − AUROC, FNR %, 1 − F1).

The table has one column per task in the benchmark's order (the task registry's), each showing the task's
primary metric (the one the camera-ready paper reports; Cosmic: 1 − AUROC), plus Cosmic's FNR (%) of the
June-2022 repository table as an extra column when the scores carry it. Rows come in pairs per method:
"ours" (mean ± std over seeds) and, where the paper reports the method, "paper" (the published mean ± std
from ``paper_results.csv``, shipped with this package).

Standard deviations are population standard deviations (``ddof=0``): that is what reproduces the paper's
numbers from per-seed results in the repository (Perceiver IO PSICOV 8.150/7.995/8.047 -> 8.06 ± 0.06,
CIFAR-100 70.66/69.69/69.76 -> 70.04 ± 0.44; the sample std would give 0.08 and 0.54).
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

import pandas as pd

from nb360.methods.registry import list_methods, method_info
from nb360.tasks import get_task, list_tasks

SCORE_COLUMNS = ("task", "method", "seed", "metric", "value", "lower_is_better", "data_source")
PAPER_COLUMNS = ("task", "method", "metric", "mean", "std")

DATA_SOURCE_CAPTIONS = {
    "embedded": "embedded data (small generated datasets; not comparable to the paper)",
    "real": "real benchmark data",
}

# Rows of the published table whose methods are not (yet) registered here: their titles, for the published
# column. Registered methods take title and order from the method registry (nb360/methods/registry.py).
PUBLISHED_ONLY_TITLES: dict[str, str] = {}

# Extra columns shown after a task's primary metric when the scores carry them: Cosmic's FNR is what the
# June-2022 repository table reported before the camera-ready switched to 1 − AUROC.
SECONDARY_METRICS: dict[str, tuple[str, ...]] = {"cosmic": ("fnr_pct",)}

MISSING = "–"  # an en dash marks a cell without a result
NOT_APPLICABLE = "n/a"  # a task-specific method (MethodInfo.tasks) on a task it does not run on


@dataclass(frozen=True)
class MetricFormat:
    """How a metric is shown: plain-text label, LaTeX label and decimals (the paper's precision)."""

    label: str
    latex: str
    decimals: int


METRICS = {
    "error_pct": MetricFormat("error (%)", r"error (\%)", 2),
    "fnr_pct": MetricFormat("FNR (%)", r"FNR (\%)", 2),
    "one_minus_map": MetricFormat("1 − mAP", r"$1-\mathrm{mAP}$", 3),
    "rel_l2": MetricFormat("rel. ℓ2", r"rel.\ $\ell_2$", 3),
    "mae8": MetricFormat("MAE8 (Å)", r"$\mathrm{MAE}_8$ (\AA)", 2),
    "one_minus_auroc": MetricFormat("1 − AUROC", r"$1-\mathrm{AUROC}$", 3),
    "one_minus_f1": MetricFormat("1 − F1", r"$1-F_1$", 3),
}


def metric_format(metric: str) -> MetricFormat:
    """Display format of a metric; unknown (user) metrics get their name and 4 significant digits."""
    return METRICS.get(metric, MetricFormat(metric, latex_escape(metric), -1))


# ----------------------------------------------------------------------------------------------- ordering


def task_order(tasks: Iterable[str]) -> list[str]:
    """``tasks`` in the benchmark's order; tasks outside the registry follow alphabetically."""
    tasks = set(tasks)
    known = [t for t in list_tasks() if t in tasks]
    return known + sorted(tasks - set(known))


def method_order(methods: Iterable[str]) -> list[str]:
    """``methods`` in the registry's order (trivial, WRN, the NAS methods), then the published-only rows, then
    the rest alphabetically, so the order never depends on a file's row order."""
    methods = set(methods)
    known = [m for m in dict.fromkeys((*list_methods(), *PUBLISHED_ONLY_TITLES)) if m in methods]
    return known + sorted(methods - set(known))


def order_rows(df: pd.DataFrame, keys: Iterable[str] = ()) -> pd.DataFrame:
    """Rows of a frame with ``task`` and ``method`` columns in table order (benchmark task order, then
    :func:`method_order`), ties broken by ``keys``; the index is reset."""
    rank_t = {t: i for i, t in enumerate(task_order(df["task"]))}
    rank_m = {m: i for i, m in enumerate(method_order(df["method"]))}
    ranked = df.assign(_task_rank=df["task"].map(rank_t), _method_rank=df["method"].map(rank_m))
    ranked = ranked.sort_values(["_task_rank", "_method_rank", *keys], kind="stable")
    return ranked.drop(columns=["_task_rank", "_method_rank"]).reset_index(drop=True)


def task_title(task: str) -> str:
    try:
        return get_task(task).title
    except KeyError:
        return task


def method_title(method: str) -> str:
    if method in list_methods():
        return method_info(method).title
    return PUBLISHED_ONLY_TITLES.get(method, method)


def task_specific(method: str) -> bool:
    """Whether ``method`` is a registered method that runs on some tasks only (AMBER, Auto-DeepLab)."""
    return method in list_methods() and bool(method_info(method).tasks)


def applies(method: str, task: str) -> bool:
    """Whether ``method`` runs on ``task`` (task-specific methods of the registry run on their tasks only)."""
    return method not in list_methods() or method_info(method).applies_to(task)


def primary_metric(task: str, available: Iterable[str] = ()) -> str:
    """The metric a task is ranked by: the registry's paper metric, or the only metric a new task has."""
    try:
        return get_task(task).paper_metric
    except KeyError:
        available = sorted(set(available))
        if len(available) == 1:
            return available[0]
        raise ValueError(
            f"task {task!r} is not registered and has metrics {available}; cannot tell which one is primary"
        ) from None


def primary_metrics(scores: pd.DataFrame) -> dict[str, str]:
    """Primary metric per task present in ``scores``, in the benchmark's task order."""
    present = scores.groupby("task")["metric"].unique()
    return {t: primary_metric(t, present[t]) for t in task_order(present.index)}


# ---------------------------------------------------------------------------------------------- reading


def validate_scores(scores: pd.DataFrame, origin: str = "scores") -> pd.DataFrame:
    """Check a scores frame and return it with clean dtypes and only the expected columns.

    ``origin`` names the file (or frame) in error messages.
    """
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(
            f"{origin}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"a scores table needs the columns {', '.join(SCORE_COLUMNS)}"
        )
    df = scores.loc[:, list(SCORE_COLUMNS)].copy()
    for col in ("task", "method", "metric", "data_source"):
        df[col] = df[col].astype(str).str.strip()
    for col in ("seed", "value"):
        numeric = pd.to_numeric(df[col], errors="coerce")
        bad = numeric.isna() & df[col].notna() if col == "value" else numeric.isna()
        if bad.any():
            row = df[bad].iloc[0]
            raise ValueError(
                f"{origin}: column {col!r} must be numeric; row {int(bad.idxmax())} has {row[col]!r}"
            )
        df[col] = numeric
    df["seed"] = df["seed"].astype(int)
    df["value"] = df["value"].astype(float)
    df["lower_is_better"] = df["lower_is_better"].map(_as_bool)
    if df["lower_is_better"].isna().any():
        raise ValueError(f"{origin}: column 'lower_is_better' must hold true/false")
    higher = sorted(df.loc[~df["lower_is_better"].astype(bool), "metric"].unique())
    if higher:
        # Profiles and "best" both assume lower is better; the evaluation side stores 1 − x for such metrics.
        raise ValueError(
            f"{origin}: metric(s) {', '.join(higher)} are marked higher-is-better; store them in the "
            "paper's lower-is-better form (e.g. one_minus_auroc)"
        )
    df["lower_is_better"] = df["lower_is_better"].astype(bool)
    unknown = sorted(set(df["data_source"]) - set(DATA_SOURCE_CAPTIONS))
    if unknown:
        raise ValueError(
            f"{origin}: unknown data_source {unknown}; expected one of {sorted(DATA_SOURCE_CAPTIONS)}"
        )
    dup = df.duplicated(["task", "method", "seed", "metric"], keep=False)
    if dup.any():
        row = df[dup].iloc[0]
        raise ValueError(
            f"{origin}: more than one row for task {row['task']}, method {row['method']}, "
            f"seed {row['seed']}, metric {row['metric']}"
        )
    return df.reset_index(drop=True)


def _as_bool(v: object) -> bool | None:
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return True
    if text in ("false", "0", "0.0", "no"):
        return False
    return None


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a tidy score file; errors name the file and what is wrong (e.g. a missing column)."""
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty scores file; expected a header {','.join(SCORE_COLUMNS)}") from None
    return validate_scores(df, origin=str(path))


def load_paper_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The published numbers (``paper_results.csv``: task, method, metric, mean, std, source, note).

    Without ``path`` the copy shipped with this package is read.
    """
    if path is None:
        with resources.files("nb360.report").joinpath("paper_results.csv").open("r") as f:
            df = pd.read_csv(f)
        origin = "nb360/report/paper_results.csv"
    else:
        df = pd.read_csv(path)
        origin = str(path)
    missing = [c for c in PAPER_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {', '.join(repr(c) for c in missing)}")
    return df


# -------------------------------------------------------------------------------------------- the table


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, population std (as the paper) and seed count per task, method and metric, in table order."""
    scores = validate_scores(scores)
    g = scores.groupby(["task", "method", "metric"])["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "n_seeds": g.count()}).reset_index()
    rank_task = {t: i for i, t in enumerate(task_order(out["task"]))}
    rank_method = {m: i for i, m in enumerate(method_order(out["method"]))}
    order = sorted(
        range(len(out)),
        key=lambda i: (
            rank_task[out["task"].iat[i]],
            rank_method[out["method"].iat[i]],
            out["metric"].iat[i],
        ),
    )
    return out.iloc[order].reset_index(drop=True)


def format_value(mean: float, std: float | None, metric: str) -> str:
    """``"mean ± std"`` at the metric's precision; the std is left out when it is missing (one seed)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    fmt = metric_format(metric)

    def num(x: float) -> str:
        # A tiny negative value must not print as "-0.00".
        text = f"{x:.{fmt.decimals}f}" if fmt.decimals >= 0 else f"{x:.4g}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text

    if std is None or (isinstance(std, float) and math.isnan(std)):
        return num(mean)
    return f"{num(mean)} ± {num(std)}"


def table_columns(scores: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, metric) columns of the table: each task's primary metric, then its secondary ones if present."""
    present = scores.groupby("task")["metric"].unique()
    cols: list[tuple[str, str]] = []
    for task, metric in primary_metrics(scores).items():
        cols.append((task, metric))
        cols += [(task, m) for m in SECONDARY_METRICS.get(task, ()) if m in present[task] and m != metric]
    return cols


def data_source(scores: pd.DataFrame) -> str:
    """The one data source of a scores table (mixing embedded and real results in one table is an error)."""
    sources = sorted(set(scores["data_source"]))
    if len(sources) != 1:
        raise ValueError(f"scores mix data sources {sources}; a table describes one source")
    return sources[0]


def paper_table(scores: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """The results table: methods as rows (each an "ours" row and, where published, a "paper" row), tasks
    as columns in the benchmark's order, cells ``"mean ± std"`` over seeds of the task's primary metric.

    Index: (method, source) with source "ours" or "paper"; columns: (task, metric). Cells are formatted
    strings; a missing result is an en dash, a task a task-specific method does not run on "n/a".
    ``paper`` defaults to the published numbers shipped here.
    """
    scores = validate_scores(scores)
    data_source(scores)
    paper = load_paper_results() if paper is None else paper
    columns = table_columns(scores)
    summary = summarise(scores).set_index(["task", "method", "metric"])
    published = paper.drop_duplicates(["task", "method", "metric"]).set_index(["task", "method", "metric"])

    rows: dict[tuple[str, str], list[str]] = {}
    for method in method_order(scores["method"]):
        ours = []
        for task, metric in columns:
            key = (task, method, metric)
            if not applies(method, task):
                ours.append(NOT_APPLICABLE)
            elif key in summary.index:
                s = summary.loc[key]
                ours.append(format_value(s["mean"], s["std"] if s["n_seeds"] > 1 else None, metric))
            else:
                ours.append(MISSING)
        rows[(method, "ours")] = ours
        theirs = []
        for task, metric in columns:
            key = (task, method, metric)
            if not applies(method, task):
                theirs.append(NOT_APPLICABLE)
            elif key in published.index:
                p = published.loc[key]
                theirs.append(format_value(float(p["mean"]), float(p["std"]), metric))
            else:
                theirs.append(MISSING)
        if any(cell not in (MISSING, NOT_APPLICABLE) for cell in theirs):
            rows[(method, "paper")] = theirs
    index = pd.MultiIndex.from_tuples(list(rows), names=["method", "source"])
    cols = pd.MultiIndex.from_tuples(columns, names=["task", "metric"])
    return pd.DataFrame(list(rows.values()), index=index, columns=cols, dtype=object)


def table_caption(scores: pd.DataFrame, latex: bool = False) -> str:
    """Caption naming the data source, the seeds, the direction and where the paper's numbers come from."""
    scores = validate_scores(scores)
    source = data_source(scores)
    counts = scores.groupby(["task", "method", "metric"])["seed"].nunique()
    lo, hi = int(counts.min()), int(counts.max())
    seeds = f"{hi} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"
    pm, arrow, dash = (r"$\pm$", r"$\downarrow$", "--") if latex else ("±", "↓", "–")
    auroc = r"$1-\mathrm{AUROC}$" if latex else "1 − AUROC"
    text = (
        f"NAS-Bench-360 test results on {DATA_SOURCE_CAPTIONS[source]}. "
        f'Rows "ours": mean {pm} standard deviation over {seeds.replace("–", dash)} '
        "(population std, as in the paper; no std for a single seed). "
        'Rows "paper": published numbers (Tu et al., NeurIPS 2022; repository table of June 2022, '
        f"Cosmic {auroc} from the camera-ready). All metrics: lower is better ({arrow})."
    )
    if any(not applies(m, t) for m in set(scores["method"]) for t in set(scores["task"])):
        text += " n/a: a task-specific method on a task it does not apply to (as in the paper)."
    if latex:
        # The fixed text has no LaTeX specials besides the math above; only quotes need LaTeX's form.
        text = text.replace('"ours"', "``ours''").replace('"paper"', "``paper''")
    return text


# ------------------------------------------------------------------------------------ versus trivial

BASELINE = "trivial"
BEAT_MARGIN = 0.10  # relative, in the metric's (lower-is-better) direction


def tasks_required(n_tasks: int) -> int:
    """Tasks a method must beat the trivial baseline on: all but one in ten (9 of the 10 tasks)."""
    return n_tasks - n_tasks // 10


def vs_trivial(scores: pd.DataFrame, margin: float = BEAT_MARGIN) -> pd.DataFrame:
    """Per method, the tasks where it beats the trivial baseline: its mean over seeds is at least ``margin``
    better (relative) than trivial's on every metric of the task (value <= (1 - margin) * trivial's).

    Columns: method, tasks (tasks with both runs), beaten, required (:func:`tasks_required`), passes, and
    not_beaten (the other tasks, ';'-separated). The rule of docs/adding-a-method.md: a method of the default
    configuration passes. Empty when the scores hold no trivial run.
    """
    summary = summarise(scores)
    base = summary[summary["method"] == BASELINE].set_index(["task", "metric"])["mean"]
    rows = []
    for method in method_order(set(summary["method"]) - {BASELINE}):
        own = summary[summary["method"] == method]
        beaten, missed = [], []
        for task in task_order(own["task"]):
            t = own[own["task"] == task]
            keys = [(task, m) for m in t["metric"]]
            if not keys or any(k not in base.index for k in keys):
                continue  # no trivial run of this task (or of one of its metrics): nothing to compare
            ok = all(v <= (1 - margin) * base[k] for k, v in zip(keys, t["mean"], strict=True))
            (beaten if ok else missed).append(task)
        n = len(beaten) + len(missed)
        rows.append(
            {
                "method": method,
                "tasks": n,
                "beaten": len(beaten),
                "required": tasks_required(n),
                "passes": len(beaten) >= tasks_required(n),
                "not_beaten": ";".join(missed),
            }
        )
    columns = ["method", "tasks", "beaten", "required", "passes", "not_beaten"]
    return pd.DataFrame(rows, columns=columns)


def _vs_trivial_markdown(table: pd.DataFrame, margin: float = BEAT_MARGIN) -> str:
    lines = [
        f"Tasks on which each method beats the trivial baseline by at least {margin:.0%} (relative) on every "
        "metric of the task (means over seeds); a method of the default configuration passes on all but one "
        "in ten tasks.",
        "",
        "| Method | Tasks beaten | Required | Passes | Not beaten |",
        "|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {md_cell(method_title(r.method))} | {r.beaten} of {r.tasks} | {r.required} | "
            f"{'yes' if r.passes else 'no'} | {md_cell(r.not_beaten.replace(';', ', ')) or MISSING} |"
        )
    return "\n".join(lines) + "\n"


def write_tables(
    scores: pd.DataFrame, paper: pd.DataFrame | None, out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write ``paper_table.csv``, ``paper_table.md`` and ``paper_table.tex`` to ``out_dir``, and the check
    against the trivial baseline, ``vs_trivial.csv`` and ``vs_trivial.md``; return the paths.

    Each column header names the task, its metric and the direction (lower is better).
    """
    scores = validate_scores(scores)
    table = paper_table(scores, paper)
    out = Path(out_dir)
    paths = {ext: out / f"paper_table.{ext}" for ext in ("csv", "md", "tex")}
    write_text_atomic(paths["csv"], _to_csv(table))
    write_text_atomic(paths["md"], _to_markdown(table, table_caption(scores)))
    write_text_atomic(paths["tex"], _to_latex(table, table_caption(scores, latex=True)))
    check = vs_trivial(scores)
    paths["vs_trivial_csv"] = out / "vs_trivial.csv"
    paths["vs_trivial_md"] = out / "vs_trivial.md"
    write_text_atomic(paths["vs_trivial_csv"], check.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths["vs_trivial_md"], _vs_trivial_markdown(check))
    return paths


def _to_csv(table: pd.DataFrame) -> str:
    flat = table.copy()
    flat.columns = [f"{task}: {metric} (lower is better)" for task, metric in table.columns]
    return flat.reset_index().to_csv(index=False, lineterminator="\n")


def md_cell(text: str) -> str:
    return text.replace("|", r"\|")


def _to_markdown(table: pd.DataFrame, caption: str) -> str:
    header = ["Method", "Result"] + [
        f"{task_title(t)} · {metric_format(m).label} ↓" for t, m in table.columns
    ]
    lines = [f"**Table.** {caption}", "", "| " + " | ".join(md_cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join([":---", ":---"] + ["---:"] * len(table.columns)) + " |")
    for (method, source), cells in table.iterrows():
        name = method_title(method) if source == "ours" else ""
        lines.append("| " + " | ".join(md_cell(c) for c in [name, source, *cells]) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (method and task names from users)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _latex_cell(text: str) -> str:
    if text == MISSING:
        return "--"
    return latex_escape(text).replace(" ± ", r" $\pm$ ")


def _to_latex(table: pd.DataFrame, caption: str) -> str:
    n = len(table.columns)
    tasks = " & ".join(latex_escape(task_title(t)) for t, _ in table.columns)
    metrics = " & ".join(rf"{metric_format(m).latex} $\downarrow$" for _, m in table.columns)
    lines = [
        "% Requires \\usepackage{booktabs} and \\usepackage{graphicx}.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        r"\label{tab:nb360-results}",
        r"\resizebox{\linewidth}{!}{%",
        rf"\begin{{tabular}}{{ll{'r' * n}}}",
        r"\toprule",
        rf"Method & & {tasks} \\",
        rf" & & {metrics} \\",
        r"\midrule",
    ]
    first = True
    for (method, source), cells in table.iterrows():
        if source == "ours":
            if not first:
                lines.append(r"\addlinespace")
            first = False
            lines.append(
                rf"{latex_escape(method_title(method))} & ours & "
                + " & ".join(map(_latex_cell, cells))
                + r" \\"
            )
        else:
            paper_cells = [rf"\textit{{{_latex_cell(c)}}}" for c in cells]
            lines.append(r" & \textit{paper} & " + " & ".join(paper_cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}%", "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ atomic files


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; rename it over ``path`` on success.

    The temporary name starts with a dot and is unique per process and call, so parallel jobs never share
    one; on any error it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically."""
    with atomic_output(path) as f:
        f.write(text.encode("utf-8"))
