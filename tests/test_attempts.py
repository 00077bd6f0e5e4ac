"""Attempt records (nb360.attempts): every attempt of a job, killed and failed ones included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from nb360 import attempts
from nb360.attempts import (
    AttemptRecord,
    attempts_path,
    device_kind,
    heartbeat,
    job_attempt,
    job_attempts,
    read_attempts,
    record_attempt,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_attempts_path_beside_the_output():
    assert attempts_path("r/runs/ecg/wrn/seed0/scores.json") == Path("r/runs/ecg/wrn/seed0/attempts.jsonl")
    assert attempts_path("s/seed0/arch.json") == Path("s/seed0/attempts.jsonl")
    assert attempts_path("s/seed0/worker3.json") == Path("s/seed0/worker3.attempts.jsonl")
    assert attempts_path("s/seed0/hparams.json") == Path("s/seed0/hparams.attempts.jsonl")


def test_done_failed_and_numbered_attempts(tmp_path):
    path = tmp_path / "attempts.jsonl"
    heartbeat("outside any attempt")  # a no-op: nothing to record
    with pytest.raises(MemoryError), record_attempt(path, device="auto", gpu="1", job={"rule": "retrain"}):
        heartbeat("epoch 1/3", device="cuda")
        raise MemoryError("out of memory")
    with record_attempt(path, device="cpu") as attempt:
        assert attempt.record.attempt == 2
        heartbeat("epoch 3/3")
    first, second = read_attempts(path)
    assert (first.attempt, first.status, first.progress, first.device, first.kind) == (
        1, "failed", "epoch 1/3", "cuda", "cuda",
    )  # fmt: skip
    assert first.error == "MemoryError: out of memory" and first.job == {"rule": "retrain"}
    assert (second.attempt, second.status, second.progress, second.kind) == (2, "done", "epoch 3/3", "cpu")
    assert second.wall_s >= 0 and second.cpu_s >= 0
    # one line per snapshot: start, heartbeat, end of each attempt
    assert len(path.read_text().splitlines()) == 6
    assert attempts._ACTIVE is None
    heartbeat("after the attempt")
    assert len(path.read_text().splitlines()) == 6


def test_background_heartbeat_updates_a_long_epoch(tmp_path):
    path = tmp_path / "attempts.jsonl"
    with record_attempt(path, device="cpu", heartbeat_s=0.01):
        deadline = time.monotonic() + 60
        while len(path.read_text().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(path.read_text().splitlines()) >= 3  # start + at least two heartbeats of the thread
    assert read_attempts(path)[0].status == "done"


KILLED = """
import os, signal, sys
from nb360.attempts import heartbeat, record_attempt
with record_attempt(sys.argv[1], device="cpu", heartbeat_s=3600):
    heartbeat("epoch 1/5")
    heartbeat("epoch 2/5")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_sigkilled_attempt_counts_up_to_its_last_heartbeat(tmp_path):
    path = tmp_path / "attempts.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path)], cwd=REPO, env=ENV)
    assert proc.returncode == -signal.SIGKILL
    (killed,) = read_attempts(path)
    assert (killed.status, killed.progress, killed.error) == ("running", "epoch 2/5", None)
    with record_attempt(path, device="cpu"):
        pass
    earlier, done = job_attempts(read_attempts(path))
    assert [a.attempt for a in earlier] == [1] and done is not None and done.attempt == 2


def test_torn_last_line_is_skipped_and_other_garbage_is_an_error(tmp_path):
    path = tmp_path / "attempts.jsonl"
    with record_attempt(path, device="cpu"):
        heartbeat("epoch 1/2")
    whole = path.read_text()
    path.write_text(whole + '{"attempt": 2, "status": "runn')  # a kill during the write
    assert [(a.attempt, a.status) for a in read_attempts(path)] == [(1, "done")]
    with record_attempt(path, device="cpu") as attempt:  # the torn line is not mistaken for attempt 2
        assert attempt.record.attempt == 2
    path.write_text(whole + "not json\n")
    with pytest.raises(ValueError, match=r"attempts\.jsonl, line 4: not an attempt record") as e:
        read_attempts(path)
    assert str(path) in str(e.value)
    body = json.loads(whole.splitlines()[0]) | {"status": "paused"}
    path.write_text(json.dumps(body) + "\n")
    with pytest.raises(ValueError, match="status 'paused'"):
        read_attempts(path)
    assert read_attempts(tmp_path / "none.jsonl") == []


def _records(*statuses: str) -> list[AttemptRecord]:
    return [AttemptRecord(i, status, "t0", "t1", 1.0, 1.0, "cpu") for i, status in enumerate(statuses, 1)]


def test_job_attempts_of_the_last_successful_run():
    # killed, done; then a --forcerun after that success: failed, killed, done
    earlier, done = job_attempts(_records("running", "done", "failed", "running", "done"))
    assert [(a.attempt, a.status) for a in earlier] == [(3, "failed"), (4, "running")]
    assert done is not None and done.attempt == 5
    earlier, done = job_attempts(_records("failed", "running", "done"))
    assert [a.attempt for a in earlier] == [1, 2] and done.attempt == 3
    earlier, done = job_attempts(_records("done", "running"))  # a later attempt is not of this run
    assert earlier == [] and done.attempt == 1
    assert job_attempts(_records("running")) == (_records("running"), None)
    assert job_attempts([]) == ([], None)


def test_job_attempt_of_a_snakemake_job(tmp_path):
    job = SimpleNamespace(
        rule="search_worker", wildcards={"task": "ecg", "method": "wrn_asha", "worker": "1"}
    )
    placement = SimpleNamespace(device="auto", gpu="0")
    out = tmp_path / "seed0" / "worker1.json"
    with job_attempt(job, out, placement):
        pass
    (record,) = read_attempts(tmp_path / "seed0" / "worker1.attempts.jsonl")
    assert record.job == {"rule": "search_worker", "task": "ecg", "method": "wrn_asha", "worker": "1"}
    assert (record.device, record.gpu, record.kind) == ("auto", "0", "cuda")


def test_device_kind():
    placed = [("cuda:1", None), ("auto", "0"), ("auto", None), ("cpu", "0")]
    assert [device_kind(d, g) for d, g in placed] == ["cuda", "cuda", "cpu", "cpu"]
    assert device_kind("mps") == "mps"  # for the cost table to refuse by name
