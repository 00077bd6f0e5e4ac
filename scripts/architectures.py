"""Rule architectures: the table of searched architectures and the figure of the DARTS cells."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.report.architectures import write_architectures

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    write_architectures(
        smk.input.archs,
        smk.input.scores,
        csv=smk.output.csv,
        md=smk.output.md,
        figure=Path(smk.output.figure).with_suffix(""),
    )
