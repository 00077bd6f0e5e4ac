"""Rule tune: the hyper-parameter stage of a tuning method on one task with one seed; writes hparams.json."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)
import torch

from nb360.attempts import job_attempt
from nb360.devices import claim_device, job_device
from nb360.logs import log_to
from nb360.methods import RunContext, get_method
from nb360.runs import job_meta, write_hparams

smk = snakemake  # noqa: F821 (injected by Snakemake)
# As in scripts/search.py: the device is claimed inside the log, and every attempt is recorded for the cost.
with (
    log_to(smk.log[0]),
    claim_device(job_device(smk.params.device, smk.resources)) as placement,
    job_attempt(smk, smk.output.hparams, placement),
):
    torch.set_num_threads(smk.threads)
    method = get_method(smk.wildcards.method)
    ctx = RunContext.for_job(
        smk, Path(smk.output.hparams).parent / "tune", device=placement.device, arch=Path(smk.input.arch)
    )
    result = method.tune(ctx)
    meta = job_meta(ctx, method.name, smk.params.data_source, placement)
    write_hparams(result, smk.output.hparams, meta)
