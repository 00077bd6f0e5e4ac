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

Smoke budget (the embedded default), which keeps the code path and the protocol but not the paper's trial
count: 4 trials of 2 short epochs, and three choices so that its 4 draws can find something. Trial 0 is
the WRN's own smoke configuration (:func:`first_params`), so the search compares its draws against the
baseline's settings instead of hoping one of 4 random draws lands near them; where the WRN's smoke learning
rate is above the space's 0.1 (FSD50K, DeepSEA), the learning-rate range is scaled up by the same factor
(:func:`lr_range`), so that the baseline's configuration is in the space; the retraining runs the WRN's
full smoke budget. At the paper's budget none of this applies: the paper's space, random draws only.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from nb360.runs import read_arch, reuse_run
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

log = logging.getLogger(__name__)

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
# Smoke: 4 trials of at most 2 short epochs (Cosmic 4) at the WRN smoke width, pruned after 1 epoch unless
# among the best half (of the trials so far, in trial order); validation on a fixed slice of val
# (nb360.methods.budgets.smoke_validation); the batches per epoch are set per task.
SMOKE_ASHA = AshaConfig(max_trials=4, max_length=2, reduction_factor=2, max_rungs=MAX_RUNGS)
# Enough batches that a trial's two epochs rank configurations, not noise.
SMOKE_TRIAL_BATCHES = {
    "cifar100": 10,
    "spherical": 6,
    "ninapro": 10,
    "fsd50k": 4,
    "darcy": 3,
    "psicov": 1,
    "cosmic": 15,
    "ecg": 6,
    "satellite": 20,
    "deepsea": 10,
}
PAPER_LR_RANGE = (1e-4, 1e-1)


# Cosmic: the WRN's configuration predicts a constant mask for its first two epochs (validation 1 - AUROC
# 0.5000 after 30 steps, 0.39 after 60), so 2-epoch trials ranked configurations that never learn above it;
# 4-epoch trials (15 batches each, the WRN's epoch) rank them as their full training does.
SMOKE_ASHA_TASK = {"cosmic": AshaConfig(max_trials=4, max_length=4, reduction_factor=2, max_rungs=MAX_RUNGS)}


def asha_config(task: str, budget: str) -> AshaConfig:
    if check_budget(budget) == "smoke":
        return SMOKE_ASHA_TASK.get(task, SMOKE_ASHA)
    return AshaConfig(PAPER_MAX_TRIALS[task], PAPER_MAX_LENGTH, PAPER_REDUCTION_FACTOR, MAX_RUNGS)


def lr_range(task: str, budget: str) -> tuple[float, float]:
    """The learning-rate range: the paper's, scaled up at the smoke budget where the WRN's smoke learning
    rate lies above it (so that trial 0, the WRN's configuration, is in the space)."""
    low, high = PAPER_LR_RANGE
    if check_budget(budget) == "smoke":
        scale = max(1.0, train_config(task, budget_for(task, budget)).lr / high)
        return low * scale, high * scale
    return low, high


def search_space(spec: TaskSpec, budget: str = "paper") -> dict[str, BaseDistribution]:
    space: dict[str, BaseDistribution] = {
        "lr": FloatDistribution(*lr_range(spec.name, budget), log=True),
        "momentum": CategoricalDistribution((0.0, 0.3, 0.6, 0.9)),
        "weight_decay": FloatDistribution(1e-5, 1e-2, log=True),
    }
    if spec.dim == 2:  # the 1D ResNet has no dropout (see the module docstring)
        space["dropout"] = CategoricalDistribution((0.0, 0.3, 0.6))
    return space


def first_params(spec: TaskSpec, budget: str) -> dict[str, Any] | None:
    """Trial 0's configuration: the WRN's smoke settings at the smoke budget; None (drawn) at the paper's."""
    if check_budget(budget) == "paper":
        return None
    cfg = train_config(spec.name, budget_for(spec.name, budget))
    params: dict[str, Any] = {"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay}
    if spec.dim == 2:
        params["dropout"] = 0.0
    return params


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


def is_wrn_training(task: str, budget: Budget, hparams: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether ``hparams`` retrain exactly as the WRN baseline does (same network, same training)."""
    return hparams.get("dropout") in (None, 0, 0.0) and cfg == train_config(task, budget)


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
        "space": {k: repr(v) for k, v in search_space(ctx.task, ctx.budget).items()},
        "first": first_params(ctx.task, ctx.budget),
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
        search_space(ctx.task, ctx.budget),
        _objective(ctx),
        config,
        search_seed(ctx),
        attrs={"device": device},
        first_params=first_params(ctx.task, ctx.budget),
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
    """The WRN at the WRN baseline's budget, trained with the searched hyperparameters."""
    if ctx.arch is None:
        raise ValueError("wrn_asha retrains the searched hyperparameters: ctx.arch (arch.json) is required")
    hparams = read_arch(ctx.arch, kind=KIND)["arch"]
    budget = budget_for(ctx.task.name, ctx.budget)
    cfg = tuned_config(ctx.task.name, budget, hparams)
    wrn_run = ctx.inputs.get("wrn")
    if wrn_run is not None and is_wrn_training(ctx.task.name, budget, hparams, cfg):
        # The search kept the WRN's own configuration (trial 0): this retraining is the WRN's, run already.
        log.info("%s: the searched configuration is the WRN's; reusing %s", ctx.task.name, wrn_run)
        return reuse_run(wrn_run)
    seed_everything(ctx.seed)
    model = build_model(ctx.task, budget, hparams.get("dropout"))
    return fit(
        model, ctx.manifest, cfg, "retrain", ctx.seed, ctx.device, checkpoint=ctx.workdir / "checkpoint.pt"
    )


register_method(Method("wrn_asha", retrain, search=search, search_worker=worker))
