"""Rule retrain: one method on one task with one seed; writes scores.json and history.json."""

from pathlib import Path

import _repo_path  # noqa: F401 (nb360 importable in conda environments)
import torch

from nb360.attempts import job_attempt
from nb360.devices import claim_device, job_device
from nb360.logs import log_to
from nb360.methods import RunContext, get_method
from nb360.runs import job_meta, write_run

smk = snakemake  # noqa: F821 (injected by Snakemake)
# The device is claimed inside the log, so waiting for a GPU or failing to get one is logged; every attempt
# of the job, killed ones too, is recorded for the cost table (nb360.attempts).
with (
    log_to(smk.log[0]),
    claim_device(job_device(smk.params.device, smk.resources)) as placement,
    job_attempt(smk, smk.output.scores, placement),
):
    torch.set_num_threads(smk.threads)
    ctx = RunContext.for_job(
        smk,
        Path(smk.output.scores).parent,
        device=placement.device,
        # Namedlist: "in" looks at the values, so ask the keys.
        arch=Path(smk.input.arch) if "arch" in smk.input.keys() else None,  # noqa: SIM118
        hparams=Path(smk.input.hparams) if "hparams" in smk.input.keys() else None,  # noqa: SIM118
        # Runs of other methods this one may reuse (MethodInfo.reuses), by method name.
        inputs={k.removeprefix("reuse_"): Path(v) for k, v in smk.input.items() if k.startswith("reuse_")},
    )
    result = get_method(smk.wildcards.method).retrain(ctx)
    meta = job_meta(ctx, smk.wildcards.method, smk.params.data_source, placement)
    write_run(result, smk.output.scores, smk.output.history, meta)
