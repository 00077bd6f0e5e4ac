"""GPU slots (nb360.devices): each concurrent job gets its own device, and a killed job frees its own."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from nb360 import devices
from nb360.devices import claim_device, job_device
from tests.conftest import REPO
from tests.test_workflow import _config, _snakemake, _workdir

# A claimer process: prints "<gpu> <CUDA_VISIBLE_DEVICES>" once it holds a slot, then holds it until its
# stdin closes (or it is killed). Its log records go to stderr.
HOLDER = """
import logging, os, sys
from nb360.devices import claim_device
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
with claim_device(sys.argv[1], slots_dir=sys.argv[2], poll_s=0.05) as p:
    print(p.gpu, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    sys.stdin.read()
"""
GUARD_S = 60  # a guard against hanging, not a timing assertion


class Holder:
    def __init__(self, requested: str, slots: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, requested, str(slots)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        self.stderr = b""

    def _line(self, stream, want: bytes = b"") -> str:
        """The next line of ``stream`` (containing ``want``), read without Python's buffering so that
        select() tells the truth."""
        fd = stream.fileno()
        buf = b""
        deadline = time.monotonic() + GUARD_S
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 1) if ready else b""
            if not chunk:
                raise AssertionError(
                    f"no line with {want!r}; exit {self.proc.poll()}, stderr {self.stderr!r}"
                )
            buf += chunk
            if stream is self.proc.stderr:
                self.stderr += chunk
            if chunk == b"\n":
                if want in buf:
                    return buf.decode().strip()
                buf = b""

    def claimed(self) -> tuple[str, str]:
        gpu, visible = self._line(self.proc.stdout).split()
        return gpu, visible

    def wait_for_log(self, text: str) -> str:
        return self._line(self.proc.stderr, text.encode())

    def has_claimed(self) -> bool:
        return bool(select.select([self.proc.stdout.fileno()], [], [], 0)[0])

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(GUARD_S) == 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(GUARD_S)


@pytest.fixture
def env(monkeypatch):
    """No SLURM, no simulated or masked GPUs, and no nvidia-smi unless a test sets them."""
    for name in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", devices.FAKE_GPUS_ENV, devices.SLOTS_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(devices, "_nvidia_smi_gpus", lambda: [])
    return monkeypatch


@pytest.fixture
def holders():
    started: list[Holder] = []
    yield started
    for h in started:
        if h.proc.poll() is None:
            h.kill()


def _holder_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_cpu_request_claims_nothing(env, tmp_path):
    env.setenv(devices.FAKE_GPUS_ENV, "2")
    with claim_device("cpu", slots_dir=tmp_path / "slots") as p:
        assert (p.device, p.gpu, p.source) == ("cpu", None, "none")
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not (tmp_path / "slots").exists()


def test_concurrent_claimers_get_different_gpus_and_a_third_waits_for_a_free_one(tmp_path, holders):
    slots = tmp_path / "slots"
    env = _holder_env(NB360_FAKE_GPUS="2")
    a, b = Holder("auto", slots, env), Holder("auto", slots, env)
    holders += [a, b]
    (gpu_a, visible_a), (gpu_b, visible_b) = a.claimed(), b.claimed()
    assert {gpu_a, gpu_b} == {"0", "1"}
    assert (visible_a, visible_b) == (gpu_a, gpu_b)  # each process sees only its own device
    assert f"pid {a.proc.pid} " in (slots / f"gpu-{gpu_a}.lock").read_text()

    c = Holder("auto", slots, env)
    holders.append(c)
    line = c.wait_for_log("waiting for a free GPU")
    assert line.startswith("waiting for a free GPU: all 2 busy; run with --resources gpu=2"), line
    assert not c.has_claimed() and c.proc.poll() is None
    a.release()
    assert c.claimed() == (gpu_a, gpu_a)
    assert (slots / f"gpu-{gpu_a}.lock").stat().st_mode & 0o777 == 0o666
    b.release()
    assert (slots / f"gpu-{gpu_b}.lock").read_text() == ""  # a clean release leaves no owner note
    c.release()


def test_a_killed_holder_frees_its_gpu_at_once(tmp_path, holders):
    slots = tmp_path / "slots"
    env = _holder_env(NB360_FAKE_GPUS="2")
    a = Holder("auto", slots, env)
    holders.append(a)
    assert a.claimed()[0] == "0"
    b = Holder("auto", slots, env)
    holders.append(b)
    assert b.claimed()[0] == "1"
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(GUARD_S)
    assert "pid" in (slots / "gpu-1.lock").read_text()  # the killed job's note is left behind...
    c = Holder("auto", slots, env)
    holders.append(c)
    assert c.claimed()[0] == "1"  # ...but not its lock: the kernel released it with the process


def test_cuda_visible_devices_is_the_pool_and_is_set_to_the_claimed_gpu(env, tmp_path):
    env.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    env.setattr(devices, "_nvidia_smi_gpus", lambda: pytest.fail("nvidia-smi asked despite the mask"))
    slots = tmp_path / "slots"
    with claim_device("cuda", slots_dir=slots) as p:
        assert (p.device, p.gpu, p.source) == ("cuda", "3", "slot")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"

    # With GPU 3 held elsewhere, the claim takes 5; "auto" stays "auto" for torch to resolve.
    with open(slots / "gpu-3.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with claim_device("auto", slots_dir=slots) as p:
            assert (p.device, p.gpu) == ("auto", "5")
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert sorted(f.name for f in slots.iterdir()) == ["gpu-3.lock", "gpu-5.lock"]


def test_placement_record_spans_the_claim(env, tmp_path):
    env.setenv(devices.FAKE_GPUS_ENV, "1")
    with claim_device("auto", slots_dir=tmp_path) as p:
        pass
    rec = p.record()
    assert set(rec) == {"device", "gpu", "source", "slurm_job_id", "host", "claimed_at", "released_at"}
    assert (rec["device"], rec["gpu"], rec["source"]) == ("cpu", "0", "slot")  # simulated: trains on CPU
    claimed, released = (datetime.fromisoformat(rec[k]) for k in ("claimed_at", "released_at"))
    assert claimed.utcoffset().total_seconds() == 0 and claimed <= released
    json.dumps(rec)


def test_cuda_n_takes_the_nth_gpu_of_the_pool(env, tmp_path):
    env.setenv(devices.FAKE_GPUS_ENV, "2")
    with claim_device("cuda:1", slots_dir=tmp_path) as p:
        assert (p.gpu, p.device) == ("1", "cpu")
    env.delenv(devices.FAKE_GPUS_ENV)
    env.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with claim_device("cuda:1", slots_dir=tmp_path) as p:
        # Only GPU 5 is visible inside the job, as CUDA device 0: "cuda", not "cuda:1".
        assert (p.gpu, p.device) == ("5", "cuda")
    with (
        pytest.raises(RuntimeError, match=r"'cuda:5'.* 2 GPU\(s\) are visible: 3, 5"),
        claim_device("cuda:5", slots_dir=tmp_path),
    ):
        pass


def test_inside_slurm_nothing_is_locked(env, tmp_path):
    env.setenv("SLURM_JOB_ID", "4242")
    env.setenv("CUDA_VISIBLE_DEVICES", "0")
    env.setenv(devices.FAKE_GPUS_ENV, "2")
    with claim_device("cuda:1", slots_dir=tmp_path / "slots") as p:
        assert (p.device, p.gpu, p.source, p.slurm_job_id) == ("cuda:1", "0", "slurm", "4242")
    env.delenv("CUDA_VISIBLE_DEVICES")
    with claim_device("auto", slots_dir=tmp_path / "slots") as p:
        assert (p.device, p.gpu, p.source) == ("auto", None, "none")
    assert not (tmp_path / "slots").exists()


@pytest.mark.parametrize("mask", ["", "-1", None], ids=["empty-mask", "minus-one", "nvidia-smi-lists-none"])
def test_no_visible_gpu(env, tmp_path, mask):
    if mask is not None:
        env.setenv("CUDA_VISIBLE_DEVICES", mask)
    with (
        pytest.raises(RuntimeError, match=r"no GPU is visible.*set train\.device: cpu or auto"),
        claim_device("cuda", slots_dir=tmp_path),
    ):
        pass
    with claim_device("auto", slots_dir=tmp_path) as p:
        assert (p.device, p.gpu, p.source) == ("cpu", None, "none")
    assert list(tmp_path.iterdir()) == []


def test_pool_from_nvidia_smi_and_none_without_it(monkeypatch, tmp_path):
    """The real lookup, with a stand-in nvidia-smi alone on PATH, then with none."""
    for name in ("CUDA_VISIBLE_DEVICES", devices.FAKE_GPUS_ENV):
        monkeypatch.delenv(name, raising=False)
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert devices.visible_gpus() == (["0", "1"], False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert devices.visible_gpus() == ([], False)


def test_a_job_that_asked_for_no_gpu_claims_the_cpu():
    """The scripts claim what the rule asked the scheduler for: a job not counted as a GPU job holds none."""
    assert job_device("auto", {"gpu": 1, "mem_mb": 4000}) == "auto"
    assert job_device("cuda:1", {"gpu": 1}) == "cuda:1"
    assert job_device("auto", {"gpu": 0}) == "cpu"
    assert job_device("cuda", {"mem_mb": 4000}) == "cpu"
    assert job_device("auto", {"gpu": 0, "gres": "gpu:a100:1"}) == "auto"  # SLURM cons_res clusters


def test_bad_requests_are_refused(env, tmp_path):
    with (
        pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"),
        claim_device("gpu", slots_dir=tmp_path),
    ):
        pass
    env.setenv(devices.FAKE_GPUS_ENV, "two")
    with pytest.raises(ValueError, match="NB360_FAKE_GPUS='two'"), claim_device("auto", slots_dir=tmp_path):
        pass


@pytest.mark.integration
def test_two_concurrent_gpu_jobs_get_different_device_ids(tmp_path, monkeypatch):
    """Two concurrent GPU jobs get different device ids under --resources gpu=2.

    Two retrain jobs of equal length (WRN, seeds 0 and 1, satellite: ~15 s each) run side by side with
    two simulated GPUs; each must have held its own GPU while the other held the other one.
    """
    wd = _workdir(tmp_path / "wd")
    _config(wd, tasks=["satellite"], methods=["wrn"], seeds=[0, 1])
    slots = tmp_path / "slots"
    targets = [f"results/runs/satellite/wrn/seed{s}/scores.json" for s in (0, 1)]
    monkeypatch.setenv(devices.FAKE_GPUS_ENV, "2")  # inherited by Snakemake and its jobs
    monkeypatch.setenv(devices.SLOTS_DIR_ENV, str(slots))
    proc = _snakemake(wd, "--cores", "2", *targets, "--resources", "gpu=2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]

    placements = [json.loads((wd / t).read_text())["placement"] for t in targets]
    assert [p["source"] for p in placements] == ["slot", "slot"]
    assert {p["gpu"] for p in placements} == {"0", "1"}
    (a0, a1), (b0, b1) = (
        [datetime.fromisoformat(p[k]) for k in ("claimed_at", "released_at")] for p in placements
    )
    assert a0 < b1 and b0 < a1, f"the jobs did not run at the same time: {placements}"
    for seed, p in enumerate(placements):
        log = (wd / f"logs/retrain/satellite/wrn/seed{seed}.log").read_text()
        assert f"GPU {p['gpu']} claimed (slot lock {slots}/gpu-{p['gpu']}.lock)" in log
