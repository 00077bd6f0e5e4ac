"""Results tables and figures for the paper, built from the tidy score file and the per-run histories.

* :mod:`nb360.report.tables`: read and validate ``scores.csv``; the main results table (mean ± std over seeds
  of each task's primary metric, the published number beside ours) as CSV, Markdown and LaTeX.
* :mod:`nb360.report.figures`: Dolan–Moré performance profiles, learning curves and parameter counts, as
  PNG and PDF.

Everything here is a pure function of DataFrames, dicts or paths; every file is written atomically (a
temporary name in the same folder, then ``os.replace``) so an interrupted job never leaves a partial output.
"""

from nb360.report.figures import (
    learning_curves,
    load_histories,
    parameter_counts,
    performance_profiles,
    profile_ratios,
    read_history,
)
from nb360.report.tables import (
    DATA_SOURCE_CAPTIONS,
    load_paper_results,
    paper_table,
    primary_metric,
    read_scores,
    summarise,
    write_tables,
)

__all__ = [
    "DATA_SOURCE_CAPTIONS",
    "learning_curves",
    "load_histories",
    "load_paper_results",
    "paper_table",
    "parameter_counts",
    "performance_profiles",
    "primary_metric",
    "profile_ratios",
    "read_history",
    "read_scores",
    "summarise",
    "write_tables",
]
