"""ASHA over optuna (nb360.search.asha) and the WRN-ASHA method: rungs, pruning, shared workers, restarts."""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from nb360.methods import RunContext, get_method, wrn, wrn_asha
from nb360.methods.budgets import Budget
from nb360.runs import write_arch
from nb360.search import asha
from nb360.search.asha import AshaConfig, AshaReport, best_trial, open_study, report, run_worker, rung_epochs
from nb360.tasks import get_task
from nb360.train import fit

SPACE = {"x": FloatDistribution(0.0, 1.0)}


def test_rungs_follow_determined_up_to_five():
    # 200 epochs, divisor 4: floor(log4 200) + 1 = 4 rungs; the first after 200 // 4**3 = 3 epochs.
    assert rung_epochs(200, 4, 5) == (3, 12, 48)
    assert AshaConfig(28, 200).min_resource == 3
    assert rung_epochs(256, 4, 5) == (1, 4, 16, 64)  # five rungs with the full length
    assert rung_epochs(1000, 4, 5) == (3, 12, 48, 192)  # capped at five: 1000 // 4**4 = 3
    assert rung_epochs(2, 2, 5) == (1,) and rung_epochs(9, 3, 5) == (1, 3)
    assert rung_epochs(3, 4, 5) == () and AshaConfig(4, 3).min_resource == 3  # too short to prune


# Known curves, by trial number (a worker alone numbers its trials 0, 1, ...).
CURVES = {
    0: lambda s: 0.5,  # first at every rung: promoted
    1: lambda s: 1.0,  # worse than 0 at rung 1: pruned after 1 epoch
    2: lambda s: 0.1,  # best everywhere: completes
    3: lambda s: 0.05 if s == 1 else 2.0,  # best after 1 epoch, worst after 3: pruned at the second rung
    4: lambda s: 0.7,  # not in the best third of five: pruned after 1 epoch
}


def test_bad_trials_are_pruned_at_their_rung_and_the_best_completes(tmp_path):
    config = AshaConfig(max_trials=5, max_length=9, reduction_factor=3)
    assert config.rungs == (1, 3)
    study = open_study(tmp_path, "curves", config)

    def objective(trial: optuna.Trial, slot: int) -> float:
        curve = CURVES[trial.number]
        for step in range(1, config.max_length + 1):
            report(trial, step, curve(step), config.rungs)
        return curve(config.max_length)

    records = run_worker(study, tmp_path, 0, SPACE, objective, config, seed=0)
    states = [r["state"] for r in records]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED", "PRUNED"]
    last_step = {t.number: max(t.intermediate_values) for t in study.trials}
    assert last_step == {0: 9, 1: 1, 2: 9, 3: 3, 4: 1}
    assert best_trial(study.trials).number == 2
    assert [r["slot"] for r in records] == [0, 1, 2, 3, 4]
    # A second run of the worker finds the study full and runs nothing.
    assert run_worker(study, tmp_path, 0, SPACE, objective, config, seed=0) == records


def _toy_worker(workdir: str, worker: int, config: AshaConfig, barrier) -> None:
    study = open_study(Path(workdir), "shared", config)
    barrier.wait()  # both workers ask for trials at the same time

    def objective(trial: optuna.Trial, slot: int) -> float:
        for step in range(1, config.max_length + 1):
            time.sleep(0.02)
            report(trial, step, abs(trial.params["x"] - 0.3) + 1 / step, config.rungs)
        return abs(trial.params["x"] - 0.3) + 1 / config.max_length

    run_worker(study, Path(workdir), worker, SPACE, objective, config, seed=7)


def test_two_worker_processes_share_one_study_and_stop_at_max_trials(tmp_path):
    config = AshaConfig(max_trials=9, max_length=4, reduction_factor=2)
    spawn = mp.get_context("spawn")
    barrier = spawn.Barrier(2)
    procs = [spawn.Process(target=_toy_worker, args=(str(tmp_path), i, config, barrier)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    trials = open_study(tmp_path, "shared", config).trials
    # Counting and creating a trial are one critical section: exactly max_trials, no overshoot.
    assert len(trials) == config.max_trials
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert TrialState.PRUNED in {t.state for t in trials}
    # Each (worker, slot) has its own seeded draw, whatever the interleaving of the two processes.
    for t in trials:
        seed = asha.sampler_seed(7, t.user_attrs["worker"], t.user_attrs["slot"])
        fresh = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        assert fresh.ask(SPACE).params == t.params
    slots = sorted((t.user_attrs["worker"], t.user_attrs["slot"]) for t in trials)
    assert len(set(slots)) == len(slots)
    assert len({t.params["x"] for t in trials}) == len(trials)


def _add(study, state, value=None, steps=None):
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params={"x": 0.5},
            distributions=SPACE,
            intermediate_values=steps or {},
        )
    )


def test_best_is_the_best_completed_trial_ties_to_the_earlier():
    study = optuna.create_study()
    _add(study, TrialState.PRUNED, 0.01, {1: 0.01})  # stopped early: never reached the last rung
    _add(study, TrialState.COMPLETE, 0.3, {1: 0.2, 2: 0.3})
    _add(study, TrialState.COMPLETE, 0.2, {1: 0.4, 2: 0.2})
    _add(study, TrialState.FAIL)
    _add(study, TrialState.COMPLETE, 0.2, {1: 0.1, 2: 0.2})  # a tie with trial 2, later
    assert best_trial(study.trials).number == 2
    with pytest.raises(RuntimeError, match="no ASHA trial completed"):
        best_trial(study.trials[:1] + study.trials[3:4])


def test_stale_running_trial_of_a_restarted_worker_is_failed_and_its_slot_rerun(tmp_path):
    config = AshaConfig(max_trials=3, max_length=2, reduction_factor=2)
    study = open_study(tmp_path, "restart", config)
    # Worker 0 was killed during its first trial; worker 1 is alive and busy.
    for worker in (0, 1):
        study.sampler = optuna.samplers.RandomSampler(seed=asha.sampler_seed(0, worker, 0))
        trial = study.ask(SPACE)
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("slot", 0)
        trial.report(0.9, 1)
    killed, busy = study.trials

    def objective(trial: optuna.Trial, slot: int) -> float:  # later trials are better: none is pruned
        for step in (1, 2):
            report(trial, step, 1 / (trial.number + 1), config.rungs)
        return 1 / (trial.number + 1)

    records = run_worker(study, tmp_path, 0, SPACE, objective, config, seed=0)
    trials = study.trials
    assert trials[killed.number].state == TrialState.FAIL
    assert trials[busy.number].state == TrialState.RUNNING  # another worker's trial is left alone
    assert [r["state"] for r in records] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert [r["slot"] for r in records] == [0, 0, 1]
    assert records[1]["params"] == killed.params  # the killed slot reruns its configuration
    counted = [t for t in trials if t.state != TrialState.FAIL]
    assert len(counted) == config.max_trials


def test_report_hook_replays_a_resumed_trial_and_prunes_at_rungs():
    study = optuna.create_study(
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    )
    first = study.ask()
    hook = AshaReport(first, "err", rungs=(1,))
    hook.epoch_end(0, {"val": {"err": 0.5}})
    hook.epoch_end(1, {"val": {"err": 0.4}})
    study.tell(first, 0.4)
    state = hook.state_dict()
    assert state == {"reported": [[1, 0.5], [2, 0.4]]}
    retry = study.ask()
    AshaReport(retry, "err", rungs=()).load_state_dict(state)  # no rung: replay only
    assert study.trials[1].intermediate_values == {1: 0.5, 2: 0.4}
    worse = study.ask()
    with pytest.raises(optuna.TrialPruned):
        AshaReport(worse, "err", rungs=(1,)).load_state_dict({"reported": [[1, 0.9]]})


def test_search_spaces_follow_the_paper():
    space2d, space1d = wrn_asha.search_space(get_task("cifar100")), wrn_asha.search_space(get_task("ecg"))
    assert space2d["dropout"].choices == (0.0, 0.3, 0.6)
    assert space2d["momentum"].choices == (0.0, 0.3, 0.6, 0.9)
    assert (space2d["lr"].low, space2d["lr"].high, space2d["lr"].log) == (1e-4, 1e-1, True)
    assert (space2d["weight_decay"].low, space2d["weight_decay"].high) == (1e-5, 1e-2)
    assert "dropout" not in space1d and set(space1d) == {"lr", "momentum", "weight_decay"}
    paper = wrn_asha.asha_config("deepsea", "paper")
    assert (paper.max_trials, paper.max_length, paper.rungs) == (256, 200, (3, 12, 48))
    assert wrn_asha.trial_budget("cifar100", "paper") == wrn.PAPER  # the WRN's 200 epochs, full width
    assert isinstance(space2d["momentum"], CategoricalDistribution)


def test_smoke_search_then_retrain_end_to_end(embedded, tmp_path, monkeypatch):
    # Even smaller than the smoke budget: the WRN retrains for one epoch of two batches.
    monkeypatch.setitem(
        wrn.SMOKE, "satellite", Budget(epochs=1, max_batches_per_epoch=2, width=0.25, batch_size=256)
    )
    monkeypatch.setitem(wrn_asha.SMOKE_TRIAL_BATCHES, "satellite", 2)
    method = get_method("wrn_asha")
    ctx = RunContext(
        get_task("satellite"), embedded.build("satellite")[1], 0, "smoke", "cpu", tmp_path, workers=2
    )
    workers = [method.search_worker(ctx, i) for i in range(2)]
    assert sum(len(w["trials"]) for w in workers) == wrn_asha.SMOKE_ASHA.max_trials
    assert workers[1]["trials"] == []  # worker 0, run first, filled the study
    result = method.search(ctx)
    assert result.kind == "wrn_hparams" and len(result.history) == wrn_asha.SMOKE_ASHA.max_trials
    arch = result.arch
    assert arch["dropout"] is None and arch["nesterov"] is True  # the 1D ResNet has no dropout
    best = result.history[arch["trial"]]
    assert best["state"] == "COMPLETE" and best["value"] == arch["val"] and best["params"]["lr"] == arch["lr"]
    assert result.seconds >= sum(t["seconds"] for w in workers for t in w["trials"])
    assert result.summary.startswith("lr=") and "dropout" not in result.summary
    assert not list((tmp_path / "trials").iterdir())  # ended trials leave no checkpoint
    path = tmp_path / "arch.json"
    write_arch(
        result.kind, arch, result.summary, path, {"task": "satellite", "method": "wrn_asha", "seed": 0}
    )
    run = method.retrain(replace(ctx, arch=path))
    assert run.phase == "retrain" and run.metrics and all(math.isfinite(v) for v in run.metrics.values())
    assert run.history[0]["lr"] == pytest.approx(arch["lr"])  # trained with the searched learning rate


def test_zero_momentum_trains_without_nesterov(embedded):
    b = Budget(epochs=1, max_batches_per_epoch=1, width=0.25, batch_size=64)
    cfg = wrn_asha.tuned_config("satellite", b, {"lr": 0.01, "momentum": 0.0, "weight_decay": 1e-4})
    assert cfg.nesterov and cfg.momentum == 0.0  # fit turns Nesterov off (torch refuses it without momentum)
    model = wrn_asha.build_model(get_task("satellite"), b, None)
    run = fit(model, embedded.build("satellite")[1], cfg, "search", device="cpu")
    assert math.isfinite(run.history[0]["train_loss"])


def test_killed_trial_resumes_from_its_checkpoint_in_the_retry(embedded, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(wrn_asha.SMOKE_TRIAL_BATCHES, "satellite", 2)
    method = get_method("wrn_asha")
    ctx = RunContext(get_task("satellite"), embedded.build("satellite")[1], 0, "smoke", "cpu", tmp_path)

    def killed_after_one_epoch(*args, **kwargs):
        fit(*args, stop_after_epochs=1, **kwargs)  # the epoch's checkpoint is written, then the job dies
        raise KeyboardInterrupt

    monkeypatch.setattr(wrn_asha, "fit", killed_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        method.search_worker(ctx, 0)
    monkeypatch.setattr(wrn_asha, "fit", fit)
    with caplog.at_level("INFO"):
        record = method.search_worker(ctx, 0)
    killed, retry = record["trials"][:2]
    assert killed["state"] == "FAIL" and retry["slot"] == killed["slot"] == 0
    assert retry["params"] == killed["params"]
    assert "resuming satellite" in caplog.text  # from the killed attempt's checkpoint, after epoch 1
    assert retry["intermediate"]["1"] == killed["intermediate"]["1"]  # replayed into the retry
    assert sum(t["state"] != "FAIL" for t in record["trials"]) == wrn_asha.SMOKE_ASHA.max_trials
