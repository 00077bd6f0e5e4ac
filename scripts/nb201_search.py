"""Rules nb201_search and nb201_official_search: the NAS algorithms on a task's two tables."""

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.nb201.pipeline import search_job

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    search_job(
        smk.wildcards.task,
        smk.input.low,
        smk.input.final,
        smk.output[0],
        runs=smk.params.runs,
        seed=smk.params.seed,
        source=smk.params.source,
        lockfile=smk.params.get("lockfile"),
    )
