"""Successive halving with ASHA's rungs and promotion rule (Li et al. 2020), run by parallel workers on one
optuna journal, with a result that does not depend on how the workers interleave.

Every worker (a process, or a SLURM job) opens the same optuna study in a journal file and runs jobs
(:func:`run_worker`) until none is left. Lower is better. The protocol follows Determined's
``adaptive_asha`` in its "aggressive" mode (one bracket):

* rungs: ``K = min(max_rungs, floor(log_eta(max_length)) + 1)`` rungs, the last of which is the full
  ``max_length``; the first ends after ``max_length // eta**(K - 1)`` epochs (Determined rounds down too),
  the others ``eta`` times later each. 200 epochs with ``eta = 4``: decisions after 3, 12 and 48 epochs,
  completion at 200 (Determined's third rung is 50).
* a trial that completes ``max_length`` is never pruned at its end (a prune there would save nothing).

Trials. The study holds ``max_trials`` trials, numbered in creation order; trial ``k``'s configuration is
drawn by a :class:`~optuna.samplers.RandomSampler` seeded from ``(seed, k)`` (:func:`trial_seed`), so it
is fixed by its number, whichever worker creates it. ``first_params`` fixes (some of) trial 0's values
instead, e.g. to start the search from a known good configuration.

Jobs. A trial trains in segments: to the first rung, from rung to rung, from the last rung to
``max_length``. A segment is one job (:class:`Segment`): it resumes the trial's checkpoint, reports the
validation value of every epoch and stops at the segment's end. Every trial takes this same path (the
segment boundaries are fixed), so its values do not depend on which worker runs which segment.

Decisions. At rung ``r``, trial ``k`` is promoted if its value is among the best ``1 / eta`` of the trials
``j <= k`` that reached rung ``r`` (optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner` rule: rank
``len // eta`` or better, ties promoted, and while fewer than ``eta`` trials compete, only the best so far),
else it is pruned there. The decision waits until every trial ``j < k`` has reported rung ``r`` or ended
before it, so it is taken against a fixed set: the outcome is the one a single worker running the trials
in order gets (with optuna's pruner, too), whatever the number of workers and their timing
(:func:`_plan`). A trial waiting for its decision is paused (its checkpoint is on disk) and its worker
takes other work, as ASHA's workers never wait while a trial can start: a worker picks the next segment of
a promoted trial (the highest rung first, then the lowest number), else starts the next trial, else, while
paused trials wait on segments that live workers are running, polls for their decisions. Asynchrony is in
the scheduling only; the set of trials, the values and the decisions are fixed by the seed.

Killed workers. Each worker holds an exclusive ``flock`` on its ``worker<i>.alive`` file next to the
journal while it runs; the kernel drops it when the process dies (on NFS, when the dead client's lease
expires). A segment's trial records the worker running it (user attribute ``holder``); a trial held by a
worker whose lock is free, or by the worker's own index when it (re)starts, is stale: it is released and
its segment runs again, by any worker, from the trial's last checkpoint. Values already reported are kept,
so the decisions do not change. Where the file system has no ``flock`` a worker cannot tell a dead worker
from a live one: it leaves other workers' trials alone and ends instead of waiting for them; a restart of
the dead worker's index resumes its trial.

Diverged trials (a non-finite training loss, validation value or final value) are bad configurations, not
crashes: they end as PRUNED with the error recorded. Any other exception releases the trial (a later job
resumes it) and stops the worker, so the job fails visibly.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from nb360.train.loop import FitHook

log = logging.getLogger(__name__)

JOURNAL_NAME = "optuna.journal"
TRIAL_LOCK_NAME = "optuna.trials"  # the lock file: optuna.trials.lock (JournalFileOpenLock adds ".lock")
HOLDER = "holder"  # user attribute: the worker running the trial's current segment (None: paused)
STARTUP_LOCK_S = 10.0  # how long a starting worker retries its own lock (a probe may hold it an instant)


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

    @property
    def segment_ends(self) -> tuple[int, ...]:
        """Where each segment of a trial ends: the rungs, then ``max_length``."""
        return (*self.rungs, self.max_length)


def rung_epochs(max_length: int, reduction_factor: int, max_rungs: int) -> tuple[int, ...]:
    """The epochs after which a trial is promoted or pruned; the last rung, ``max_length``, is left out."""
    n = 1  # rungs, the full length included: eta**(n - 1) <= max_length, in integers (no float log)
    while n < max_rungs and reduction_factor**n <= max_length:
        n += 1
    first = max(1, max_length // reduction_factor ** (n - 1))
    return tuple(first * reduction_factor**k for k in range(n - 1))


def _open(workdir: Path, name: str) -> tuple[optuna.Study, JournalStorage]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = str(workdir / JOURNAL_NAME)
    # O_EXCL lock files work across processes and hosts (NFSv3+); a lock older than 30 s is stale.
    storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    # No optuna pruner: the promotion decisions are taken here, in trial order (see _plan).
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="minimize",
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    return study, storage


def open_study(workdir: Path, name: str) -> optuna.Study:
    """The study ``name`` in ``workdir``'s journal file, created by whichever worker comes first."""
    return _open(workdir, name)[0]


def checkpoint_path(workdir: Path, name: str, number: int) -> Path:
    """Trial ``number``'s checkpoint: per study, so that no other study's file is ever resumed."""
    return workdir / "trials" / f"{name}-trial{number}.pt"


def trial_seed(seed: int, number: int) -> int:
    """The RandomSampler seed of trial ``number`` (an independent stream per trial)."""
    return int(np.random.SeedSequence([seed, number, 0xA5A]).generate_state(1)[0])


def promotable(value: float, competing: Sequence[float], reduction_factor: int) -> bool:
    """optuna's successive-halving rule (minimise): ``value`` is at rank ``len // eta`` or better among
    ``competing`` (which includes it), or the best while fewer than ``eta`` compete."""
    ranked = sorted(competing)
    return value <= ranked[max(len(ranked) // reduction_factor - 1, 0)]


@dataclass(frozen=True)
class Segment:
    """One job: train trial ``number`` (configuration ``params``) until ``until`` epochs.

    The trial resumes from ``checkpoint`` when it exists, calls ``report(epoch, value)`` after every
    epoch (1-based; a non-finite value raises FloatingPointError: the trial diverged) and stops after
    ``until`` epochs; ``final``: ``until`` is the trial's full length and the objective returns its
    final value.
    """

    number: int
    params: dict[str, Any]
    until: int
    final: bool
    checkpoint: Path
    report: Callable[[int, float], None]


Objective = Callable[[Segment], float | None]  # the final value for a final segment, else None


class SegmentEnd(Exception):
    """Raised by :class:`AshaReport` when the loop reaches the segment's end (the checkpoint is saved)."""


class AshaReport(FitHook):
    """Reports each epoch's validation ``metric`` of a :class:`Segment` and ends the segment at its end.

    The segment ends at the start of epoch ``until`` (0-based), after the checkpoint of epoch ``until``
    was saved, so the next segment resumes exactly there. Its checkpointed state is what it reported:
    resuming replays those values, and values the trial already holds are kept as they are.
    """

    def __init__(self, segment: Segment, metric: str) -> None:
        self.segment, self.metric = segment, metric
        self.reported: list[tuple[int, float]] = []

    def epoch_start(self, epoch: int) -> None:
        if epoch >= self.segment.until:
            raise SegmentEnd(f"trial {self.segment.number}: segment ends after {self.segment.until} epochs")

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        value = float(record["val"][self.metric])
        self.reported.append((epoch + 1, value))
        self.segment.report(epoch + 1, value)

    def state_dict(self) -> dict[str, Any]:
        return {"reported": [list(r) for r in self.reported]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reported = [(int(s), float(v)) for s, v in state.get("reported", [])]
        for step, value in self.reported:
            self.segment.report(step, value)


@dataclass
class _Plan:
    prune: list[int] = field(default_factory=list)  # paused trials whose decision is: pruned
    runnable: list[tuple[int, int]] = field(default_factory=list)  # (trial, segment) free to run
    waiting: list[int] = field(default_factory=list)  # paused trials whose decision is not ready


def _plan(trials: Sequence[FrozenTrial], config: AshaConfig) -> _Plan:
    """The decisions that can be taken now, in trial order, and the jobs free to run.

    Trial ``k``'s decision at rung ``r`` is taken once every trial ``j < k`` is resolved at ``r`` (it
    reported rung ``r``, or it ended before), against the values at ``r`` of the trials ``j <= k``.
    Values are never changed once reported, so a decision, once it can be taken, is always the same.
    """
    rungs, plan = config.rungs, _Plan()
    resolved = [True] * len(rungs)  # every trial so far reported rung r or ended before it
    values: list[list[float]] = [[] for _ in rungs]  # their values at rung r
    for t in sorted(trials, key=lambda t: t.number):
        iv = t.intermediate_values
        at = -1  # the last rung reached (rungs are reached in order)
        while at + 1 < len(rungs) and rungs[at + 1] in iv:
            at += 1
        ended = t.state.is_finished()
        # A held trial is in a segment (which may have just reported its rung): its worker releases it
        # at the segment's end, and only then is it decided on.
        if not ended and t.user_attrs.get(HOLDER) is None:
            promoted = True if at < 0 else None  # no rung yet: the trial runs towards its first
            if at >= 0 and resolved[at]:
                promoted = promotable(iv[rungs[at]], [*values[at], iv[rungs[at]]], config.reduction_factor)
            if promoted is False:
                plan.prune.append(t.number)
                ended = True
            elif promoted:
                plan.runnable.append((t.number, at + 1))
            else:
                plan.waiting.append(t.number)
        for r, epochs in enumerate(rungs):
            if epochs in iv:
                values[r].append(iv[epochs])
            elif not ended:
                resolved[r] = False
    return plan


@contextmanager
def _trial_lock(workdir: Path) -> Iterator[None]:
    # A lock of our own (not the journal's, which optuna takes per operation): every choice of a job and
    # every change of a trial's holder or state is one critical section.
    lock = JournalFileOpenLock(str(workdir / TRIAL_LOCK_NAME))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _alive_path(workdir: Path, worker: int) -> Path:
    return workdir / f"worker{worker}.alive"


@contextmanager
def _alive_lock(workdir: Path, worker: int) -> Iterator[bool]:
    """Hold ``worker``'s liveness lock while running; yields whether the file system supports flock."""
    fd = os.open(_alive_path(workdir, worker), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, supported = time.monotonic() + STARTUP_LOCK_S, True
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"search worker {worker} is already running on {workdir} (it holds "
                        f"{_alive_path(workdir, worker)}); run each worker index once at a time"
                    ) from None
                time.sleep(0.1)
            except OSError as e:  # e.g. a file system mounted without locks
                if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                log.warning("no flock on %s (%s): other workers' liveness cannot be checked", workdir, e)
                supported = False
                break
        yield supported
    finally:
        os.close(fd)  # drops the lock


def _alive(workdir: Path, worker: int) -> bool:
    """Whether ``worker`` holds its liveness lock (it is running)."""
    path = _alive_path(workdir, worker)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops the probe's lock at once
    return False


def _in_space(space: Mapping[str, BaseDistribution], key: str, value: Any) -> bool:
    dist = space.get(key)
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return dist.low <= value <= dist.high
    return False


def run_worker(
    workdir: Path,
    name: str,
    worker: int,
    space: Mapping[str, BaseDistribution],
    objective: Objective,
    config: AshaConfig,
    seed: int,
    *,
    attrs: Mapping[str, Any] | None = None,
    poll_s: float = 2.0,
    first_params: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run jobs of study ``name`` until none is left; the records of the segments this worker ran.

    ``attrs``: user attributes set on each trial this worker runs a segment of (e.g. its device).
    ``poll_s``: the pause between looks at the study while paused trials wait for other workers.
    ``first_params``: values of trial 0 (each must lie in ``space``); the others are drawn as usual.
    """
    for key, value in (first_params or {}).items():
        if not _in_space(space, key, value):
            raise ValueError(f"first_params: {key}={value!r} is not in the search space {dict(space)}")
    study, storage = _open(workdir, name)
    (workdir / "trials").mkdir(exist_ok=True)
    runner = _Runner(
        workdir, name, worker, space, objective, config, seed, study, storage, dict(attrs or {}), first_params
    )
    segments: list[dict[str, Any]] = []
    with _alive_lock(workdir, worker) as can_probe:
        runner.can_probe = can_probe
        while True:
            with _trial_lock(workdir):
                job = runner.next_job()
            if job is None:
                break
            if job == "wait":
                log.debug("worker %d: paused trials wait on other workers' segments", worker)
                time.sleep(poll_s)
                continue
            segments.append(runner.run(*job))
    return segments


@dataclass
class _Runner:
    workdir: Path
    name: str
    worker: int
    space: Mapping[str, BaseDistribution]
    objective: Objective
    config: AshaConfig
    seed: int
    study: optuna.Study
    storage: JournalStorage
    attrs: dict[str, Any]
    first_params: Mapping[str, Any] | None = None
    can_probe: bool = True

    def trial_id(self, number: int) -> int:
        study_id = self.storage.get_study_id_from_name(self.name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def release_stale(self, trials: Sequence[FrozenTrial]) -> bool:
        released = False
        for t in trials:
            holder = t.user_attrs.get(HOLDER)
            if t.state != TrialState.RUNNING or holder is None:
                continue
            # Held by this index: left by an earlier run of it (this process holds nothing here).
            if holder == self.worker or (self.can_probe and not _alive(self.workdir, holder)):
                log.warning(
                    "trial %d was left running by a killed worker %d: released, its segment reruns from "
                    "its checkpoint",
                    t.number,
                    holder,
                )
                self.storage.set_trial_user_attr(self.trial_id(t.number), HOLDER, None)
                released = True
        return released

    def next_job(self) -> tuple[int, int] | str | None:
        """Under the trial lock: take the decisions due and claim a job (trial, segment), or "wait"."""
        trials = self.study.get_trials(deepcopy=False)
        if self.release_stale(trials):
            trials = self.study.get_trials(deepcopy=False)
        plan = _plan(trials, self.config)
        by_number = {t.number: t for t in trials}
        for number in plan.prune:
            t = by_number[number]
            rung = max(s for s in self.config.rungs if s in t.intermediate_values)
            self.study.tell(number, state=TrialState.PRUNED)
            checkpoint_path(self.workdir, self.name, number).unlink(missing_ok=True)
            log.info("trial %d pruned after %d epochs (%.4g)", number, rung, t.intermediate_values[rung])
        if plan.runnable:
            number, segment = min(plan.runnable, key=lambda job: (-job[1], job[0]))
        elif len(trials) < self.config.max_trials:
            number, segment = len(trials), 0
            sampler = optuna.samplers.RandomSampler(seed=trial_seed(self.seed, number))
            if number == 0 and self.first_params:
                with warnings.catch_warnings():  # "experimental" since optuna 2.4, and stable since
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    sampler = optuna.samplers.PartialFixedSampler(dict(self.first_params), sampler)
            self.study.sampler = sampler
            trial = self.study.ask(dict(self.space))
            if trial.number != number:
                raise RuntimeError(f"study {self.name}: created trial {trial.number}, expected {number}")
        else:
            others = {t.user_attrs.get(HOLDER) for t in trials if t.state == TrialState.RUNNING} - {None}
            if plan.waiting and self.can_probe and others:
                return "wait"  # trials wait on segments that running workers will finish
            if plan.waiting:
                log.warning(
                    "trials %s wait on workers %s, whose liveness cannot be checked: this worker ends; "
                    "a rerun of those workers resumes them",
                    plan.waiting,
                    sorted(others),
                )
            return None
        trial_id = self.trial_id(number)
        self.storage.set_trial_user_attr(trial_id, HOLDER, self.worker)
        for key, value in self.attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)
        return number, segment

    def run(self, number: int, segment: int) -> dict[str, Any]:
        """Run one segment of trial ``number``; its record (trial, epochs, outcome, seconds)."""
        trial_id = self.trial_id(number)
        frozen = self.storage.get_trial(trial_id)
        reported = dict(frozen.intermediate_values)

        def report(step: int, value: float) -> None:
            if not math.isfinite(value):
                raise FloatingPointError(f"trial {number}: validation value {value} after {step} epochs")
            if step not in reported:  # a resumed attempt's values stay as first reported
                self.storage.set_trial_intermediate_value(trial_id, step, value)
                reported[step] = value

        ends = self.config.segment_ends
        job = Segment(
            number,
            dict(frozen.params),
            ends[segment],
            segment == len(ends) - 1,
            checkpoint_path(self.workdir, self.name, number),
            report,
        )
        log.info("trial %d: epochs to %d, %s", number, job.until, job.params)
        t0, error, value = time.perf_counter(), None, None
        try:
            value = self.objective(job)
            if job.final and (value is None or not math.isfinite(value)):
                raise FloatingPointError(f"final value is {value}")
        except FloatingPointError as e:  # a diverging configuration: a (very) bad trial, not a crash
            error = str(e)
        except BaseException:
            with _trial_lock(self.workdir):
                self._end(trial_id, time.perf_counter() - t0)
            raise
        seconds = time.perf_counter() - t0
        with _trial_lock(self.workdir):
            if not self._end(trial_id, seconds):
                outcome = "taken over"
            elif error is not None:
                self.storage.set_trial_user_attr(trial_id, "error", error)
                self.study.tell(number, state=TrialState.PRUNED)
                job.checkpoint.unlink(missing_ok=True)
                log.warning("trial %d diverged (%s): pruned", number, error)
                outcome = "diverged"
            elif job.final:
                self.study.tell(number, value)
                job.checkpoint.unlink(missing_ok=True)
                log.info("trial %d complete: %.4g", number, value)
                outcome = "complete"
            else:
                if job.until not in reported:
                    raise RuntimeError(f"trial {number}: its segment ended without a value at {job.until}")
                outcome = "rung"
        return {"trial": number, "until": job.until, "outcome": outcome, "seconds": seconds}

    def _end(self, trial_id: int, seconds: float) -> bool:
        """Under the trial lock: release the trial and add the segment's time; False if it is not ours."""
        t = self.storage.get_trial(trial_id)
        if t.state != TrialState.RUNNING or t.user_attrs.get(HOLDER) != self.worker:
            log.warning("trial %d was taken over by another worker: this segment's end is dropped", t.number)
            return False
        self.storage.set_trial_user_attr(trial_id, "seconds", float(t.user_attrs.get("seconds", 0)) + seconds)
        workers = sorted({*t.user_attrs.get("workers", []), self.worker})
        self.storage.set_trial_user_attr(trial_id, "workers", workers)
        self.storage.set_trial_user_attr(trial_id, HOLDER, None)
        return True


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    """A trial as JSON: number, params, state, value, intermediate values by epoch, seconds, workers."""
    return {
        "number": t.number,
        "workers": t.user_attrs.get("workers", []),
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
