"""WRN-ASHA: the WRN baseline with hyperparameters tuned by asynchronous successive halving (nb360.md 3.2).

Search space (the paper's): dropout in {0, 0.3, 0.6}, learning rate log-uniform on [1e-4, 1e-1], momentum
in {0, 0.3, 0.6, 0.9}, weight decay log-uniform on [1e-5, 1e-2], Nesterov on. Two notes:

* the 1D ResNet has no dropout; the original 1D tuning space sampled one that the model ignored, so here
  the 1D space leaves it out (and ``arch["dropout"]`` is None) rather than spend trials on a no-op;
* with momentum 0 there is no Nesterov step (torch's SGD refuses the combination); the training loop
  turns Nesterov off exactly then, which is what Nesterov with zero momentum means.

ASHA (:mod:`nb360.search.asha`) with the paper's budget: ``max_trials`` per task as in the paper, trials of
at most 200 epochs, reduction factor 4 and at most 5 rungs, one bracket (Determined's "aggressive" mode;
the paper ran Spherical in "standard" mode, several brackets, which is not reproduced). Trials train the
WRN of :mod:`nb360.methods.wrn` with its full 200-epoch schedule (the step decays at 30/60/80 %); pruning
stops them early. Every trial uses the run's seed for its initialisation and data order, so configurations
are compared on the same draws; trial ``k``'s configuration is fixed by (seed, task, ``k``) and its
promotions are decided in trial order, so the search's outcome does not depend on how many workers run it
or how they interleave. The selection metric is the task's primary validation metric
(:data:`nb360.metrics.PRIMARY_METRIC`; the paper tuned DeepSEA on a "test_mAUC" computed on val).

The workflow runs :func:`worker` as ``ctx.workers`` jobs on one journal file in the search folder, then
:func:`search` reads it and picks the best completed trial; :func:`retrain` trains the WRN at the WRN
baseline's budget with the chosen hyperparameters, so WRN and WRN-ASHA differ only in those.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from torch import nn

from nb360 import metrics
from nb360.data.shards import read_manifest
from nb360.methods.base import Method, RunContext, SearchResult, register_method
from nb360.methods.budgets import Budget, check_budget, smoke_validation
from nb360.methods.wrn import budget_for, train_config
from nb360.models import create_model
from nb360.runs import read_arch
from nb360.search.asha import (
    AshaConfig,
    AshaReport,
    Objective,
    Segment,
    SegmentEnd,
    best_trial,
    open_study,
    run_worker,
    trial_record,
)
from nb360.tasks import TaskSpec
from nb360.train import RunResult, TrainConfig, fit, seed_everything
from nb360.train.loop import resolve_device

KIND = "wrn_hparams"

PAPER_MAX_TRIALS = {
    "cifar100": 28,
    "spherical": 16,
    "ninapro": 28,
    "fsd50k": 36,
    "darcy": 104,
    "psicov": 16,
    "cosmic": 16,
    "ecg": 56,
    "deepsea": 256,
    "satellite": 28,
}
PAPER_MAX_LENGTH, PAPER_REDUCTION_FACTOR, MAX_RUNGS = 200, 4, 5
# Smoke: 4 trials of at most 2 short epochs at the WRN smoke width, pruned after 1 epoch unless among the
# best half (of the trials so far, in trial order); validation on a fixed slice of val
# (nb360.methods.budgets.smoke_validation); the batches per epoch are set per task.
SMOKE_ASHA = AshaConfig(max_trials=4, max_length=2, reduction_factor=2, max_rungs=MAX_RUNGS)
SMOKE_TRIAL_BATCHES = {
    "cifar100": 10,
    "spherical": 2,
    "ninapro": 10,
    "fsd50k": 2,
    "darcy": 3,
    "psicov": 1,
    "cosmic": 1,
    "ecg": 4,
    "satellite": 20,
    "deepsea": 10,
}


def asha_config(task: str, budget: str) -> AshaConfig:
    if check_budget(budget) == "smoke":
        return SMOKE_ASHA
    return AshaConfig(PAPER_MAX_TRIALS[task], PAPER_MAX_LENGTH, PAPER_REDUCTION_FACTOR, MAX_RUNGS)


def search_space(spec: TaskSpec) -> dict[str, BaseDistribution]:
    space: dict[str, BaseDistribution] = {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "momentum": CategoricalDistribution((0.0, 0.3, 0.6, 0.9)),
        "weight_decay": FloatDistribution(1e-5, 1e-2, log=True),
    }
    if spec.dim == 2:  # the 1D ResNet has no dropout (see the module docstring)
        space["dropout"] = CategoricalDistribution((0.0, 0.3, 0.6))
    return space


def trial_budget(task: str, budget: str) -> Budget:
    """The WRN budget of one trial: the baseline's width and batch size, ASHA's longest trial."""
    b = budget_for(task, budget)
    length = asha_config(task, budget).max_length
    if check_budget(budget) == "paper":
        return replace(b, epochs=length)
    cap = min(b.max_batches_per_epoch or SMOKE_TRIAL_BATCHES[task], SMOKE_TRIAL_BATCHES[task])
    return replace(b, epochs=length, max_batches_per_epoch=cap)


def tuned_config(task: str, budget: Budget, hparams: dict[str, Any]) -> TrainConfig:
    """The WRN's training configuration with the tuned optimiser settings (Nesterov on, see above)."""
    return replace(
        train_config(task, budget),
        lr=float(hparams["lr"]),
        momentum=float(hparams["momentum"]),
        weight_decay=float(hparams["weight_decay"]),
        nesterov=True,
    )


def build_model(spec: TaskSpec, budget: Budget, dropout: float | None) -> nn.Module:
    kwargs = {} if dropout is None else {"dropout": float(dropout)}
    return create_model("wrn", spec, width=budget.width, **kwargs)


def study_name(ctx: RunContext) -> str:
    """Task, seed and budget, plus a digest of the data and settings: a change starts a new study."""
    manifest = read_manifest(ctx.manifest)
    identity = {
        "data": {k: v for k, v in manifest.items() if k != "provenance"},  # shard hashes, not timestamps
        "asha": asdict(asha_config(ctx.task.name, ctx.budget)),
        "trial": asdict(trial_budget(ctx.task.name, ctx.budget)),
        "space": sorted(search_space(ctx.task)),
        "scheme": "asha-in-trial-order/1",  # trials fixed by number, decisions in trial order
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"wrn_asha-{ctx.task.name}-seed{ctx.seed}-{ctx.budget}-{digest}"


def _objective(ctx: RunContext) -> Objective:
    b = trial_budget(ctx.task.name, ctx.budget)
    primary = metrics.PRIMARY_METRIC[ctx.task.name]

    def objective(segment: Segment) -> float | None:
        seed_everything(ctx.seed)  # the same initialisation and data order for every configuration
        model = build_model(ctx.task, b, segment.params.get("dropout"))
        cfg = tuned_config(ctx.task.name, b, segment.params)
        if check_budget(ctx.budget) == "smoke":
            cfg = replace(cfg, **smoke_validation(ctx.task.name))
        hooks = [AshaReport(segment, primary)]
        try:  # resumes the trial's checkpoint: the previous segment's end, or a killed attempt's epoch
            result = fit(
                model, ctx.manifest, cfg, "search", ctx.seed, ctx.device, segment.checkpoint, hooks=hooks
            )
        except SegmentEnd:
            return None
        return float(result.metrics[primary])

    return objective


def search_seed(ctx: RunContext) -> int:
    """The seed of the trials' configurations: the run's seed and the task (each task draws its own)."""
    return int(np.random.SeedSequence([ctx.seed, zlib.crc32(ctx.task.name.encode())]).generate_state(1)[0])


def worker(ctx: RunContext, index: int) -> dict[str, Any]:
    """One ASHA worker job: run jobs (trial segments) of the shared study until none is left."""
    t0 = time.perf_counter()
    config = asha_config(ctx.task.name, ctx.budget)
    name = study_name(ctx)
    device = str(resolve_device(ctx.device))
    segments = run_worker(
        ctx.workdir,
        name,
        index,
        search_space(ctx.task),
        _objective(ctx),
        config,
        search_seed(ctx),
        attrs={"device": device},
    )
    ran = {s["trial"] for s in segments}
    study = open_study(ctx.workdir, name)
    return {
        "worker": index,
        "study": name,
        "max_trials": config.max_trials,
        "rungs": list(config.rungs),
        "max_length": config.max_length,
        "segments": segments,
        "trials": [trial_record(t) for t in study.get_trials(deepcopy=False) if t.number in ran],
        "trial_seconds": sum(s["seconds"] for s in segments),
        "seconds": time.perf_counter() - t0,
        "device": device,
    }


def _summary(arch: dict[str, Any]) -> str:
    text = f"lr={arch['lr']:.3g}, wd={arch['weight_decay']:.3g}, momentum={arch['momentum']:g}"
    return text if arch["dropout"] is None else f"{text}, dropout={arch['dropout']:g}"


def search(ctx: RunContext) -> SearchResult:
    """Read the workers' study and pick the best trial of the highest rung (the best completed one)."""
    t0 = time.perf_counter()
    study = open_study(ctx.workdir, study_name(ctx))
    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials)
    arch = {
        "dropout": best.params.get("dropout"),
        "lr": best.params["lr"],
        "momentum": best.params["momentum"],
        "weight_decay": best.params["weight_decay"],
        "nesterov": True,
        "trial": best.number,
        "val": best.value,
    }
    history = [trial_record(t) for t in trials]
    return SearchResult(
        KIND,
        arch,
        _summary(arch),
        history=history,
        device=best.user_attrs.get("device", ctx.device),
        seconds=sum(h["seconds"] for h in history) + time.perf_counter() - t0,
    )


def retrain(ctx: RunContext) -> RunResult:
    """The WRN at the WRN baseline's budget (smoke: half its epochs), trained with the searched
    hyperparameters."""
    if ctx.arch is None:
        raise ValueError("wrn_asha retrains the searched hyperparameters: ctx.arch (arch.json) is required")
    hparams = read_arch(ctx.arch, kind=KIND)["arch"]
    budget = budget_for(ctx.task.name, ctx.budget)
    if check_budget(ctx.budget) == "smoke":  # half the WRN's smoke epochs: the default run fits 30 minutes
        budget = replace(budget, epochs=max(2, budget.epochs // 2))
    seed_everything(ctx.seed)
    model = build_model(ctx.task, budget, hparams.get("dropout"))
    cfg = tuned_config(ctx.task.name, budget, hparams)
    return fit(
        model, ctx.manifest, cfg, "retrain", ctx.seed, ctx.device, checkpoint=ctx.workdir / "checkpoint.pt"
    )


register_method(Method("wrn_asha", retrain, search=search, search_worker=worker))
