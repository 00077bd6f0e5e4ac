"""Rules nb201_report and nb201_official_report: the NB201 tables and figures."""

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.nb201.pipeline import report_job

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    report_job(smk.input.searches, dict(smk.output.items()))
