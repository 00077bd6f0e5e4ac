"""One GPU per job when Snakemake runs several training jobs side by side on one machine.

Snakemake counts ``resources: gpu=1`` against ``--resources gpu=N`` but never tells a job *which* GPU to use,
so every job would train on device 0. :func:`claim_device` gives each job its own device through one lock
file per GPU (``<slots_dir>/gpu-<id>.lock``) held with ``flock``: the kernel drops the lock when the holder
exits, however it exits (SIGKILL, out of memory), so a killed job frees its GPU at once and there are no
stale pid files to clean up. The claimed id goes into ``CUDA_VISIBLE_DEVICES``, so the job and its children
see only that device::

    with claim_device(params.device) as placement:
        ctx = RunContext.for_job(job, workdir, device=placement.device)
        ...
        meta["placement"] = placement.record()

Inside a SLURM job the scheduler has already allotted the GPUs and nothing is locked.

``NB360_FAKE_GPUS=N`` simulates N GPUs (ids "0".."N-1") on a machine without any: the slots are claimed as
for real GPUs, but the job trains on the CPU. ``NB360_GPU_SLOTS_DIR`` moves the lock files.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

FAKE_GPUS_ENV = "NB360_FAKE_GPUS"
SLOTS_DIR_ENV = "NB360_GPU_SLOTS_DIR"
WAIT_LOG_EVERY_S = 60.0  # a job waiting for a GPU says so once, then at most once a minute

Source = Literal["slot", "slurm", "none"]
_REQUEST = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Placement:
    """Where a job runs: ``device`` is the torch device string it must use; ``gpu`` the id it was given, as
    named in ``CUDA_VISIBLE_DEVICES`` (``None`` on the CPU); ``source`` who chose it ("slot": our lock slots,
    "slurm": the scheduler, "none": no GPU)."""

    device: str
    gpu: str | None
    source: Source
    slurm_job_id: str | None
    host: str
    claimed_at: str  # ISO-8601 UTC

    def record(self) -> dict[str, Any]:
        """The fields plus ``released_at`` (now): [claimed_at, released_at] is when the job held it."""
        return {**asdict(self), "released_at": _now()}


def default_slots_dir() -> Path:
    """``$NB360_GPU_SLOTS_DIR``, else ``<tmp>/nb360-gpu-slots``: machine-local on purpose, since GPUs
    belong to a machine, and shared by every workflow (and user) on it."""
    env = os.environ.get(SLOTS_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "nb360-gpu-slots"


def visible_gpus() -> tuple[list[str], bool]:
    """(GPU ids this process may use, simulated?), found without initialising CUDA: the job's
    ``CUDA_VISIBLE_DEVICES`` only takes effect if it is set before CUDA starts."""
    fake = os.environ.get(FAKE_GPUS_ENV)
    if fake is not None:
        try:
            n = int(fake)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(f"{FAKE_GPUS_ENV}={fake!r}: expected a number of simulated GPUs (0, 1, 2, ...)")
        return [str(i) for i in range(n)], True
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        if visible.strip() in ("", "-1"):
            return [], False
        # Entries may be indices or GPU UUIDs; either names the device for CUDA_VISIBLE_DEVICES.
        return [e.strip() for e in visible.split(",") if e.strip()], False
    return _nvidia_smi_gpus(), False


def _nvidia_smi_gpus() -> list[str]:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return []  # no driver, no nvidia-smi: no GPUs
    if proc.returncode != 0:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def job_device(device: str, resources: Mapping[str, Any]) -> str:
    """The device a Snakemake job may claim: config ``train.device``, or "cpu" when the job's rule asked for
    no GPU (``gpu=0``: ``train.device: cpu``, or a CPU-only stage of its method), so that a job the scheduler
    did not count as a GPU job never holds a GPU. A ``gres`` request for GPUs (SLURM ``cons_res``) counts."""
    asked = int(resources.get("gpu", 0) or 0) > 0 or "gpu" in str(resources.get("gres", ""))
    return device if asked else "cpu"


@contextmanager
def claim_device(
    requested: str, *, slots_dir: str | os.PathLike | None = None, poll_s: float = 1.0
) -> Iterator[Placement]:
    """Hold one device for the duration of the ``with`` block (see the module docstring).

    ``requested`` is config ``train.device``: "cpu" (nothing claimed), "auto" (a free GPU, else the CPU),
    "cuda" (a free GPU; an error if there is none) or "cuda:N" (the N-th visible GPU, waiting for it).
    Waits (polling every ``poll_s`` seconds) while every GPU of the pool is held by another job.
    """
    if not _REQUEST.match(requested):
        raise ValueError(f"device {requested!r}: use auto, cpu, cuda or cuda:N (config train.device)")
    host = socket.gethostname()
    slurm_job = os.environ.get("SLURM_JOB_ID") or None
    if requested == "cpu":
        yield Placement("cpu", None, "none", slurm_job, host, _now())
        return
    if slurm_job is not None:
        # SLURM allotted the devices; with cgroups two jobs on one node may both see device "0", so
        # node-local locks would wrongly serialise them.
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or None
        yield Placement(requested, gpu, "slurm" if gpu else "none", slurm_job, host, _now())
        return

    pool, simulated = visible_gpus()
    if not pool:
        if requested == "auto":
            yield Placement("cpu", None, "none", None, host, _now())
            return
        raise RuntimeError(
            f"train.device is {requested!r} but no GPU is visible (nvidia-smi lists none, or "
            "CUDA_VISIBLE_DEVICES hides them); set train.device: cpu or auto in config.yaml"
        )
    if requested.startswith("cuda:"):
        index = int(requested.split(":", 1)[1])
        if index >= len(pool):
            raise RuntimeError(
                f"train.device is {requested!r} but only {len(pool)} GPU(s) are visible: {', '.join(pool)}; "
                f"use cuda:0 to cuda:{len(pool) - 1}, or cuda/auto for any free one"
            )
        pool = [pool[index]]
    _warn_if_cuda_started()

    slots = Path(slots_dir) if slots_dir is not None else default_slots_dir()
    _make_slots_dir(slots)
    gpu, fd, path = _claim(pool, slots, poll_s)
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        _write_owner_note(fd, host)
        # The job and every process it starts see only the claimed device (as CUDA device 0).
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        logger.info("GPU %s claimed (slot lock %s)", gpu, path)
        device = "cpu" if simulated else ("cuda" if requested.startswith("cuda") else "auto")
        yield Placement(device, gpu, "slot", None, host, _now())
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        _clear_owner_note(fd)  # while still locked, so the next holder's note is never cut
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _claim(pool: list[str], slots: Path, poll_s: float) -> tuple[str, int, Path]:
    """The first free slot of ``pool`` as (id, locked fd, lock path); waits while all are held."""
    waiting_since: float | None = None
    last_log = 0.0
    while True:
        for gpu in pool:
            path = slots / f"gpu-{_safe_name(gpu)}.lock"
            fd = _open_slot(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            if waiting_since is not None:
                logger.info("GPU %s free after %.0f s of waiting", gpu, time.monotonic() - waiting_since)
            return gpu, fd, path
        now = time.monotonic()
        if waiting_since is None or now - last_log >= WAIT_LOG_EVERY_S:
            waiting_since = waiting_since if waiting_since is not None else now
            last_log = now
            n = len(pool)
            logger.info(
                "waiting for a free GPU: all %d busy; run with --resources gpu=%d to match the GPUs "
                "(slot locks in %s)",
                n,
                n,
                slots,
            )
        time.sleep(poll_s)


def _safe_name(gpu: str) -> str:
    # GPU UUIDs are file-name safe, but old MIG names contain "/".
    return re.sub(r"[^A-Za-z0-9._-]", "_", gpu)


def _make_slots_dir(slots: Path) -> None:
    slots.parent.mkdir(parents=True, exist_ok=True)
    try:
        slots.mkdir()
    except FileExistsError:
        return
    # Sticky and world-writable like /tmp (mkdir's mode is cut by the umask): other users' jobs share it.
    os.chmod(slots, 0o1777)


def _open_slot(path: Path) -> int:
    """A file descriptor of the lock file, created world-writable if missing; read-only if that is all we
    may do (flock works on read-only descriptors too)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        try:
            return os.open(path, os.O_RDWR)
        except PermissionError:
            return os.open(path, os.O_RDONLY)
    with suppress(OSError):
        os.fchmod(fd, 0o666)  # past the umask, so the next user's job can open it read-write
    return fd


def _write_owner_note(fd: int, host: str) -> None:
    """One line for humans who look at the lock file (a killed holder leaves its note behind: the lock is
    what counts, e.g. ``flock -n gpu-0.lock true`` succeeds on a free slot)."""
    note = f"pid {os.getpid()} on {host} since {_now()}: {sys.argv[0] if sys.argv else '?'}\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
    except OSError:
        pass  # read-only descriptor (another user's file)


def _clear_owner_note(fd: int) -> None:
    with suppress(OSError):
        os.ftruncate(fd, 0)


def _warn_if_cuda_started() -> None:
    # Checking torch only if it is already imported: importing it here would not start CUDA, but is slow.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        logger.warning(
            "CUDA was initialised before the GPU was claimed; CUDA_VISIBLE_DEVICES cannot take effect in "
            "this process any more (claim the device before any torch.cuda call)"
        )
