"""A slice of the workflow on a real SLURM cluster (tests/slurm_cluster.py) through workflow/profiles/slurm.

Needs root (it starts daemons) and the packages; with NB360_REQUIRE_SLURM=1 (CI, `.ci/run`) it installs
slurm-wlm, munge, slurmdbd and MariaDB with apt-get where they are missing, and fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime
from itertools import combinations
from pathlib import Path

import pandas as pd
import pytest

from nb360.attempts import attempts_path, read_attempts
from nb360.report.cost import job_costs
from nb360.resources import job_resources
from tests.conftest import REPO, lock_pins
from tests.slurm_cluster import LocalSlurm, missing_binaries, unavailable_reason
from tests.test_workflow import _config, _snakemake_cmd, _workdir

pytestmark = [pytest.mark.slurm, pytest.mark.integration]

# The executor plugin stays out of the project's venv: installed, every Snakemake start asks
# `scontrol show config` (10 s timeout) wherever a SLURM client exists. Versions: requirements.lock.
PLUGINS = ("snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep", "throttler")
TASK = "satellite"
# Three training jobs that ask for a GPU (random_search's search, then wrn's and random_search's retraining;
# the first two run side by side on the cluster's two GPUs) and one that asks for none (trivial's retrain).
METHODS = ["trivial", "wrn", "random_search"]
TARGETS = [f"results/runs/{TASK}/{m}/seed0/scores.json" for m in METHODS] + ["results/tables/scores.csv"]
# The job the test preempts once it has written this checkpoint.
PREEMPT_CHECKPOINT = f"results/runs/{TASK}/wrn/seed0/checkpoint.pt"
EXPECTED_JOBS = {"embedded_raw": 1, "shards": 1, "search": 1, "retrain": len(METHODS), "scores": 1}
# Rule -> (nb360.resources stage, the output that records the job's placement)
STAGES = {
    "embedded_raw": ("data", None),
    "shards": ("data", None),
    "search": ("search", "results/search/{task}/{method}/seed0/arch.json"),
    "retrain": ("retrain", "results/runs/{task}/{method}/seed0/scores.json"),
    "scores": ("report", None),
}
SLURM_LOG = re.compile(r"/slurm_logs/rule_(?P<rule>[^/\s]+)/(?:(?P<wildcards>[^/\s]+)/)?")
SUBMITTED = re.compile(r"submitted with SLURM jobid (?P<id>\d+) \(log: (?P<log>\S+)\)")


def _require_cluster() -> None:
    """Skips unless a cluster can be started. Packages are installed only where asked for (CI), never as a
    side effect of a developer's `make test`."""
    required = os.environ.get("NB360_REQUIRE_SLURM") == "1"
    reason = unavailable_reason()
    if reason is None and missing_binaries() and not required:
        reason = "slurm-wlm, munge and MariaDB are missing (NB360_REQUIRE_SLURM=1 installs them with apt-get)"
    if reason is None:
        return
    if required:
        pytest.fail(f"NB360_REQUIRE_SLURM=1 but no SLURM cluster can be started here: {reason}")
    pytest.skip(f"no local SLURM cluster: {reason} (NB360_REQUIRE_SLURM=1 turns this skip into a failure)")


def _plugin_pins() -> dict[str, str]:
    lock = lock_pins()
    missing = [name for name in PLUGINS if name not in lock]
    assert not missing, f"requirements.lock lacks pins of {', '.join(missing)} (run `make setup-slurm lock`)"
    return {name: lock[name] for name in PLUGINS}


def _install_plugins(target: Path) -> Path:
    """The SLURM executor plugins in a folder of their own, for PYTHONPATH; checks Snakemake finds them."""
    specs = [f"{name}=={version}" for name, version in _plugin_pins().items()]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
    proc = subprocess.run(
        [*cmd, "--target", str(target), *specs], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"pip install {' '.join(specs)} failed:\n{proc.stdout}{proc.stderr}"
    check = (
        "from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry as R; "
        "print(sorted(R().plugins))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    found = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120
    )
    assert {"'slurm'", "'slurm-jobstep'"} <= set(re.findall(r"'[\w-]+'", found.stdout)), found
    return target


def _slice(path: Path) -> Path:
    wd = _workdir(path)
    _config(wd, tasks=[TASK], methods=METHODS, seeds=[0])
    return wd


def _slurm_logs(wd: Path) -> str:
    """Tails of the SLURM job logs, for failure messages."""
    tails = [
        f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        for log in sorted((wd / ".snakemake" / "slurm_logs").rglob("*.log"))
    ]
    return "\n".join(tails) or "(no SLURM job logs)"


def _parse_submissions(out: str) -> dict[str, tuple[str, str, str]]:
    """{SLURM job id: (rule, wildcards, sbatch command line)} from Snakemake's --verbose output: each
    "sbatch call" names its log as <rule>/<wildcards>/%j.log, and the submission line that log's path."""
    calls = [line.split("sbatch call: ", 1)[1] for line in out.splitlines() if "sbatch call: sbatch " in line]
    jobs = {}
    for m in SUBMITTED.finditer(out):
        where = SLURM_LOG.search(m["log"])
        assert where, m.group(0)
        pattern = m["log"].rsplit("/", 1)[0] + "/%j.log"
        call = [c for c in calls if f"--output {pattern} " in c]
        assert len(call) == 1, (m.group(0), calls)
        jobs[m["id"]] = (where["rule"], where["wildcards"] or "", call[0])
    assert len(jobs) == len(calls), (jobs, calls)
    return jobs


def _method(wildcards: str) -> str | None:
    """The method of a job from its log folder, "{task}_{method}_{seed}"; None for jobs without one."""
    m = re.fullmatch(rf"{TASK}_(?P<method>\w+)_\d+", wildcards)
    return m["method"] if m else None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _preempt_once(cluster: LocalSlurm, run: subprocess.Popen, output: Path, checkpoint: Path) -> str:
    """Preempts WRN's retraining as a scheduler would, once it has written its first checkpoint: requeues it
    (the profile submits with --requeue), lets it start again at once (SLURM would hold it for two
    minutes) and returns its job id."""
    log_folder = f"/rule_retrain/{TASK}_wrn_0/"
    while run.poll() is None:
        job = [m["id"] for m in SUBMITTED.finditer(output.read_text()) if log_folder in m["log"]]
        if job and checkpoint.exists():
            break
        time.sleep(0.2)
    else:
        raise AssertionError(
            f"Snakemake ended before WRN's retraining wrote a checkpoint:\n{output.read_text()}"
        )
    cluster.run("scontrol", "requeue", job[0])
    deadline = time.monotonic() + 60
    while cluster.run("squeue", "-h", "-j", job[0], "-o", "%T").strip() != "PENDING":
        assert time.monotonic() < deadline, "the requeued job did not go back to PENDING"
        time.sleep(0.2)
    cluster.run("scontrol", "update", f"jobid={job[0]}", "StartTime=now")
    return job[0]


def test_slice_runs_through_sbatch_on_allotted_gpus_with_the_local_results(tmp_path, capsys):
    """Data, one search and three retrainings, then the score table, submitted with sbatch through the SLURM
    profile: every job asks for the GPUs its rule declares, every GPU job trains on the GPU that SLURM
    allotted it, a preempted job resumes from its checkpoint, and the scores equal those of a local run."""
    _require_cluster()
    t: dict[str, float] = {}
    t0 = time.monotonic()
    plugins = _install_plugins(tmp_path / "plugins")
    t["plugins"] = time.monotonic() - t0

    local = _slice(tmp_path / "local")
    t0 = time.monotonic()
    proc = subprocess.run(
        _snakemake_cmd(local, "--cores", "2", *TARGETS), capture_output=True, text=True, timeout=1800
    )
    t["local_run"] = time.monotonic() - t0
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]

    remote = _slice(tmp_path / "slurm-run")
    messages: list[str] = []
    cluster = LocalSlurm(tmp_path / "slurm", log=messages.append)
    with cluster:
        started = list(cluster.daemons)
        env = cluster.env()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugins), env.get("PYTHONPATH")) if p)
        cmd = _snakemake_cmd(
            remote,
            "--workflow-profile",
            str(REPO / "workflow" / "profiles" / "slurm"),
            # Test-only: fewer concurrent jobs, frequent status checks (each job takes seconds), the job
            # logs kept, no account (the plugin would guess one and warn), --verbose for the sbatch lines.
            "--jobs",
            "4",
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--slurm-keep-successful-logs",
            "--slurm-no-account",
            "--verbose",
            *TARGETS,
        )
        t0 = time.monotonic()
        output = tmp_path / "snakemake-slurm.out"
        with output.open("w") as sink:
            run = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
            try:
                preempted = _preempt_once(cluster, run, output, remote / PREEMPT_CHECKPOINT)
                run.wait(timeout=1200)
            except subprocess.TimeoutExpired as e:
                run.kill()
                raise AssertionError(
                    f"snakemake --executor slurm ran past 1200 s\n{_slurm_logs(remote)}"
                ) from e
        t["slurm_run"] = time.monotonic() - t0
        out = output.read_text()
        assert run.returncode == 0, f"{out[-6000:]}\n{_slurm_logs(remote)}"
        requeues = cluster.run("sacct", "-D", "-X", "-n", "-P", "-j", preempted, "-o", "JobID,State")
        jobs = _parse_submissions(out)
        ids = sorted(jobs, key=int)
        accounting = cluster.run(
            "sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,State,Start,End,AllocTRES"
        )
        allotted = {jid: cluster.allotted_gpus(jid) for jid in ids}
    t.update(cluster.timings)  # install (apt-get), bring_up, teardown

    with capsys.disabled():
        print("\n" + "\n".join(f"[test_slurm] {m}" for m in messages))
        print(f"[test_slurm] {len(jobs)} jobs submitted with sbatch (--wrap cut, workdir as WD):")
        for jid in ids:
            rule, wildcards, call = jobs[jid]
            call = call.split(" --wrap=", 1)[0].replace(str(remote), "WD")
            print(f"  SLURM job {jid} ({rule} {wildcards}, GPUs {','.join(allotted[jid]) or '-'}): {call}")
        print(
            f"[test_slurm] preempted (scontrol requeue) and resumed: SLURM job {preempted}: "
            + requeues.replace("\n", " ")
        )
        print("[test_slurm] seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))

    # (1) Every job of the slice went through sbatch, once, asking for the GPUs its rule declares (a CPU-only
    # method stage, like trivial's retraining, for none); nothing ran on the submitting machine.
    assert "localrule " not in out
    rules = [rule for rule, _, _ in jobs.values()]
    assert {r: rules.count(r) for r in set(rules)} == EXPECTED_JOBS, jobs
    wants_gpu = {
        jid: job_resources(STAGES[rule][0], "smoke", "auto", 1, _method(wildcards)).gpu == 1
        for jid, (rule, wildcards, _) in jobs.items()
    }
    assert sum(wants_gpu.values()) == 3, wants_gpu
    for jid, (_, _, call) in jobs.items():
        assert ("--gpus=1" in call.split()) == wants_gpu[jid], call

    # (2) SLURM accounting: all completed; GPU jobs were allotted one GPU, the others none.
    rows = {line.split("|")[0]: line.split("|") for line in accounting.splitlines() if line.strip()}
    assert sorted(rows, key=int) == ids, accounting
    for jid, (_, state, _start, _end, tres) in rows.items():
        assert state == "COMPLETED", (jid, jobs[jid][:2], state)
        assert ("gres/gpu=1" in tres.split(",")) == wants_gpu[jid], (jid, jobs[jid][:2], tres)
        assert len(allotted[jid]) == wants_gpu[jid], (jid, allotted[jid])

    # (3) Each training job recorded the GPU SLURM gave it (none for a CPU job); GPU jobs that ran side by
    # side had different GPUs.
    gpu_of = {}
    for jid, (rule, wildcards, _) in jobs.items():
        output = STAGES[rule][1]
        if output is None:
            continue
        body = json.loads((remote / output.format(task=TASK, method=_method(wildcards))).read_text())
        placement = body["placement"]
        assert {"gpu", "source", "slurm_job_id", "host", "claimed_at", "released_at"} <= set(placement)
        assert placement["slurm_job_id"] == jid, (placement, jobs[jid][:2])
        assert placement["source"] == ("slurm" if wants_gpu[jid] else "none"), placement
        assert placement["gpu"] == (allotted[jid][0] if wants_gpu[jid] else None), (placement, allotted[jid])
        if wants_gpu[jid]:
            gpu_of[jid] = placement["gpu"]
    overlapping = [
        (a, b)
        for a, b in combinations(gpu_of, 2)
        if _time(rows[a][2]) < _time(rows[b][3]) and _time(rows[b][2]) < _time(rows[a][3])
    ]
    assert overlapping, f"no two GPU jobs ran at the same time:\n{accounting}"
    for a, b in overlapping:
        assert gpu_of[a] != gpu_of[b], (a, b, gpu_of)

    # (4) The same results as the local run (same seeds, one thread per job).
    arch = f"results/search/{TASK}/random_search/seed0/arch.json"
    assert json.loads((remote / arch).read_text())["arch"] == json.loads((local / arch).read_text())["arch"]
    for method in METHODS:
        path = f"results/runs/{TASK}/{method}/seed0/scores.json"
        here, there = (json.loads((wd / path).read_text()) for wd in (local, remote))
        assert there["metrics"] == here["metrics"], method
    pd.testing.assert_frame_equal(
        pd.read_csv(remote / "results/tables/scores.csv"), pd.read_csv(local / "results/tables/scores.csv")
    )

    # (5) The preempted retraining went back to the queue, ran again and resumed from its checkpoint; its
    # scores equal the local run's (checked above).
    assert [line.split("|")[1] for line in requeues.split()] == ["REQUEUED", "COMPLETED"], requeues
    log = (remote / f"logs/retrain/{TASK}/wrn/seed0.log").read_text()
    assert re.search(rf"resuming {TASK} from \S+checkpoint.pt after epoch [1-9]", log), log[-3000:]
    # Both runs of that SLURM job are attempts of the job, and the cost table counts them.
    scores = remote / f"results/runs/{TASK}/wrn/seed0/scores.json"
    tried = read_attempts(attempts_path(scores))
    with capsys.disabled():
        print(f"[test_slurm] attempts of the preempted job: {[asdict(a) for a in tried]}")
    assert len(tried) >= 2 and tried[-1].status == "done", tried
    assert {a.slurm_job_id for a in tried} == {preempted}, tried
    assert job_costs([scores]).iloc[0]["attempts"] == len(tried)

    # (6) The harness stopped every daemon it started.
    alive = [f"{d.name}={d.pid}" for d in started if d.alive()]
    assert not alive, alive
    assert not any(os.path.lexists(dev) for dev in cluster.devices)
