"""Rule tables: the paper-style table (CSV, Markdown, LaTeX) from the tidy scores and the paper."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.report.tables import load_paper_results, read_scores, write_tables

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    write_tables(read_scores(smk.input[0]), load_paper_results(), Path(smk.output.csv).parent)
