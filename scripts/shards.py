"""Rule shards: read a task's raw files with its reader and write HDF5 shards plus manifest."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.data.pipeline import build_shards
from nb360.logs import log_to

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    build_shards(
        smk.wildcards.task,
        smk.input[0],
        Path(smk.output[0]).parent,
        provenance=smk.params.provenance,
        allow_partial=smk.params.allow_partial,
    )
