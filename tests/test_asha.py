"""ASHA over optuna (nb360.search.asha) and the WRN-ASHA method: rungs, decisions in trial order, shared
workers whose interleaving changes nothing, killed workers."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
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
from nb360.search.asha import (
    AshaConfig,
    AshaReport,
    Segment,
    SegmentEnd,
    best_trial,
    open_study,
    run_worker,
    rung_epochs,
)
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


def _objective(curve, delay: float = 0.0, kill=None):
    """A toy objective: ``curve(number, params, step)`` reported after every epoch, ``delay`` s an epoch."""

    def objective(segment: Segment) -> float | None:
        for step in range(1, segment.until + 1):  # report skips the steps the trial already holds
            if kill is not None and step == segment.until:
                kill.set()
                time.sleep(600)  # killed here (SIGKILL) by the test
            time.sleep(delay)
            segment.report(step, curve(segment.number, segment.params, step))
        return curve(segment.number, segment.params, segment.until) if segment.final else None

    return objective


def _outcome(trials: list) -> list[tuple]:
    """Everything the search decides, bit for bit: per trial its params, state, values and final value."""
    return [(t.number, t.params, t.state, t.intermediate_values, t.value) for t in trials]


# Known curves, by trial number.
CURVES = {
    0: lambda s: 0.5,  # first at every rung: promoted
    1: lambda s: 1.0,  # worse than 0 at rung 1: pruned after 1 epoch
    2: lambda s: 0.1,  # best everywhere: completes
    3: lambda s: 0.05 if s == 1 else 2.0,  # best after 1 epoch, worst after 3: pruned at the second rung
    4: lambda s: 0.7,  # not in the best third of five: pruned after 1 epoch
}


def test_bad_trials_are_pruned_at_their_rung_and_the_best_completes(tmp_path):
    config = AshaConfig(max_trials=5, max_length=9, reduction_factor=3)
    assert config.rungs == (1, 3) and config.segment_ends == (1, 3, 9)
    objective = _objective(lambda number, params, step: CURVES[number](step))
    segments = run_worker(tmp_path, "curves", 0, SPACE, objective, config, seed=0)
    study = open_study(tmp_path, "curves")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED", "PRUNED"]
    last_step = {t.number: max(t.intermediate_values) for t in study.trials}
    assert last_step == {0: 9, 1: 1, 2: 9, 3: 3, 4: 1}
    assert best_trial(study.trials).number == 2
    # One worker: a promoted trial's next segment comes before a new trial.
    assert [(s["trial"], s["until"]) for s in segments][:4] == [(0, 1), (0, 3), (0, 9), (1, 1)]
    assert {s["outcome"] for s in segments} == {"rung", "complete"}
    # Trial k's configuration is fixed by (seed, k).
    for t in study.trials:
        fresh = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=asha.trial_seed(0, t.number)))
        assert fresh.ask(SPACE).params == t.params
    assert not list((tmp_path / "trials").iterdir())  # ended trials leave no checkpoint
    # A second run of the worker finds nothing to do.
    assert run_worker(tmp_path, "curves", 0, SPACE, objective, config, seed=0) == []


def _noisy(number: int, params: dict, step: int) -> float:
    """Curves that cross: the configuration's distance to 0.3, a decay and a per-trial wiggle."""
    return abs(params["x"] - 0.3) + 1 / step + ((number * 7919 + step * 104729) % 97) / 400


def test_decisions_are_optunas_successive_halving_run_in_trial_order(tmp_path):
    config = AshaConfig(max_trials=14, max_length=16, reduction_factor=2)
    assert config.rungs == (1, 2, 4, 8)
    run_worker(tmp_path, "ours", 0, SPACE, _objective(_noisy), config, seed=3)
    ours = open_study(tmp_path, "ours").trials
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    reference = optuna.create_study(pruner=pruner)
    for t in ours:  # optuna's pruner, one trial after the other, on the same configurations
        reference.enqueue_trial(t.params)
        trial = reference.ask(SPACE)
        try:
            for step in range(1, config.max_length + 1):
                trial.report(_noisy(trial.number, trial.params, step), step)
                if step in config.rungs and trial.should_prune():
                    raise optuna.TrialPruned
        except optuna.TrialPruned:
            reference.tell(trial, state=TrialState.PRUNED)
        else:
            reference.tell(trial, _noisy(trial.number, trial.params, config.max_length))
    assert [(t.state, t.intermediate_values) for t in ours] == [
        (t.state, t.intermediate_values) for t in reference.trials
    ]
    states = [t.state for t in ours]
    assert states.count(TrialState.PRUNED) >= 5 and states.count(TrialState.COMPLETE) >= 2


def _toy_worker(workdir: str, name: str, worker: int, config: AshaConfig, delay: float, barrier) -> None:
    if barrier is not None:
        barrier.wait()  # both workers ask for jobs at the same time
    run_worker(Path(workdir), name, worker, SPACE, _objective(_noisy, delay), config, seed=7, poll_s=0.1)


def _run_workers(workdir: Path, name: str, config: AshaConfig, delays: tuple[float, ...]) -> list:
    spawn = mp.get_context("spawn")
    barrier = spawn.Barrier(len(delays)) if len(delays) > 1 else None
    procs = [
        spawn.Process(target=_toy_worker, args=(str(workdir), name, i, config, d, barrier))
        for i, d in enumerate(delays)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return open_study(workdir, name).trials


def test_outcome_is_the_same_however_workers_interleave(tmp_path):
    """One worker; two with worker 0 slow; two with worker 1 slow: the same trials, values and decisions.

    With one worker much slower, the fast one reaches rungs whose decisions wait on the slow one's trials:
    it pauses those trials, starts others, and polls once no trial is left to start.
    """
    config = AshaConfig(max_trials=9, max_length=8, reduction_factor=2)
    _toy_worker(str(tmp_path / "alone"), "shared", 0, config, 0.0, None)
    alone = open_study(tmp_path / "alone", "shared").trials
    for delays in [(0.1, 0.01), (0.01, 0.1)]:  # the fast one too leaves the lock free most of the time
        trials = _run_workers(tmp_path / str(delays), "shared", config, delays)
        assert _outcome(trials) == _outcome(alone), delays
        assert set().union(*(t.user_attrs.get("workers", []) for t in trials)) == {0, 1}  # both took part
    assert len(alone) == config.max_trials  # exactly max_trials, no overshoot
    assert {t.state for t in alone} == {TrialState.COMPLETE, TrialState.PRUNED}


def test_worker_killed_mid_segment_is_taken_over_by_a_live_worker(tmp_path, caplog):
    config = AshaConfig(max_trials=6, max_length=4, reduction_factor=2)
    reference = tmp_path / "reference"
    run_worker(reference, "s", 0, SPACE, _objective(_noisy), config, seed=7)
    spawn = mp.get_context("spawn")
    kill = spawn.Event()
    proc = spawn.Process(target=_killed_worker, args=(str(tmp_path / "killed"), config, kill))
    proc.start()
    assert kill.wait(timeout=120), "the worker never reached its first segment's end"
    os.kill(proc.pid, signal.SIGKILL)  # as a scheduler would: no cleanup runs
    proc.join()
    study = open_study(tmp_path / "killed", "s")
    assert study.trials[0].state == TrialState.RUNNING and study.trials[0].user_attrs[asha.HOLDER] == 1
    assert not asha._alive(tmp_path / "killed", 1)  # the kernel dropped the dead worker's lock
    with caplog.at_level("WARNING"):
        segments = run_worker(tmp_path / "killed", "s", 0, SPACE, _objective(_noisy), config, seed=7)
    assert "trial 0 was left running by a killed worker 1" in caplog.text
    assert segments[0]["trial"] == 0  # the released segment runs again first (lowest number)
    killed = open_study(tmp_path / "killed", "s").trials
    assert _outcome(killed) == _outcome(open_study(reference, "s").trials)


def _killed_worker(workdir: str, config: AshaConfig, kill) -> None:
    run_worker(Path(workdir), "s", 1, SPACE, _objective(_noisy, kill=kill), config, seed=7)


def test_a_restarted_worker_releases_the_trial_its_index_left_running(tmp_path, caplog):
    config = AshaConfig(max_trials=3, max_length=2, reduction_factor=2)
    study = open_study(tmp_path, "restart")
    # Worker 0 was killed during trial 0's first epoch (which it had reported).
    study.sampler = optuna.samplers.RandomSampler(seed=asha.trial_seed(0, 0))
    trial = study.ask(SPACE)
    trial.set_user_attr(asha.HOLDER, 0)
    trial.report(_noisy(0, trial.params, 1) + 1.0, 1)  # a value the rerun would not give: it is kept
    with caplog.at_level("WARNING"):
        run_worker(tmp_path, "restart", 0, SPACE, _objective(_noisy), config, seed=0)
    assert "trial 0 was left running by a killed worker 0" in caplog.text
    trials = open_study(tmp_path, "restart").trials
    assert len(trials) == config.max_trials and trials[0].state == TrialState.COMPLETE
    assert trials[0].intermediate_values[1] == _noisy(0, trial.params, 1) + 1.0
    assert all(t.user_attrs[asha.HOLDER] is None for t in trials)


def test_decisions_wait_for_earlier_trials_and_for_the_end_of_a_trials_segment():
    config = AshaConfig(max_trials=4, max_length=4, reduction_factor=2)  # rungs after 1 and 2 epochs
    study = optuna.create_study()
    for values, holder in [
        ({1: 0.5}, 0),  # trial 0: in its second segment, held by worker 0
        ({1: 0.9}, None),  # trial 1: at rung 1, worse than 0: pruned (the best of two goes on)
        ({1: 0.1, 2: 0.1}, 1),  # trial 2: its segment just reported rung 2; worker 1 has not released it
        ({1: 0.2}, None),  # trial 3: at rung 1, second best of four: promoted
    ]:
        study.add_trial(
            create_trial(
                state=TrialState.RUNNING,
                params={"x": 0.5},
                distributions=SPACE,
                intermediate_values=values,
                user_attrs={asha.HOLDER: holder},
            )
        )
    trials = study.trials  # (copies)
    plan = asha._plan(trials, config)
    assert (plan.prune, plan.runnable, plan.waiting) == ([1], [(3, 1)], [])  # trial 3: its segment 1
    # Once released, trial 2's decision at rung 2 waits for trial 0 to report it.
    trials[2].user_attrs[asha.HOLDER] = None
    plan = asha._plan(trials, config)
    assert (plan.prune, plan.runnable, plan.waiting) == ([1], [(3, 1)], [2])
    trials[0].intermediate_values[2] = 0.05
    plan = asha._plan(trials, config)
    assert (plan.prune, plan.runnable, plan.waiting) == ([1, 2], [(3, 1)], [])  # 0.1 > 0.05, the best


def test_liveness_is_the_workers_flock(tmp_path, monkeypatch):
    monkeypatch.setattr(asha, "STARTUP_LOCK_S", 0.2)
    assert not asha._alive(tmp_path, 3)  # never started
    with asha._alive_lock(tmp_path, 3) as supported:
        assert supported and asha._alive(tmp_path, 3)
        with pytest.raises(RuntimeError, match="already running"), asha._alive_lock(tmp_path, 3):
            pass
    assert not asha._alive(tmp_path, 3)


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


def test_promotion_rule_is_optunas():
    assert asha.promotable(0.5, [0.5], 4)  # alone: the best so far
    assert not asha.promotable(0.6, [0.5, 0.6, 0.1], 4)  # fewer than eta compete: only the best
    assert asha.promotable(0.2, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], 4)  # rank 2 of 8
    assert not asha.promotable(0.3, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], 4)
    assert asha.promotable(0.2, [0.2, 0.2, 0.9, 0.9], 2)  # ties are promoted


def test_report_hook_reports_every_epoch_ends_the_segment_and_replays_a_resumed_trial():
    reported: dict[int, float] = {}

    def report(step: int, value: float) -> None:
        reported.setdefault(step, value)

    segment = Segment(0, {}, until=2, final=False, checkpoint=Path("unused"), report=report)
    hook = AshaReport(segment, "err")
    hook.epoch_start(0)
    hook.epoch_end(0, {"val": {"err": 0.5}})
    hook.epoch_start(1)
    hook.epoch_end(1, {"val": {"err": 0.4}})
    with pytest.raises(SegmentEnd):  # after the checkpoint of epoch 2 was saved
        hook.epoch_start(2)
    assert reported == {1: 0.5, 2: 0.4}
    state = hook.state_dict()
    assert state == {"reported": [[1, 0.5], [2, 0.4]]}
    reported.clear()
    AshaReport(segment, "err").load_state_dict(state)
    assert reported == {1: 0.5, 2: 0.4}


def test_first_params_fix_trial_zero_and_the_others_are_drawn_as_before(tmp_path):
    config = AshaConfig(max_trials=3, max_length=1)
    objective = _objective(lambda number, params, step: params["x"])
    space = {**SPACE, "c": CategoricalDistribution((1, 2))}
    run_worker(tmp_path, "first", 0, space, objective, config, seed=0, first_params={"x": 0.25})
    trials = open_study(tmp_path, "first").trials
    assert trials[0].params["x"] == 0.25 and trials[0].params["c"] in (1, 2)
    for t in trials[1:]:  # trial k > 0 as without first_params: fixed by (seed, k)
        fresh = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=asha.trial_seed(0, t.number)))
        assert fresh.ask(space).params == t.params
    with pytest.raises(ValueError, match=r"x=2\.0 is not in the search space"):
        run_worker(tmp_path, "bad", 0, space, objective, config, seed=0, first_params={"x": 2.0})
    with pytest.raises(ValueError, match="c=3 is not in the search space"):
        run_worker(tmp_path, "bad", 0, space, objective, config, seed=0, first_params={"c": 3})


def test_smoke_search_starts_from_the_wrns_configuration():
    for name in ("cifar100", "fsd50k", "deepsea", "ecg"):
        spec, cfg = get_task(name), wrn.smoke_config(name)
        first = wrn_asha.first_params(spec, "smoke")
        assert first["lr"] == cfg.lr and first["momentum"] == cfg.momentum == 0.9
        assert first["weight_decay"] == cfg.weight_decay and first.get("dropout", 0.0) == 0.0
        space = wrn_asha.search_space(spec, "smoke")
        assert all(asha._in_space(space, k, v) for k, v in first.items())  # the WRN's lr is in the space
        assert space["lr"].high == max(0.1, cfg.lr) and space["lr"].high / space["lr"].low == pytest.approx(
            1e3
        )
    assert wrn_asha.lr_range("fsd50k", "smoke") == pytest.approx((1e-3, 1.0))  # WRN smoke lr 1.0
    assert wrn_asha.lr_range("fsd50k", "paper") == (1e-4, 1e-1)
    assert wrn_asha.first_params(get_task("cifar100"), "paper") is None  # the paper's search draws all


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
    assert len(workers[0]["trials"]) == wrn_asha.SMOKE_ASHA.max_trials
    assert workers[1]["segments"] == [] == workers[1]["trials"]  # worker 0, run first, did everything
    result = method.search(ctx)
    assert result.kind == "wrn_hparams" and len(result.history) == wrn_asha.SMOKE_ASHA.max_trials
    arch = result.arch
    assert arch["dropout"] is None and arch["nesterov"] is True  # the 1D ResNet has no dropout
    best = result.history[arch["trial"]]
    assert best["state"] == "COMPLETE" and best["value"] == arch["val"] and best["params"]["lr"] == arch["lr"]
    assert result.seconds >= workers[0]["trial_seconds"] == sum(t["seconds"] for t in workers[0]["trials"])
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


TINY_RETRAIN = Budget(epochs=1, max_batches_per_epoch=2, width=0.25, batch_size=256)


def _satellite_ctx(manifest: Path, workdir: Path) -> RunContext:
    return RunContext(get_task("satellite"), manifest, 0, "smoke", "cpu", workdir, workers=2)


def test_killed_trial_resumes_from_its_checkpoint_and_ends_as_if_never_killed(
    embedded, tmp_path, monkeypatch, caplog
):
    monkeypatch.setitem(wrn_asha.SMOKE_TRIAL_BATCHES, "satellite", 2)
    # Two trials of 4 epochs, decisions after 1 and 2: the last segment (epochs 3-4) is killed midway.
    monkeypatch.setattr(wrn_asha, "SMOKE_ASHA", AshaConfig(2, 4, reduction_factor=2))
    method = get_method("wrn_asha")
    manifest = embedded.build("satellite")[1]
    clean = method.search_worker(_satellite_ctx(manifest, tmp_path / "clean"), 0)

    def killed_in_the_last_segment(*args, **kwargs):
        if kwargs["hooks"][0].segment.until < 4:
            return fit(*args, **kwargs)
        fit(*args, stop_after_epochs=1, **kwargs)  # epoch 3's checkpoint is written, then the job dies
        raise KeyboardInterrupt

    ctx = _satellite_ctx(manifest, tmp_path / "killed")
    monkeypatch.setattr(wrn_asha, "fit", killed_in_the_last_segment)
    with pytest.raises(KeyboardInterrupt):
        method.search_worker(ctx, 0)
    monkeypatch.setattr(wrn_asha, "fit", fit)
    (killed,) = open_study(ctx.workdir, wrn_asha.study_name(ctx)).trials
    assert killed.state == TrialState.RUNNING and sorted(killed.intermediate_values) == [1, 2, 3]
    with caplog.at_level("INFO"):
        record = method.search_worker(ctx, 1)  # any worker takes the released trial
    assert "resuming satellite" in caplog.text and "after epoch 3 of 4" in caplog.text
    assert record["segments"][0] == {**record["segments"][0], "trial": 0, "until": 4, "outcome": "complete"}
    # The resumed run is the uninterrupted one, bit for bit: values, decisions, the chosen trial.
    strip = ("seconds", "workers")
    assert [{k: v for k, v in t.items() if k not in strip} for t in method.search(ctx).history] == [
        {k: v for k, v in t.items() if k not in strip} for t in clean["trials"]
    ]
    assert method.search(ctx).arch == method.search(_satellite_ctx(manifest, tmp_path / "clean")).arch


def _shrink_satellite() -> None:
    """The budgets of the tests (patched in place: spawned workers import the modules afresh)."""
    wrn.SMOKE["satellite"] = TINY_RETRAIN
    wrn_asha.SMOKE_TRIAL_BATCHES["satellite"] = 2


def _wrn_worker(manifest: str, workdir: str, index: int, delay: float, barrier) -> None:
    import torch

    torch.set_num_threads(1)  # as in the workflow: the same thread count in every run
    _shrink_satellite()
    real_fit = wrn_asha.fit

    def slow_fit(*args, **kwargs):
        time.sleep(delay)
        return real_fit(*args, **kwargs)

    wrn_asha.fit = slow_fit
    barrier.wait()
    get_method("wrn_asha").search_worker(_satellite_ctx(Path(manifest), Path(workdir)), index)


def test_wrn_asha_chooses_and_scores_the_same_however_its_workers_interleave(embedded, tmp_path, monkeypatch):
    monkeypatch.setitem(wrn.SMOKE, "satellite", TINY_RETRAIN)
    monkeypatch.setitem(wrn_asha.SMOKE_TRIAL_BATCHES, "satellite", 2)
    manifest = embedded.build("satellite")[1]
    method, spawn = get_method("wrn_asha"), mp.get_context("spawn")
    results = []
    for delays in [(1.0, 0.0), (0.0, 1.0)]:  # one worker, then the other, waits before each segment
        workdir = tmp_path / str(delays)
        barrier = spawn.Barrier(2)
        procs = [
            spawn.Process(target=_wrn_worker, args=(str(manifest), str(workdir), i, d, barrier))
            for i, d in enumerate(delays)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=600)
        assert [p.exitcode for p in procs] == [0, 0]
        ctx = _satellite_ctx(manifest, workdir)
        search = method.search(ctx)
        assert set().union(*(h["workers"] for h in search.history)) == {0, 1}  # both took part
        meta = {"task": "satellite", "method": "wrn_asha", "seed": 0}
        write_arch(search.kind, search.arch, search.summary, workdir / "arch.json", meta)
        run = method.retrain(replace(ctx, arch=workdir / "arch.json"))
        results.append((search, run))
    (a, run_a), (b, run_b) = results
    assert a.arch == b.arch  # the chosen configuration, its trial and validation value
    assert [h["intermediate"] for h in a.history] == [h["intermediate"] for h in b.history]
    assert run_a.metrics == run_b.metrics  # the final scores, bit for bit


@pytest.mark.integration
def test_workflow_scores_are_the_same_with_workers_side_by_side_or_one_after_the_other(tmp_path):
    """`make run`'s scores.csv, WRN-ASHA included, from two fresh directories: with 2 cores the two
    search workers run side by side, with 1 core one after the other (the first does every trial)."""
    from tests.test_workflow import _config, _snakemake, _workdir

    scores, archs = {}, {}
    for cores in ("2", "1"):
        wd = _workdir(tmp_path / f"cores{cores}")
        _config(wd, tasks=["satellite"], methods=["trivial", "wrn_asha"], seeds=[0], search={"workers": 2})
        proc = _snakemake(wd, "--cores", cores, "results/tables/scores.csv")
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        scores[cores] = (wd / "results/tables/scores.csv").read_text()
        search = wd / "results/search/satellite/wrn_asha/seed0"
        archs[cores] = json.loads((search / "arch.json").read_text())["arch"]
        segments = [json.loads((search / f"worker{i}.json").read_text())["segments"] for i in range(2)]
        if cores == "1":
            assert [] in segments  # the second worker found the study done
    assert scores["2"] == scores["1"]
    assert archs["2"] == archs["1"]
    assert "wrn_asha" in scores["1"] and "trivial" in scores["1"]
