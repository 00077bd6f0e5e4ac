"""The DARTS family on the DARTS cell space (nb360.md 3.3): GAEA PC-DARTS (the paper's "DARTS-GAEA"),
first-order DARTS and second-order DARTS. One search (a supernet trained by :func:`nb360.train.fit` with an
architecture-update hook), one retraining of the derived genotype (``darts_eval``); the three methods differ
only in the supernet's edge form and the architecture update, set in :data:`VARIANTS`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from nb360.methods import wrn
from nb360.methods.base import Method, RunContext, SearchResult, register_method
from nb360.methods.budgets import check_budget, smoke_validation
from nb360.models import create_model
from nb360.runs import read_arch
from nb360.search.bilevel import ArchStep, ArchUpdate
from nb360.search.darts_space import Genotype, Supernet
from nb360.train import RunResult, TrainConfig, fit, seed_everything
from nb360.train.loop import FitHook, FitState

log = logging.getLogger(__name__)

KIND = "darts_genotype"


@dataclass(frozen=True)
class SearchBudget:
    """Supernet search: size, epochs, batches and the weight optimiser (SGD, cosine to 0, clip 5)."""

    channels: int = 16
    layers: int = 8
    epochs: int = 50
    warmup_epochs: int = 10
    batch_size: int = 64
    max_batches_per_epoch: int | None = None
    lr: float = 0.1
    weight_decay: float = 3e-4
    val_every: int = 1  # epochs between validations of the supernet (0: only at the end)


@dataclass(frozen=True)
class EvalBudget:
    """Retraining of the derived genotype (SGD 0.025, cosine, drop-path ramped to 0.3, clip 5)."""

    channels: int = 36
    layers: int = 20
    epochs: int = 150
    batch_size: int = 96
    max_batches_per_epoch: int | None = None
    lr: float = 0.025
    drop_path: float = 0.3


# The paper's search and evaluation batch sizes (nb360.md 3.3).
PAPER_SEARCH_BATCH = {
    "cifar100": 256, "spherical": 256, "ninapro": 256, "fsd50k": 32, "darcy": 4, "psicov": 8,
    "cosmic": 8, "ecg": 128, "deepsea": 128, "satellite": 4096,
}  # fmt: skip
PAPER_EVAL_BATCH = {
    "cifar100": 128, "ninapro": 128, "spherical": 64, "fsd50k": 32, "darcy": 4, "psicov": 4,
    "cosmic": 4, "ecg": 180, "deepsea": 64, "satellite": 1024,
}  # fmt: skip
PAPER_EVAL_CHANNELS = {"fsd50k": 16}  # 36 elsewhere

# Smoke budgets: a 5-cell supernet with 8 channels, 2 short epochs (architecture updates in the second); a
# 3-cell network with 8 channels retrained for as many epochs as the WRN's smoke training of the task, on
# capped epochs of small batches (the cell network trains 2-4x slower per sample than the WRN-16-1 on CPU:
# matching the WRN's samples would cost minutes per task). Two epochs of 8 batches (16 steps) left
# CIFAR-100's retrained cell at 98.9 % error (loss 4.56 -> 4.49, ln 100 = 4.61) and Cosmic's outputs
# constant; 8 epochs of 20 batches of 16 reach 85.9 % with 5 cells, 83.7 % with 3 cells in 2/3 of the time;
# Cosmic needs ~90 steps (48 steps: still constant; 90: 1 - AUROC 0.40). Large inputs (dense tasks at full
# resolution, Spherical 60 x 60, FSD50K 96 x 101) get smaller batches.
SMOKE_SEARCH = SearchBudget(
    channels=8, layers=5, epochs=2, warmup_epochs=1, batch_size=16, max_batches_per_epoch=6, val_every=0
)
SMOKE_EVAL = EvalBudget(channels=8, layers=3, batch_size=16, max_batches_per_epoch=20, lr=0.1)
_DENSE_SMOKE = {"batch_size": 4, "max_batches_per_epoch": 3}
_DENSE_EVAL_SMOKE = {"batch_size": 4, "max_batches_per_epoch": 15, "lr": 0.05}
_LARGE_SMOKE = {"batch_size": 16, "max_batches_per_epoch": 5}
SMOKE_SEARCH_TASK = {"darcy": _DENSE_SMOKE, "psicov": _DENSE_SMOKE, "cosmic": _DENSE_SMOKE}
SMOKE_EVAL_TASK = {
    # PSICOV: the cells need the 3 epochs the WRN no longer takes (2 left random search's cell at MAE8 9.2,
    # trivial 8.3).
    "darcy": _DENSE_EVAL_SMOKE, "psicov": {**_DENSE_EVAL_SMOKE, "epochs": 3}, "cosmic": _DENSE_EVAL_SMOKE,
    # Spherical: 20 batches of 16 left GAEA at 96.5 % error (trivial 98.9); 20 of 32 reach 80.9 %.
    "spherical": {"batch_size": 32, "max_batches_per_epoch": 20}, "fsd50k": _LARGE_SMOKE,
}  # fmt: skip


def search_budget(task: str, budget: str) -> SearchBudget:
    if check_budget(budget) == "paper":
        return SearchBudget(batch_size=PAPER_SEARCH_BATCH[task])
    return replace(SMOKE_SEARCH, **SMOKE_SEARCH_TASK.get(task, {}))


def eval_budget(task: str, budget: str) -> EvalBudget:
    if check_budget(budget) == "paper":
        return EvalBudget(channels=PAPER_EVAL_CHANNELS.get(task, 36), batch_size=PAPER_EVAL_BATCH[task])
    b = replace(SMOKE_EVAL, **{"epochs": wrn.SMOKE[task].epochs, **SMOKE_EVAL_TASK.get(task, {})})
    # Where the WRN's smoke budget sets its own learning rate for a task, so does the cell's retraining: at
    # 0.1 FSD50K's 200 sigmoid outputs never leave 0.5 in 25 steps (loss 0.697 -> 0.686, 1 - mAP 0.648 vs
    # trivial's 0.652); the WRN needs 1.0 there, DeepSEA 0.5, Darcy 0.02.
    return replace(b, lr=wrn.SMOKE[task].lr or b.lr)


@dataclass(frozen=True)
class Variant:
    """How a DARTS-family method searches: PC-DARTS factor ``k``, weight normalisation, arch update."""

    k: int
    arch_norm: str
    update: ArchUpdate
    arch_lr: float
    warmup: bool  # architecture updates only after the warm-up epochs (GAEA), or from the start (DARTS)


VARIANTS = {
    # GAEA PC-DARTS: partial channels k = 4, exponentiated gradient on the simplex, arch LR 0.1.
    "gaea": Variant(k=4, arch_norm="simplex", update="eg", arch_lr=0.1, warmup=True),
    # DARTS (Liu et al. 2019): all channels, softmax logits with Adam 3e-4; first / second order.
    "darts": Variant(k=1, arch_norm="softmax", update="adam", arch_lr=3e-4, warmup=False),
    "darts2": Variant(k=1, arch_norm="softmax", update="darts2", arch_lr=3e-4, warmup=False),
}


def search_config(task: str, budget: str) -> TrainConfig:
    b = search_budget(task, budget)
    cfg = TrainConfig(
        epochs=b.epochs,
        lr=b.lr,
        batch_size=b.batch_size,
        nesterov=False,
        weight_decay=b.weight_decay,
        schedule="cosine",
        grad_clip=5.0,
        fit_subset=(0.0, 0.5),  # weights on the first half of train, architecture on the second
        max_batches_per_epoch=b.max_batches_per_epoch,
        eval_batch_size=4 * b.batch_size,  # evaluation needs no gradients: larger batches, fewer calls
        val_every=b.val_every,
    )
    return cfg if check_budget(budget) == "paper" else replace(cfg, **smoke_validation(task))


def genotype_summary(g: Genotype) -> str:
    def cell(pairs: list[tuple[str, int]]) -> str:
        return " ".join(f"{op}<{j}" for op, j in pairs)

    return f"normal: {cell(g.normal)}" + (f" | reduce: {cell(g.reduce)}" if g.reduce else "")


def search_supernet(ctx: RunContext, variant: Variant) -> SearchResult:
    b = search_budget(ctx.task.name, ctx.budget)
    seed_everything(ctx.seed)
    model = Supernet(ctx.task, C=b.channels, layers=b.layers, k=variant.k, arch_norm=variant.arch_norm)
    arch_step = ArchStep(
        variant.update,
        variant.arch_lr,
        warmup_epochs=b.warmup_epochs if variant.warmup else 0,
        subset=(0.5, 1.0),
    )
    result = fit(
        model,
        ctx.manifest,
        search_config(ctx.task.name, ctx.budget),
        "search",
        ctx.seed,
        ctx.device,
        checkpoint=ctx.workdir / "supernet.pt",
        hooks=[arch_step],
    )
    genotype = model.genotype()
    log.info("%s genotype: %s", ctx.task.name, genotype_summary(genotype))
    return SearchResult(
        KIND,
        json.loads(genotype.to_json()),
        genotype_summary(genotype),
        history=result.history,
        device=result.device,
        seconds=result.seconds,
    )


class DropPathRamp(FitHook):
    """Drop-path probability raised linearly from 0 to ``max_prob`` over the epochs (DARTS evaluation)."""

    def __init__(self, max_prob: float) -> None:
        self.max_prob = max_prob

    def setup(self, state: FitState) -> None:
        self.model, self.epochs = state.model, state.cfg.epochs

    def epoch_start(self, epoch: int) -> None:
        self.model.drop_path_prob = self.max_prob * epoch / self.epochs


def cell_training_config(epochs: int, lr: float, batch_size: int, max_batches: int | None) -> TrainConfig:
    """DARTS' training of a discrete cell network: SGD momentum 0.9, weight decay 3e-4, cosine, clip 5."""
    return TrainConfig(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        nesterov=False,
        weight_decay=3e-4,
        schedule="cosine",
        grad_clip=5.0,
        max_batches_per_epoch=max_batches,
    )


def read_genotype(ctx: RunContext) -> Genotype:
    if ctx.arch is None:
        raise ValueError(f"{ctx.task.name}: retraining a searched cell needs its arch.json (ctx.arch)")
    body: dict[str, Any] = read_arch(ctx.arch, KIND)
    return Genotype.from_json(json.dumps(body["arch"]))


def retrain_genotype(ctx: RunContext) -> RunResult:
    """Retrain the searched cell (nb360.md 3.3 evaluation) on train + val, report on test."""
    b = eval_budget(ctx.task.name, ctx.budget)
    seed_everything(ctx.seed)
    model = create_model(
        "darts_eval", ctx.task, genotype=read_genotype(ctx), layers=b.layers, channels=b.channels
    )
    cfg = cell_training_config(b.epochs, b.lr, b.batch_size, b.max_batches_per_epoch)
    return fit(
        model,
        ctx.manifest,
        cfg,
        "retrain",
        ctx.seed,
        ctx.device,
        checkpoint=ctx.workdir / "checkpoint.pt",
        hooks=[DropPathRamp(b.drop_path)],
    )


def _method(name: str) -> Method:
    variant = VARIANTS[name]
    return Method(name, retrain_genotype, search=lambda ctx: search_supernet(ctx, variant))


for _name in VARIANTS:  # gaea, darts, darts2 (titles in nb360/methods/registry.py)
    register_method(_method(_name))
