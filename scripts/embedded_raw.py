"""Rule embedded_raw: write a task's embedded raw files in the official format."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.data.pipeline import generate_embedded
from nb360.logs import log_to

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    out_root = Path(smk.output[0]).parent.parent
    generate_embedded(smk.wildcards.task, out_root, seed=smk.params.seed, cache_dir=smk.params.pypi_cache)
