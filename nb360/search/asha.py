"""Asynchronous successive halving (ASHA; Li et al. 2020) with optuna, shared by worker processes or jobs.

Every worker (a process, or a SLURM job) opens the same optuna study in a journal file
(:func:`open_study`) and runs trials until the study holds ``max_trials`` of them (:func:`run_worker`).
A trial reports its validation value after every epoch (:class:`AshaReport`, a hook of
:func:`nb360.train.fit`); at the end of each rung (:func:`rung_epochs`) optuna's
:class:`~optuna.pruners.SuccessiveHalvingPruner` promotes it only if it is in the best
``1 / reduction_factor`` of the trials that reached that rung so far, else it is pruned there. Lower is
better. The protocol follows Determined's ``adaptive_asha`` in its "aggressive" mode (one bracket):

* rungs: ``K = min(max_rungs, floor(log_eta(max_length)) + 1)`` rungs, the last of which is the full
  ``max_length``; the first ends after ``max_length // eta**(K - 1)`` epochs (Determined rounds down too),
  the others ``eta`` times later each. 200 epochs with ``eta = 4``: decisions after 3, 12 and 48 epochs,
  completion at 200. Optuna's rungs are geometric, so the third is 48 where Determined's is 50.
* a trial that completes ``max_length`` is never pruned at its end (a prune there would save nothing).
* optuna promotes the first ``eta - 1`` trials of a rung only if they are the best so far (it cannot
  suspend a trial until enough trials reach the rung, as the ASHA paper does).

Trial budget. Before a worker creates a trial it takes a lock file next to the journal, counts the
study's trials that are not FAIL (running, complete, pruned) and stops at ``max_trials``; the count and
the creation are one critical section, so two workers never overshoot: the study ends with exactly
``max_trials`` such trials (optuna's ``MaxTrialsCallback`` checks only after a trial, so every worker
but the last one would start one more).

Sampling. Each trial is drawn by a :class:`~optuna.samplers.RandomSampler` seeded from (seed, worker,
slot), where ``slot`` counts the worker's own non-failed trials: workers draw different configurations,
each worker's sequence is reproducible whatever the timing, and a retried slot draws the same one.

Killed workers. The journal storage has no heartbeat, so trials are owned: each records its worker index.
A worker that starts marks the trials its index left RUNNING as FAIL (the workflow never runs one worker
index twice at the same time, so they are stale); FAIL trials do not count towards ``max_trials``, so
the slot is run again with the same configuration, and it resumes from the killed attempt's per-slot
checkpoint. The resumed trial replays the values the killed attempt reported (:class:`AshaReport`); the
killed attempt's rung values stay in optuna's rung competition (optuna counts every trial that reached a
rung), a small bias towards promotion at that rung. A dead worker that is never restarted leaves its
trial RUNNING: the other workers are not blocked, the study just ends one trial short.

Diverged trials (a non-finite training loss or final value) are bad configurations, not crashes: they
end as PRUNED with the error recorded and count towards ``max_trials``. Any other exception marks the
trial FAIL and stops the worker, so the job fails visibly.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from nb360.train.loop import FitHook

log = logging.getLogger(__name__)

JOURNAL_NAME = "optuna.journal"
TRIAL_LOCK_NAME = "optuna.trials"  # the lock file: optuna.trials.lock (JournalFileOpenLock adds ".lock")
# Trials that take a place of max_trials (FAIL ones are retried in their slot).
COUNTED = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class AshaConfig:
    """One ASHA search: ``max_trials`` trials in all, each of at most ``max_length`` epochs."""

    max_trials: int
    max_length: int
    reduction_factor: int = 4
    max_rungs: int = 5

    def __post_init__(self) -> None:
        if self.max_trials < 1 or self.max_length < 1:
            raise ValueError(f"max_trials and max_length must be >= 1, got {self}")
        if self.reduction_factor < 2 or self.max_rungs < 1:
            raise ValueError(f"reduction_factor must be >= 2 and max_rungs >= 1, got {self}")

    @property
    def rungs(self) -> tuple[int, ...]:
        return rung_epochs(self.max_length, self.reduction_factor, self.max_rungs)

    @property
    def min_resource(self) -> int:
        """The epochs of the first rung (optuna's ``min_resource``); ``max_length`` if there is one rung."""
        return self.rungs[0] if self.rungs else self.max_length


def rung_epochs(max_length: int, reduction_factor: int, max_rungs: int) -> tuple[int, ...]:
    """The epochs after which a trial is promoted or pruned; the last rung, ``max_length``, is left out."""
    n = 1  # rungs, the full length included: eta**(n - 1) <= max_length, in integers (no float log)
    while n < max_rungs and reduction_factor**n <= max_length:
        n += 1
    first = max(1, max_length // reduction_factor ** (n - 1))
    return tuple(first * reduction_factor**k for k in range(n - 1))


def open_study(workdir: Path, name: str, config: AshaConfig) -> optuna.Study:
    """The study ``name`` in ``workdir``'s journal file, created by whichever worker comes first."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = str(workdir / JOURNAL_NAME)
    # O_EXCL lock files work across processes and hosts (NFSv3+); a lock older than 30 s is stale.
    storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=config.min_resource, reduction_factor=config.reduction_factor
    )
    return optuna.create_study(
        storage=storage, study_name=name, direction="minimize", pruner=pruner, load_if_exists=True
    )


@contextmanager
def _trial_lock(workdir: Path) -> Iterator[None]:
    # A lock of our own (not the journal's, which optuna takes inside ask()): count and create atomically.
    lock = JournalFileOpenLock(str(workdir / TRIAL_LOCK_NAME))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def sampler_seed(seed: int, worker: int, slot: int) -> int:
    """The RandomSampler seed of a worker's ``slot``-th trial (independent streams per worker and slot)."""
    return int(np.random.SeedSequence([seed, worker, slot, 0xA5A]).generate_state(1)[0])


def report(trial: optuna.Trial, step: int, value: float, rungs: tuple[int, ...]) -> None:
    """Report ``value`` after ``step`` epochs; at a rung's end, raise TrialPruned unless promoted."""
    trial.report(value, step)
    if step in rungs and trial.should_prune():
        raise optuna.TrialPruned(f"pruned after {step} epochs ({value:.4g})")


class AshaReport(FitHook):
    """Reports the epoch's validation ``metric`` to ``trial`` and prunes it at the rungs' ends.

    Its checkpointed state is what it reported, so a trial resumed from a killed attempt's checkpoint
    replays those values (and the rung decisions among them) into its new trial.
    """

    def __init__(self, trial: optuna.Trial, metric: str, rungs: tuple[int, ...]) -> None:
        self.trial, self.metric, self.rungs = trial, metric, rungs
        self.reported: list[tuple[int, float]] = []

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        value = float(record["val"][self.metric])
        self.reported.append((epoch + 1, value))
        report(self.trial, epoch + 1, value, self.rungs)

    def state_dict(self) -> dict[str, Any]:
        return {"reported": [list(r) for r in self.reported]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reported = [(int(s), float(v)) for s, v in state.get("reported", [])]
        for step, value in self.reported:
            report(self.trial, step, value, self.rungs)


Objective = Callable[[optuna.Trial, int], float]  # (trial, slot) -> final validation value


def worker_trials(study: optuna.Study, worker: int) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker]


def fail_stale_trials(study: optuna.Study, worker: int) -> list[int]:
    """Mark the trials ``worker`` left RUNNING (it was killed) as FAIL; their numbers."""
    stale = [t.number for t in worker_trials(study, worker) if t.state == TrialState.RUNNING]
    for number in stale:
        log.warning(
            "trial %d was left running by a killed worker %d: marked FAIL, its slot reruns", number, worker
        )
        study.tell(number, state=TrialState.FAIL)
    return stale


def run_worker(
    study: optuna.Study,
    workdir: Path,
    worker: int,
    space: Mapping[str, BaseDistribution],
    objective: Objective,
    config: AshaConfig,
    seed: int,
) -> list[dict[str, Any]]:
    """Run trials of ``study`` until it holds ``config.max_trials``; the records of this worker's trials."""
    with _trial_lock(workdir):
        fail_stale_trials(study, worker)
    while True:
        with _trial_lock(workdir):
            if len(study.get_trials(deepcopy=False, states=COUNTED)) >= config.max_trials:
                break
            slot = sum(t.state != TrialState.FAIL for t in worker_trials(study, worker))
            study.sampler = optuna.samplers.RandomSampler(seed=sampler_seed(seed, worker, slot))
            trial = study.ask(dict(space))
            trial.set_user_attr("worker", worker)
            trial.set_user_attr("slot", slot)
        _run_trial(study, trial, slot, objective)
    return [trial_record(t) for t in worker_trials(study, worker)]


def _run_trial(study: optuna.Study, trial: optuna.Trial, slot: int, objective: Objective) -> None:
    t0 = time.perf_counter()
    log.info("trial %d (slot %d): %s", trial.number, slot, trial.params)
    try:
        value = objective(trial, slot)
        if not math.isfinite(value):
            raise FloatingPointError(f"final value is {value}")
    except optuna.TrialPruned as e:
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d %s", trial.number, e)
        return
    except FloatingPointError as e:  # a diverging configuration: a (very) bad trial, not a crash
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        trial.set_user_attr("error", str(e))
        study.tell(trial, state=TrialState.PRUNED)
        log.warning("trial %d diverged (%s): pruned", trial.number, e)
        return
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("seconds", time.perf_counter() - t0)
    study.tell(trial, value)
    log.info("trial %d complete: %.4g", trial.number, value)


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    """A trial as JSON: number, worker, params, state, value, intermediate values by epoch, seconds."""
    return {
        "number": t.number,
        "worker": t.user_attrs.get("worker"),
        "slot": t.user_attrs.get("slot"),
        "params": dict(t.params),
        "state": t.state.name,
        "value": t.value,
        "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "seconds": float(t.user_attrs.get("seconds", 0.0)),
        "device": t.user_attrs.get("device"),
        **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}),
    }


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial:
    """The best trial of the highest rung reached: the full length, i.e. the best COMPLETE trial.

    Pruned trials stop before ``max_length``, so only complete trials reached the last rung; among them
    the lowest final value wins, ties to the earlier trial (the lower number).
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        states = ", ".join(f"{t.number}: {t.state.name}" for t in trials) or "none"
        raise RuntimeError(
            f"no ASHA trial completed (trials {states}); run the search workers first, or rerun them "
            "if they were killed"
        )
    return min(complete, key=lambda t: (t.value, t.number))
