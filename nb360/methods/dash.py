"""DASH (Shen, Khodak, Talwalkar 2022; more-methods.md section 7): the kernel size and dilation of every
convolution of a WRN (2D) or of the 1D ResNet, searched with one aggregated mixture kernel per layer
(:mod:`nb360.search.dash_space`), then the hyper-parameters of the retraining network chosen on validation,
then that network retrained.

* ``search``: the search backbone (WRN-16-1, or the 1D ResNet) with every searched convolution a
  :class:`~nb360.search.dash_space.MixedConv`; weights and architecture logits trained together on the
  training loss (single level: :class:`SingleLevelArchStep` steps the logits after each weight step, with
  their own SGD), on a fraction of the training batches per epoch; the argmax of each layer's logits is the
  architecture, written to ``arch.json`` as (kernel, dilation) pairs.
* ``tune`` (its own job, after the search): the hyper-parameter grid (learning rate x dropout x weight decay
  x momentum) on the retraining network with the searched kernels, each configuration trained briefly from
  the same initialisation and scored on validation; the best goes to ``hparams.json``.
* ``retrain``: that network with those hyper-parameters, trained on the task's retrain split and reported
  on test once. Protocol over DASH's runs, which validated on the test set
  (``valid_split 0``): validation chooses, test is reported once.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from nb360 import metrics
from nb360.data.loader import make_loader
from nb360.data.shards import read_manifest
from nb360.methods.base import Method, RunContext, SearchResult, TuneResult, register_method
from nb360.methods.budgets import check_budget, smoke_validation
from nb360.methods.wrn import PAPER_BATCH, smoke_config
from nb360.methods.wrn import SMOKE as WRN_SMOKE
from nb360.models import create_model
from nb360.runs import read_arch, read_hparams
from nb360.search.dash_space import SPACE_1D, SPACE_2D, SPACE_NINAPRO, MixedConv, to_supernet
from nb360.tasks import TaskSpec
from nb360.train import RunResult, TrainConfig, fit, seed_everything
from nb360.train.loop import FitHook, FitState, make_scheduler

log = logging.getLogger(__name__)

KIND = "dash_convs"
# task_configs.py: the architecture gradient's normaliser (default 100) and the learning rates of weights and
# architecture (0.1 / 0.05; 0.01 / 0.005 for the dense tasks, which keep full resolution).
GRAD_SCALE = {"cifar100": 5000.0, "spherical": 500.0, "cosmic": 1000.0, "deepsea": 10.0}
DENSE_LR = (0.01, 0.005)
POINT_LR = (0.1, 0.05)
# DASH's hyper-parameter grid (main.py), and the reduced one of PSICOV, Cosmic and FSD50K.
HP_GRID = {
    "lr": (0.1, 0.01, 0.001),
    "dropout": (0.0, 0.05),
    "weight_decay": (5e-4, 5e-6),
    "momentum": (0.9, 0.99),
}
HP_GRID_SMALL = {"lr": (1e-2, 1e-3, 1e-4), "dropout": (0.0,), "weight_decay": (5e-5,), "momentum": (0.99,)}
SMALL_GRID_TASKS = ("psicov", "cosmic", "fsd50k")


@dataclass(frozen=True)
class DashBudget:
    search_epochs: int
    search_fraction: float  # of the training batches per search epoch (DASH's quick_search)
    hp_epochs: int
    retrain_epochs: int
    search_width: float  # the search backbone (1: WRN-16-1 / the 1D ResNet's DASH width)
    retrain_width: float  # the retraining network (1: WRN-16-4 / the full 1D ResNet)
    hp_grid: dict[str, tuple[float, ...]] | None = None  # None: DASH's grid for the task (or wrn_hparams)
    batch_size: int | None = None  # None: DASH's per-task batch
    max_batches: int | None = None  # smoke: caps every search epoch
    # True (and no hp_grid): one configuration, the WRN's smoke training's (nothing to tune)
    wrn_hparams: bool = False


PAPER = DashBudget(
    search_epochs=100,
    search_fraction=0.2,
    hp_epochs=80,
    retrain_epochs=200,
    search_width=1.0,
    retrain_width=1.0,
)
# Smoke: a short search (one epoch of 4 batches, the search network at half width: a pipeline check, whose
# kernels are close to the random initial draw), no tuning (a grid judged after one short epoch picks noise:
# NinaPro chose lr 0.01 over 0.1 at 89.8 against 91.4 % validation error, then tested at 85.0 % where the
# WRN's smoke learning rate gives 24.7 %), and the WRN's smoke retraining with the searched kernels.
SMOKE = DashBudget(
    search_epochs=1,
    search_fraction=0.2,
    hp_epochs=1,
    retrain_epochs=0,  # 0: the WRN's smoke epochs for the task
    search_width=0.5,
    retrain_width=0.25,
    max_batches=4,
    wrn_hparams=True,
)
DASH_BATCH = {"cifar100": 64, "spherical": 64, "darcy": 10, "psicov": 8, "ninapro": 128, "cosmic": 4,
              "fsd50k": 128, "ecg": 1024, "satellite": 256, "deepsea": 256}  # fmt: skip


def space_for(spec: TaskSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kernels, dilations) of DASH's space for ``spec``."""
    if spec.dim == 1:
        return SPACE_1D
    return SPACE_NINAPRO if spec.name == "ninapro" else SPACE_2D


def budget_for(task: str, budget: str) -> DashBudget:
    return PAPER if check_budget(budget) == "paper" else SMOKE


class DashSupernet(nn.Module):
    """A backbone whose searched convolutions are mixtures; the loop trains ``weight_parameters`` and
    :class:`SingleLevelArchStep` the logits."""

    def __init__(self, backbone: nn.Module, spec: TaskSpec, grad_scale: float):
        super().__init__()
        kernels, dilations = space_for(spec)
        self.backbone = backbone
        self.mixed: list[MixedConv] = to_supernet(backbone, kernels, dilations, grad_scale=grad_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [m.alpha for m in self.mixed]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def derive(self) -> list[tuple[int, int]]:
        return [m.chosen() for m in self.mixed]


class SingleLevelArchStep(FitHook):
    """DASH's architecture update: the logits' gradient of the same training batch (the loop's backward
    computes it with the weights'; :meth:`MixedConv.arch_gradient` normalises it), stepped by SGD with
    Nesterov momentum 0.9 and weight decay 5e-4 after each weight step, its learning rate decayed with the
    weights' (x0.2 at the same milestones)."""

    def __init__(self, lr: float):
        self.lr = lr
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None

    def setup(self, state: FitState) -> None:
        self.optimizer = torch.optim.SGD(
            state.model.arch_parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        # the weights' step schedule (milestones, gamma) from this optimiser's own learning rate
        self.scheduler = make_scheduler(self.optimizer, replace(state.cfg, lr=self.lr))

    def before_step(self, epoch: int, step: int, batch: Any) -> None:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)

    def after_step(self, epoch: int, step: int, batch: Any, out: torch.Tensor, loss: torch.Tensor) -> None:
        assert self.optimizer is not None
        self.optimizer.step()

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        if self.optimizer is None:
            return {}
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: Any) -> None:
        if self.optimizer is not None and state.get("optimizer"):
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])


def search_supernet(spec: TaskSpec, width: float = 1.0) -> DashSupernet:
    """DASH's search network for ``spec`` (``width`` x): WRN-16-1 in 2D; in 1D the ResNet with DASH's mid
    channels min(4^(classes // 10 + 1), 64) of its 64; the task's grad scale."""
    base = 0.25 if spec.dim == 2 else min(4 ** (spec.num_outputs // 10 + 1), 64) / 64
    backbone = create_model("wrn", spec, width=width * base)
    return DashSupernet(backbone, spec, GRAD_SCALE.get(spec.name, 100.0))


def _lrs(spec: TaskSpec) -> tuple[float, float]:
    return DENSE_LR if spec.output_kind == "dense" else POINT_LR


def _batches(manifest: Any, spec: TaskSpec, batch_size: int) -> int:
    """Training batches per epoch of the search's fit split."""
    fit_splits = spec.splits.for_phase("search", "fit")
    return len(make_loader(manifest, fit_splits, batch_size, train=True, fit_splits=fit_splits))


def search(ctx: RunContext) -> SearchResult:
    spec, b = ctx.task, budget_for(ctx.task.name, ctx.budget)
    smoke = check_budget(ctx.budget) == "smoke"
    seed_everything(ctx.seed)
    model = search_supernet(spec, b.search_width)
    lr, arch_lr = _lrs(spec)
    manifest = read_manifest(ctx.manifest)
    batch = b.batch_size or DASH_BATCH[spec.name]
    per_epoch = max(1, math.ceil(b.search_fraction * _batches(manifest, spec, batch)))
    if b.max_batches:
        per_epoch = min(per_epoch, b.max_batches)
    milestones = (0.6,) if spec.dim == 2 else (0.3, 0.6, 0.9)  # DASH's epochs 60 (/120/160) or 30/60/90
    cfg = TrainConfig(
        epochs=b.search_epochs,
        lr=lr,
        batch_size=batch,
        weight_decay=5e-4,
        milestones=milestones,
        grad_clip=1.0,
        max_batches_per_epoch=per_epoch,
        val_every=0,
        **(smoke_validation(spec.name) if smoke else {}),
    )
    result = fit(
        model, manifest, cfg, "search", ctx.seed, ctx.device, ctx.workdir / "supernet.pt",
        hooks=[SingleLevelArchStep(arch_lr)],
    )  # fmt: skip
    convs = model.derive()
    summary = " ".join(f"{k}/{d}" for k, d in convs)
    log.info("%s DASH kernels/dilations: %s", spec.name, summary)
    arch = {"convs": [list(c) for c in convs], "backbone": "wrn" if spec.dim == 2 else "resnet1d"}
    return SearchResult(
        KIND, arch, f"kernel/dilation {summary}", result.history, result.device, result.seconds
    )


def hp_grid(task: str, b: DashBudget) -> list[dict[str, float]]:
    """The configurations the tune stage tries: the budget's grid, else the WRN's smoke training alone
    (``wrn_hparams``), else DASH's grid for the task."""
    if b.hp_grid is None and b.wrn_hparams:
        cfg = smoke_config(task)
        return [{"lr": cfg.lr, "dropout": 0.0, "weight_decay": cfg.weight_decay, "momentum": cfg.momentum}]
    grid = b.hp_grid or (HP_GRID_SMALL if task in SMALL_GRID_TASKS else HP_GRID)
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def _network(spec: TaskSpec, convs: list[tuple[int, int]], width: float, dropout: float) -> nn.Module:
    kwargs: dict[str, Any] = {"width": width, "convs": convs}
    if spec.dim == 2:
        kwargs["dropout"] = dropout  # the 1D ResNet has no dropout (as the benchmark's)
    return create_model("wrn", spec, **kwargs)


def _retrain_config(spec: TaskSpec, b: DashBudget, budget: str) -> TrainConfig:
    """The retraining's configuration before tuning (the tune stage varies its learning rate, momentum and
    weight decay): DASH's 200 epochs at the paper's batch, or the WRN's smoke epochs."""
    smoke = check_budget(budget) == "smoke"
    w = WRN_SMOKE[spec.name]
    return TrainConfig(
        epochs=w.epochs if smoke and not b.retrain_epochs else b.retrain_epochs,
        lr=0.1,
        batch_size=(w.batch_size if smoke else None) or PAPER_BATCH[spec.name],
        max_batches_per_epoch=w.max_batches_per_epoch if smoke else None,
    )


def _convs(ctx: RunContext) -> list[tuple[int, int]]:
    if ctx.arch is None:
        raise ValueError(f"{ctx.task.name}: DASH's tune and retrain stages need its arch.json")
    return [(int(k), int(d)) for k, d in read_arch(ctx.arch, KIND)["arch"]["convs"]]


def tune(ctx: RunContext) -> TuneResult:
    """DASH's hyper-parameter stage: each configuration of the grid trains the retraining network (with the
    searched kernels) from the same initialisation for ``hp_epochs`` epochs on a fraction of the batches
    and is scored on validation; grouped by learning rate, the grid stops after a group that did not
    improve the best score (DASH's main.py). The best configuration goes to ``hparams.json``."""
    spec, b = ctx.task, budget_for(ctx.task.name, ctx.budget)
    convs, base = _convs(ctx), _retrain_config(ctx.task, b, ctx.budget)
    smoke = check_budget(ctx.budget) == "smoke"
    start = time.perf_counter()
    grid = hp_grid(spec.name, b)
    if len(grid) == 1:  # nothing to choose: no training
        summary = " ".join(f"{k} {v:g}" for k, v in grid[0].items())
        log.info("%s DASH hyper-parameters: %s (the only configuration, not trained)", spec.name, summary)
        return TuneResult(grid[0], summary, [], ctx.device, time.perf_counter() - start)
    trials: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    device = ctx.device
    for lr, group in itertools.groupby(grid, key=lambda hp: hp["lr"]):
        improved = False
        for hp in group:
            seed_everything(ctx.seed)  # one initialisation for every configuration
            model = _network(spec, convs, b.retrain_width, hp["dropout"])
            cfg = replace(
                base,
                epochs=b.hp_epochs,
                lr=lr,
                momentum=hp["momentum"],
                weight_decay=hp["weight_decay"],
                val_every=b.hp_epochs,
                **(smoke_validation(spec.name) if smoke else {}),
            )
            try:
                result = fit(model, ctx.manifest, cfg, "search", ctx.seed, ctx.device)
                value, device = result.metrics[metrics.PRIMARY_METRIC[spec.name]], result.device
            except FloatingPointError as e:  # a diverging configuration loses; the grid goes on
                log.warning("DASH hyper-parameters %s diverged: %s", hp, e)
                value = math.inf
            trials.append({**hp, "value": value})
            log.info("DASH hyper-parameters %s: validation %s", hp, value)
            if best is None or value < best["value"]:
                best, improved = {**hp, "value": value}, True
        if not improved:
            break
    if best is None or not math.isfinite(best["value"]):
        raise FloatingPointError(f"{spec.name}: every DASH hyper-parameter configuration diverged")
    hparams = {k: v for k, v in best.items() if k != "value"}
    summary = " ".join(f"{k} {v:g}" for k, v in hparams.items())
    log.info("%s DASH hyper-parameters: %s (%d configurations tried)", spec.name, summary, len(trials))
    return TuneResult(hparams, summary, trials, device, time.perf_counter() - start)


def retrain(ctx: RunContext) -> RunResult:
    """The retraining network with the searched kernels, trained with the tuned hyper-parameters on the
    task's retrain split and reported on test once."""
    spec, b = ctx.task, budget_for(ctx.task.name, ctx.budget)
    convs = _convs(ctx)
    if ctx.hparams is None:
        raise ValueError(f"{spec.name}: retraining a DASH network needs its hparams.json (the tune stage)")
    hp = read_hparams(ctx.hparams, HP_GRID)["hparams"]
    base = _retrain_config(spec, b, ctx.budget)
    cfg = replace(base, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"])
    seed_everything(ctx.seed)
    model = _network(spec, convs, b.retrain_width, hp["dropout"])
    return fit(model, ctx.manifest, cfg, "retrain", ctx.seed, ctx.device, ctx.workdir / "checkpoint.pt")


register_method(Method("dash", retrain, search=search, tune=tune))
