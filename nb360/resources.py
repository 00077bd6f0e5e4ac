"""What each kind of job asks of its machine or scheduler: memory, run time, CPU threads and GPUs.

The rules read these (``workflow/rules/common.smk``), so the same numbers drive a local run, where Snakemake
counts ``gpu`` against ``--resources gpu=N``, and a SLURM run, where the executor plugin turns them into
``--mem``, ``-t``, ``--cpus-per-task`` and ``--gpus``. A profile can still override any of them per rule
(``set-resources``). Memory and run time grow with the attempt, so a job that was killed for running out of
either is resubmitted with more (``retries`` in the profile); training resumes from its last checkpoint.
Snakemake evaluates these while it builds the DAG, so this module imports only the light method registry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nb360.methods.budgets import check_budget
from nb360.methods.registry import method_info

STAGES = ("data", "search", "search_worker", "tune", "retrain", "nb201", "report")


@dataclass(frozen=True)
class JobResources:
    mem_mb: int  # host memory
    runtime: int  # wall-clock minutes
    threads: int  # CPU threads (torch intra-op threads)
    gpu: int  # GPUs, 0 or 1


# Smoke jobs take seconds to minutes on one core and under 3 GB (PSICOV's WRN peaks at 2.6 GB).
# Paper jobs: the paper's 200-epoch retraining and 1-GPU-day searches on a V100-class GPU, with headroom.
_BASE = {
    "smoke": {
        "data": JobResources(mem_mb=4000, runtime=30, threads=1, gpu=0),
        "search": JobResources(mem_mb=4000, runtime=60, threads=1, gpu=1),
        "search_worker": JobResources(mem_mb=4000, runtime=60, threads=1, gpu=1),
        "tune": JobResources(mem_mb=4000, runtime=60, threads=1, gpu=1),
        "retrain": JobResources(mem_mb=4000, runtime=60, threads=1, gpu=1),
        "nb201": JobResources(mem_mb=4000, runtime=60, threads=1, gpu=1),
        "report": JobResources(mem_mb=4000, runtime=30, threads=1, gpu=0),
    },
    "paper": {
        "data": JobResources(mem_mb=16000, runtime=480, threads=4, gpu=0),
        "search": JobResources(mem_mb=32000, runtime=2880, threads=4, gpu=1),
        "search_worker": JobResources(mem_mb=32000, runtime=1440, threads=4, gpu=1),
        # DASH's grid: up to 24 configurations x 80 epochs on a fraction of the batches (more-methods.md 7.3).
        "tune": JobResources(mem_mb=32000, runtime=1440, threads=4, gpu=1),
        "retrain": JobResources(mem_mb=32000, runtime=1440, threads=4, gpu=1),
        # A chunk of NB201 cells: 256 NinaPro cells x 200 epochs fit a day on one GPU; a Darcy chunk (85 x 85
        # through 17 cells) may need the retries' doubled run time, or a smaller nb201.chunk_size.
        "nb201": JobResources(mem_mb=16000, runtime=1440, threads=4, gpu=1),
        "report": JobResources(mem_mb=8000, runtime=60, threads=1, gpu=0),
    },
}


def job_resources(
    stage: str, budget: str, device: str = "auto", attempt: int = 1, method: str | None = None
) -> JobResources:
    """Resources of one job of ``stage`` under ``budget``; attempt n (a retry) gets n times the memory and
    run time. ``device: cpu`` asks for no GPU, so GPU-less clusters can run the training rules, and neither
    does a ``method`` whose ``stage`` is CPU-only (``Method.cpu_only``)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    base = _BASE[check_budget(budget)][stage]
    return replace(
        base,
        mem_mb=base.mem_mb * attempt,
        runtime=base.runtime * attempt,
        gpu=0 if device == "cpu" or (method and stage in method_info(method).cpu_only) else base.gpu,
    )
