"""What jobs ask of their machine or scheduler (nb360.resources), as the rules and the profiles pass it on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nb360.resources import STAGES, job_resources
from tests.conftest import REPO
from tests.test_workflow import _config, _snakemake, _workdir


def test_training_stages_ask_for_one_gpu_and_the_others_for_none():
    for budget in ("smoke", "paper"):
        for stage in STAGES:
            expected = 1 if stage in ("search", "search_worker", "tune", "retrain", "nb201") else 0
            assert job_resources(stage, budget).gpu == expected, (stage, budget)


def test_device_cpu_asks_for_no_gpu():
    assert job_resources("retrain", "paper", device="cpu").gpu == 0
    assert job_resources("retrain", "paper", device="cuda:1").gpu == 1


def test_cpu_only_stages_of_a_method_ask_for_no_gpu():
    assert job_resources("retrain", "paper", method="trivial").gpu == 0
    assert job_resources("search", "paper", method="wrn_asha").gpu == 0
    assert job_resources("search_worker", "paper", method="wrn_asha").gpu == 1
    assert job_resources("retrain", "paper", method="wrn_asha").gpu == 1


def test_retries_ask_for_more_memory_and_time():
    first, third = job_resources("search", "paper", attempt=1), job_resources("search", "paper", attempt=3)
    assert third.mem_mb == 3 * first.mem_mb and third.runtime == 3 * first.runtime
    assert third.threads == first.threads and third.gpu == first.gpu


def test_paper_jobs_ask_for_more_than_smoke_jobs():
    for stage in STAGES:
        smoke, paper = job_resources(stage, "smoke"), job_resources(stage, "paper")
        assert paper.mem_mb >= smoke.mem_mb and paper.runtime >= smoke.runtime, stage


@pytest.mark.parametrize(
    ("args", "message"),
    [(("train", "smoke"), "unknown stage 'train'"), (("retrain", "huge"), "unknown budget 'huge'")],
)
def test_unknown_stage_or_budget_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        job_resources(*args)


def _dry_run_resources(wd: Path, *args: str) -> dict[str, dict[str, str]]:
    """ "rule" or "rule/method" (jobs with a method wildcard) -> resources of its first job in a dry run."""
    proc = _snakemake(wd, "-n", "--cores", "2", *args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    found = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        method = re.search(r"^\s+wildcards: .*\bmethod=(\w+)", block, re.M)
        if head and res:
            key = head.group(1) + (f"/{method.group(1)}" if method else "")
            found.setdefault(key, dict(kv.split("=", 1) for kv in res.group(1).split(", ")))
    return found


def test_rules_pass_budget_attempt_and_device_to_the_scheduler(tmp_path):
    wd = _workdir(tmp_path)
    _config(wd, tasks=["satellite"], methods=["trivial", "wrn_asha", "dash"])
    (wd / "paper.yaml").write_text(yaml.safe_dump({"train": {"budget": "paper"}}))
    paper = job_resources("retrain", "paper")

    res = _dry_run_resources(wd, "--configfile", str(wd / "paper.yaml"), "--attempt", "2")
    for job in ("retrain/wrn_asha", "search_worker/wrn_asha", "tune/dash", "search/dash"):
        assert res[job]["gpu"] == "1", job
    assert res["tune/dash"]["runtime"] == str(2 * job_resources("tune", "paper").runtime)
    assert res["retrain/wrn_asha"]["mem_mb"] == str(2 * paper.mem_mb)
    assert res["retrain/wrn_asha"]["runtime"] == str(2 * paper.runtime)
    # CPU-only stages of a method ask for no GPU: the trivial predictor, the ASHA study's summary.
    assert res["retrain/trivial"]["gpu"] == "0" and res["search/wrn_asha"]["gpu"] == "0"
    assert "gpu" not in res["shards"] and "gpu" not in res["scores"]

    (wd / "cpu.yaml").write_text(yaml.safe_dump({"train": {"device": "cpu"}}))
    res = _dry_run_resources(wd, "--configfile", str(wd / "cpu.yaml"))
    assert res["retrain/wrn_asha"]["gpu"] == "0"
    assert res["retrain/wrn_asha"]["mem_mb"] == str(job_resources("retrain", "smoke").mem_mb)


def test_default_profile_is_used_by_make_and_leaves_the_dag_alone(tmp_path):
    wd = _workdir(tmp_path)
    _config(wd, tasks=["satellite"], methods=["trivial"])
    profile = REPO / "workflow" / "profiles" / "default"
    proc = _snakemake(wd, "-n", "--workflow-profile", str(profile))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"workflow specific profile {profile}" in out
    assert "--workflow-profile workflow/profiles/default" in (REPO / "Makefile").read_text()


def test_slurm_profile_sets_the_executor_retries_and_requeue():
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1 and profile["slurm-requeue"] is True
    assert profile["rerun-incomplete"] is True
