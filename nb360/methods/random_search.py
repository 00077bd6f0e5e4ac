"""Random search over the DARTS cell space: the sanity baseline of every NAS paper (Li and Talwalkar, 2019).

Genotypes drawn uniformly from the space (:func:`nb360.search.darts_space.sample_genotype`), each trained
briefly at the supernet's size and selected on val; the best is retrained exactly like a GAEA genotype.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import replace

import numpy as np

from nb360.methods.base import Method, RunContext, SearchResult, register_method
from nb360.methods.budgets import check_budget, smoke_validation
from nb360.methods.darts import (
    KIND,
    cell_training_config,
    genotype_summary,
    retrain_genotype,
    search_budget,
)
from nb360.models import create_model
from nb360.search.darts_space import sample_genotype
from nb360.search.selection import select_by_short_training

PAPER_TRIALS, PAPER_TRIAL_EPOCHS = 24, 10
SMOKE_TRIALS, SMOKE_TRIAL_EPOCHS = 3, 1


def search(ctx: RunContext) -> SearchResult:
    t0 = time.perf_counter()
    paper = check_budget(ctx.budget) == "paper"
    trials, epochs = (PAPER_TRIALS, PAPER_TRIAL_EPOCHS) if paper else (SMOKE_TRIALS, SMOKE_TRIAL_EPOCHS)
    b = search_budget(ctx.task.name, ctx.budget)
    rng = np.random.default_rng([ctx.seed, 360, zlib.crc32(ctx.task.name.encode())])  # per task
    dense = ctx.task.output_kind == "dense"
    genotypes = [sample_genotype(rng, dim=ctx.task.dim, dense=dense) for _ in range(trials)]
    cfg = cell_training_config(epochs, 0.025, b.batch_size, b.max_batches_per_epoch)
    if not paper:
        cfg = replace(cfg, **smoke_validation(ctx.task.name))
    best, records = select_by_short_training(
        genotypes,
        lambda g: create_model("darts_eval", ctx.task, genotype=g, layers=b.layers, channels=b.channels),
        ctx.manifest,
        ctx.task.name,
        cfg,
        ctx.seed,
        ctx.device,
        ctx.workdir,
    )
    for g, r in zip(genotypes, records, strict=True):
        r["genotype"] = genotype_summary(g)
    g = genotypes[best]
    return SearchResult(
        KIND,
        json.loads(g.to_json()),
        f"trial {best + 1} of {trials}: {genotype_summary(g)}",
        history=records,
        device=records[best]["device"],
        seconds=time.perf_counter() - t0,
    )


register_method(Method("random_search", retrain_genotype, search=search))
