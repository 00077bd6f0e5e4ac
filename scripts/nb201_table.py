"""Rule nb201_table: merge a task's chunks into one official-format table per epoch budget."""

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.nb201.pipeline import table_job

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    table_job(smk.wildcards.task, smk.wildcards.hp, smk.input, smk.output[0])
