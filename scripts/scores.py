"""Rule scores: collect every run's scores.json into the tidy results/tables/scores.csv."""

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.logs import log_to
from nb360.runs import write_scores

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    write_scores(smk.input, smk.output[0])
