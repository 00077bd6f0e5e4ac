"""Every attempt of a training or search job, killed and failed ones included, for the cost table.

Snakemake's ``benchmark:`` file of a job holds only its last attempt: the compute of an attempt that was
killed (out of memory, a SIGKILL, a SLURM time limit or preemption) or that failed and was retried is lost.
So every search, search-worker and retrain job runs inside :func:`record_attempt`, which appends snapshots
of its attempt to a JSON-lines file beside the job's outputs (:func:`attempts_path`)::

    results/runs/{task}/{method}/seed{seed}/scores.json       -> .../attempts.jsonl
    results/search/{task}/{method}/seed{seed}/arch.json       -> .../attempts.jsonl
    results/search/{task}/{method}/seed{seed}/worker{i}.json  -> .../worker{i}.attempts.jsonl

The file is no output of the job, so Snakemake never deletes it (as it keeps the job's checkpoints beside
it). One line per snapshot, format ``nb360-attempt/1``: the attempt's number (1, 2, ... within the file), its
status (``running``, ``done``, ``failed``), when it started and when it last wrote, its wall and CPU
seconds (user + system, this process and its reaped children) so far, its device, host, pid, the SLURM job
id and restart count (``SLURM_RESTART_COUNT``, a requeue) if any, and its progress (e.g. ``epoch 3/10``).
A snapshot is written when the attempt starts, at every heartbeat (after each epoch of
:func:`nb360.train.fit`, and every :data:`HEARTBEAT_S` seconds from a background thread) and when it ends:
an attempt killed without warning still counts up to its last heartbeat.

An attempt is timed from the moment its job holds its device (after any wait for a GPU). Which attempts a
finished job cost: those since the previous successful attempt of the same file (:func:`job_attempts`), so
a job rerun on purpose after it succeeded (``--forcerun``) is not charged for the earlier run.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

ATTEMPT_FORMAT = "nb360-attempt/1"
ATTEMPTS_NAME = "attempts.jsonl"
# The outputs whose job owns its folder's plain attempts.jsonl and benchmark.tsv (other jobs writing into the
# same folder, a search's workers and tune stage, prefix theirs with their output's stem).
SHARED_FOLDER_OUTPUTS = ("arch.json", "scores.json")
HEARTBEAT_S = 60.0  # a killed attempt loses at most this much of its wall time (or one epoch, if shorter)

Status = Literal["running", "done", "failed"]


def attempts_path(output: str | os.PathLike) -> Path:
    """The attempts file of the job that writes ``output``: ``attempts.jsonl`` beside a search's
    ``arch.json`` or a run's ``scores.json``; beside another job's file in the same folder, its own
    ``{stem}.attempts.jsonl`` (``worker3.attempts.jsonl``, ``hparams.attempts.jsonl``), as its benchmark."""
    path = Path(output)
    if path.name in SHARED_FOLDER_OUTPUTS:
        return path.with_name(ATTEMPTS_NAME)
    return path.with_name(f"{path.stem}.{ATTEMPTS_NAME}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and of its children that have exited."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def device_kind(device: str, gpu: str | None = None) -> str:
    """``"cpu"`` or ``"cuda"`` for a recorded device: a torch device string, or a device request
    (``"auto"``) that holds a GPU (``gpu``: the id it was given) or not."""
    device = str(device)
    if device.startswith("cuda") or (device == "auto" and gpu is not None):
        return "cuda"
    if device in ("cpu", "auto"):
        return "cpu"
    return device.split(":", 1)[0]  # anything else is left for the cost table to refuse by name


@dataclass
class AttemptRecord:
    """One snapshot of one attempt (one line of the attempts file)."""

    attempt: int
    status: Status
    started_at: str  # ISO-8601 UTC
    last_at: str  # when this snapshot was written: the last heartbeat of a killed attempt
    wall_s: float
    cpu_s: float
    device: str  # the torch device it trains on, once known (a request such as "auto" before)
    gpu: str | None = None
    host: str = ""
    pid: int = 0
    slurm_job_id: str | None = None
    slurm_restart_count: int | None = None
    progress: str | None = None
    error: str | None = None
    job: dict[str, Any] = field(default_factory=dict)  # the rule and wildcards, for people reading the file
    format: str = ATTEMPT_FORMAT

    @property
    def kind(self) -> str:
        return device_kind(self.device, self.gpu)


class Attempt:
    """The running attempt of a job: :meth:`heartbeat` writes a snapshot (thread-safe)."""

    def __init__(self, path: Path, record: AttemptRecord):
        self.path = path
        self.record = record
        self._t0 = time.monotonic()
        self._cpu0 = _cpu_seconds()
        self._lock = threading.Lock()

    def heartbeat(self, progress: str | None = None, device: str | None = None) -> None:
        """A ``running`` snapshot; ``progress`` and ``device`` (the device training runs on) update them."""
        self._write("running", progress=progress, device=device)

    def _write(
        self,
        status: Status,
        *,
        progress: str | None = None,
        device: str | None = None,
        error: str | None = None,
    ) -> None:
        with self._lock:
            r = self.record
            r.status, r.last_at = status, _now()
            r.wall_s = round(time.monotonic() - self._t0, 3)
            r.cpu_s = round(_cpu_seconds() - self._cpu0, 3)
            r.progress = progress if progress is not None else r.progress
            r.device = device if device is not None else r.device
            r.error = error
            _append_line(self.path, json.dumps(asdict(r), sort_keys=True))


def _append_line(path: Path, line: str) -> None:
    # One write of a whole line with O_APPEND: a kill leaves at most a final line without its newline.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


_ACTIVE: Attempt | None = None


def heartbeat(progress: str | None = None, device: str | None = None) -> None:
    """A snapshot of the process's running attempt, if there is one (a no-op otherwise: tests, benchmarks)."""
    attempt = _ACTIVE
    if attempt is None:
        return
    try:
        attempt.heartbeat(progress, device)
    except OSError as e:  # bookkeeping must not end a training run; the next heartbeat tries again
        log.warning("attempt record %s not updated: %s", attempt.path, e)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


@contextmanager
def record_attempt(
    path: str | os.PathLike,
    *,
    device: str,
    gpu: str | None = None,
    job: Mapping[str, Any] | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> Iterator[Attempt]:
    """Record the code in the ``with`` block as one attempt of the job whose attempts file is ``path``:
    ``running`` at once and at every heartbeat, then ``done``, or ``failed`` (with the error) if it raises.
    ``device``/``gpu``: where the job was placed (:class:`nb360.devices.Placement`)."""
    global _ACTIVE
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_attempts(path)
    record = AttemptRecord(
        attempt=1 + max((r.attempt for r in previous), default=0),
        status="running",
        started_at=_now(),
        last_at=_now(),
        wall_s=0.0,
        cpu_s=0.0,
        device=device,
        gpu=gpu,
        host=socket.gethostname(),
        pid=os.getpid(),
        slurm_job_id=os.environ.get("SLURM_JOB_ID") or None,
        slurm_restart_count=_env_int("SLURM_RESTART_COUNT"),
        job=dict(job or {}),
    )
    attempt = Attempt(path, record)
    attempt.heartbeat()
    if previous:
        log.info("attempt %d of this job (attempts file %s)", record.attempt, path)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            heartbeat()

    outer, _ACTIVE = _ACTIVE, attempt
    thread = threading.Thread(target=beat, name="nb360-attempt-heartbeat", daemon=True)
    thread.start()
    try:
        yield attempt
    except BaseException as e:
        stop.set()
        thread.join()
        try:
            attempt._write("failed", error=f"{type(e).__name__}: {e}"[:500])
        except OSError as write_error:  # the job's own error is the one to report
            log.warning("attempt record %s not updated: %s", path, write_error)
        raise
    else:
        stop.set()
        thread.join()
        attempt._write("done")
    finally:
        _ACTIVE = outer


@contextmanager
def job_attempt(job: Any, output: str | os.PathLike, placement: Any) -> Iterator[Attempt]:
    """:func:`record_attempt` for a Snakemake job (``job.rule``, ``job.wildcards``) writing ``output``, placed
    on ``placement`` (:class:`nb360.devices.Placement`)."""
    fields = {"rule": str(job.rule), **{k: str(v) for k, v in job.wildcards.items()}}
    with record_attempt(
        attempts_path(output), device=placement.device, gpu=placement.gpu, job=fields
    ) as attempt:
        yield attempt


def read_attempts(path: str | os.PathLike) -> list[AttemptRecord]:
    """The last snapshot of every attempt in ``path``, in attempt order ([] if there is no file).

    A final line without its newline is a snapshot cut by a kill and is skipped (the attempt's previous
    snapshot stands); any other unreadable line is an error naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # the torn last write of a killed attempt
    latest: dict[int, AttemptRecord] = {}
    for i, line in enumerate(lines, 1):
        try:
            body = json.loads(line)
            if body.get("format") != ATTEMPT_FORMAT:
                raise ValueError(f"format {body.get('format')!r}, not {ATTEMPT_FORMAT!r}")
            record = AttemptRecord(**body)
            if record.status not in ("running", "done", "failed"):
                raise ValueError(f"status {record.status!r}")
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{path}, line {i}: not an attempt record ({e}); the file is written by nb360.attempts "
                "only. Delete it to stop counting this job's earlier attempts"
            ) from None
        latest[record.attempt] = record
    return [latest[k] for k in sorted(latest)]


def job_attempts(records: list[AttemptRecord]) -> tuple[list[AttemptRecord], AttemptRecord | None]:
    """(earlier attempts, the successful attempt) of a job's last successful run: the successful attempt is
    the last ``done`` one, the earlier ones those after the ``done`` attempt before it. Without any
    ``done`` attempt, every attempt is an earlier one (of a run whose success was not recorded)."""
    done = [i for i, r in enumerate(records) if r.status == "done"]
    if not done:
        return list(records), None
    last = done[-1]
    first = done[-2] + 1 if len(done) > 1 else 0
    return records[first:last], records[last]
