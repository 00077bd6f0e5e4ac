"""Rule search_worker: one worker of a parallel search (e.g. ASHA trials) on the search's shared storage."""

import json
from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)
import torch

from nb360.data.shards import atomic_write_text
from nb360.logs import log_to
from nb360.methods import RunContext, get_method

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]):
    torch.set_num_threads(smk.threads)
    ctx = RunContext.for_job(smk, Path(smk.output[0]).parent, workers=smk.params.workers)
    record = get_method(smk.wildcards.method).search_worker(ctx, int(smk.wildcards.worker))
    atomic_write_text(smk.output[0], json.dumps(record, indent=1) + "\n")
