"""Smoke budgets: a searched network is retrained at least as many epochs as the WRN's smoke training."""

import pytest

from nb360.methods import darts, densenas, wrn
from nb360.tasks import list_tasks


@pytest.mark.parametrize("task", list_tasks())
def test_smoke_retraining_is_as_long_as_the_wrn_smoke_training(task):
    w = wrn.smoke_config(task)
    d = densenas.budget_for(task, "smoke")
    # DenseNAS' network trains about twice as fast as the WRN-16-1: at least the WRN's whole schedule, with
    # its batch size (more on Spherical, where the WRN's 6 x 30 batches left the random network near trivial).
    assert d.retrain_batch == w.batch_size and d.retrain_epochs >= w.epochs
    if w.max_batches_per_epoch is None:
        assert d.retrain_max_batches is None
    elif d.retrain_max_batches is not None:
        assert d.retrain_epochs * d.retrain_max_batches >= w.epochs * w.max_batches_per_epoch
    overrides = densenas.SMOKE_TASK.get(task, {})
    if "retrain_epochs" not in overrides:
        assert (d.retrain_epochs, d.retrain_max_batches) == (w.epochs, w.max_batches_per_epoch)
    # Its learning rate too, but where the task's own setting wins (PSICOV: 3e-3 against the WRN's 1e-3).
    assert d.retrain_lr == overrides.get("retrain_lr", w.lr)
    assert densenas.budget_for("psicov", "smoke").retrain_lr == 3e-3
    sph = densenas.budget_for("spherical", "smoke")
    assert (sph.retrain_epochs, sph.retrain_max_batches, sph.retrain_lr) == (18, None, 0.3)
    assert densenas.budget_for("darcy", "smoke").retrain_epochs == 5 > wrn.SMOKE["darcy"].epochs
    assert darts.eval_budget("psicov", "smoke").epochs == 3 > wrn.SMOKE["psicov"].epochs
    # The DARTS cell network trains ~4x slower per sample: the WRN's epochs (or the task's own, more),
    # capped batches.
    e = darts.eval_budget(task, "smoke")
    assert e.epochs == darts.SMOKE_EVAL_TASK.get(task, {}).get("epochs", w.epochs) >= w.epochs
    assert e.epochs * e.max_batches_per_epoch >= 18
    assert e.lr == (wrn.SMOKE[task].lr or e.lr) and e.lr >= 0.02


def test_densenas_random_trials_keep_their_short_budget():
    b = densenas.budget_for("cifar100", "smoke")
    assert (b.random_epochs, b.random_batch, b.random_max_batches) == (1, 32, 10)
    assert densenas.budget_for("cosmic", "smoke").random_batch == 4


def test_paper_budgets_unchanged():
    assert darts.eval_budget("cifar100", "paper").epochs == 150
    b = densenas.budget_for("cifar100", "paper")
    assert (b.retrain_epochs, b.retrain_lr, b.random_batch) == (240, 0.5, None)
