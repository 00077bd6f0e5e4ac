"""Rule cost: the search-cost table (CSV, Markdown, per-seed CSV) and the error-versus-cost figure."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.report.cost import write_cost

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    write_cost(
        smk.input.scores,
        smk.input.archs,
        smk.input.workers,
        smk.input.tunes,
        csv=smk.output.csv,
        md=smk.output.md,
        seeds_csv=smk.output.seeds,
        figure=Path(smk.output.figure).with_suffix(""),
    )
