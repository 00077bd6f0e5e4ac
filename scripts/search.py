"""Rule search: one search method on one task with one seed; writes arch.json and search.json."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)
import torch

from nb360.attempts import job_attempt
from nb360.devices import claim_device, job_device
from nb360.logs import log_to
from nb360.methods import RunContext, get_method
from nb360.runs import job_meta, write_arch, write_search_history

smk = snakemake  # noqa: F821 (injected by Snakemake)
# The device is claimed inside the log, so waiting for a GPU or failing to get one is logged; every attempt
# of the job, killed ones too, is recorded for the cost table (nb360.attempts).
with (
    log_to(smk.log[0]),
    claim_device(job_device(smk.params.device, smk.resources)) as placement,
    job_attempt(smk, smk.output.arch, placement),
):
    torch.set_num_threads(smk.threads)
    method = get_method(smk.wildcards.method)
    ctx = RunContext.for_job(
        smk,
        Path(smk.output.arch).parent,
        device=placement.device,
        inputs={other: Path(smk.input[f"arch_{other}"]) for other in method.reads},
        workers=smk.params.workers,
    )
    result = method.search(ctx)
    meta = job_meta(ctx, method.name, smk.params.data_source, placement)
    write_search_history(result, smk.output.history, meta)
    search = {"seconds": result.seconds, "device": result.device}
    write_arch(result.kind, result.arch, result.summary, smk.output.arch, meta, search)
