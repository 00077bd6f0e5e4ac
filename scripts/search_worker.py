"""Rule search_worker: one worker of a parallel search (e.g. ASHA trials) on the search's shared storage."""

import json
from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)
import torch

from nb360.attempts import job_attempt
from nb360.data.shards import atomic_write_text
from nb360.devices import claim_device, job_device
from nb360.logs import log_to
from nb360.methods import RunContext, get_method

smk = snakemake  # noqa: F821 (injected by Snakemake)
# The device is claimed inside the log, so waiting for a GPU or failing to get one is logged; every attempt
# of the job, killed ones too, is recorded for the cost table (nb360.attempts).
with (
    log_to(smk.log[0]),
    claim_device(job_device(smk.params.device, smk.resources)) as placement,
    job_attempt(smk, smk.output[0], placement),
):
    torch.set_num_threads(smk.threads)
    workdir = Path(smk.output[0]).parent
    ctx = RunContext.for_job(smk, workdir, device=placement.device, workers=smk.params.workers)
    record = get_method(smk.wildcards.method).search_worker(ctx, int(smk.wildcards.worker))
    record["placement"] = placement.record()
    atomic_write_text(smk.output[0], json.dumps(record, indent=1) + "\n")
