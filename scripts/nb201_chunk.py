"""Rule nb201_chunk: train one chunk of NB201 cells on a task at one epoch budget."""

import _repo_path  # noqa: F401 (nb360 importable in conda environments)
import torch

from nb360.devices import claim_device, job_device
from nb360.logs import log_to
from nb360.nb201.pipeline import chunk_job

smk = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(smk.log[0]), claim_device(job_device(smk.params.device, smk.resources)) as placement:
    torch.set_num_threads(smk.threads)
    chunk_job(
        smk.wildcards.task,
        smk.input.manifest,
        smk.output[0],
        smk.wildcards.hp,
        int(smk.wildcards.chunk),
        budget=smk.params.budget,
        cells=smk.params.cells,
        chunk_size=smk.params.chunk_size,
        seed=smk.params.seed,
        device=placement.device,
    )
