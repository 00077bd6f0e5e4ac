"""Rule fetch_raw: verify (and download what is missing of) a task's official raw files."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)

from nb360.data.download import DownloadOptions
from nb360.data.pipeline import fetch_real
from nb360.logs import log_to

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    fetch_real(
        smk.wildcards.task,
        Path(smk.output[0]).parent.parent,
        lockfile=smk.params.lockfile,
        mirror=smk.params.mirror,
        options=DownloadOptions(**smk.params.download),
    )
