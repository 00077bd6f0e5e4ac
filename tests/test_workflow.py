"""The workflow through Snakemake's command line, in a scratch working directory."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nb360.attempts import attempts_path, read_attempts
from nb360.data.loader import ShardDataset
from nb360.data.pipeline import generate_embedded
from nb360.report.cost import benchmark_path, job_costs, read_benchmark
from nb360.tasks import get_task, list_tasks
from tests.conftest import PYPI_CACHE, REPO


def _workdir(tmp_path: Path, **data_overrides) -> Path:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"]["pypi_cache"] = str(PYPI_CACHE)
    cfg["data"].update(data_overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    return [*cmd, "--directory", str(workdir), *args]


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_snakemake_cmd(workdir, *args), capture_output=True, text=True, timeout=1800)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"shards_dir": "x"}, "'shards_dir' was unexpected"),
        ({"source": "s3"}, "'s3' is not one of ['embedded', 'real']"),
        ({"embedded_seed": "zero"}, "'zero' is not of type 'integer'"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, patch, expected):
    wd = _workdir(tmp_path, **patch)
    proc = _snakemake(wd, "-n", "--cores", "1")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Error validating config file" in out and expected in out, out[-3000:]


def test_unknown_task_is_refused(tmp_path):
    wd = _workdir(tmp_path)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["tasks"] = ["cifar10"]
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _snakemake(wd, "-n", "--cores", "1")
    assert proc.returncode != 0 and "'cifar10' is not one of" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("overlay", "cli", "expected"),
    [
        # An overlay's unknown method is the overlay's error, not config.yaml's.
        ({"methods": ["wrn", "wrn_width"]}, [], "overlay.yaml: unknown method(s) wrn_width;"),
        (None, ["--config", "methods=[wrn,wrn_width]"], "--config: unknown method(s) wrn_width;"),
        # An overlay that leaves methods alone: config.yaml set them.
        ({"train": {"budget": "paper"}}, [], "config.yaml: unknown method(s) wrn_width;"),
        ({"methods": ["densenas_random"]}, [], "overlay.yaml: method(s) densenas_random need the search of"),
    ],
)
def test_config_errors_name_the_file_or_option_that_set_the_value(tmp_path, overlay, cli, expected):
    wd = _workdir(tmp_path)
    _config(wd, methods=["wrn", "wrn_width"])
    args = list(cli)
    if overlay is not None:
        (wd / "overlay.yaml").write_text(yaml.safe_dump(overlay))
        args += ["--configfile", str(wd / "overlay.yaml")]
    proc = _snakemake(wd, "-n", "--cores", "1", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and expected in out, out[-3000:]
    origin = expected.split(":")[0]
    fix = "`--config methods=...`" if origin == "--config" else f"(`methods` in {origin})"
    assert fix in out, out[-3000:]


def test_parsing_the_workflow_imports_no_torch_nor_any_method_module(tmp_path):
    """Every Snakemake start (each cluster job's too) parses the workflow: it reads the light method
    registry and leaves torch, scipy, optuna and the methods' modules to the jobs that run them."""
    from nb360.methods import list_methods, method_info

    wd = _workdir(tmp_path)
    _config(wd, methods=list_methods(), seeds=[0, 1])
    cmd = _snakemake_cmd(wd, "-n", "--cores", "1")
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    }
    assert "nb360.methods.registry" in imported and "nb360.resources" in imported
    heavy = {"torch", "scipy", "optuna", "h5py", "sklearn", "matplotlib"}  # Snakemake itself loads numpy, PIL
    assert not {m for m in imported if m.split(".")[0] in heavy}
    assert not {method_info(m).module for m in list_methods()} & imported
    assert not {m for m in imported if m.split(".")[:2] in (["nb360", "tasks"], ["nb360", "train"])}


@pytest.mark.integration
def test_data_target_builds_shards_of_every_task_from_nothing(tmp_path):
    wd = _workdir(tmp_path)
    proc = _snakemake(wd, "--cores", "2", "data")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    tasks = yaml.safe_load((wd / "config.yaml").read_text())["tasks"]
    for task in tasks:
        manifest = wd / "results" / "shards" / task / "manifest.json"
        assert manifest.exists(), task
        spec = get_task(task)
        ds = ShardDataset(manifest, ["train"], train=True)
        batch = ds.batch(__import__("numpy").arange(min(2, len(ds))))
        assert tuple(batch["x"].shape[1:]) == spec.input_shape, task
        assert (wd / "logs" / "data" / "shards" / f"{task}.log").read_text().strip()


@pytest.mark.integration
def test_real_source_uses_hand_placed_official_files(tmp_path):
    """`data.source: real` on official-format files of all ten tasks (the embedded generators' output, placed
    by hand, no lock file): their item counts are far below the complete release's, so the shards step stops
    each task whose counts are documented; `data.allow_partial: true` builds them all, unpinned."""
    raw = tmp_path / "raw"
    for task in list_tasks():
        generate_embedded(task, raw, seed=0, cache_dir=PYPI_CACHE)
        (raw / task / "raw.json").unlink()
    lock = tmp_path / "lock.json"
    wd = _workdir(
        tmp_path / "wd", source="real", raw_dir=str(raw), lockfile=str(lock), mirror="http://127.0.0.1:9/"
    )
    proc = _snakemake(wd, "--cores", "2", "--keep-going", "data")
    assert proc.returncode != 0
    unchecked = {t for t in list_tasks() if not get_task(t).real_counts.splits}
    assert unchecked == {"fsd50k", "ecg"}
    for task in list_tasks():
        log = (wd / "logs" / "data" / "shards" / f"{task}.log").read_text()
        if task in unchecked:
            assert "item counts not checked" in log, task
        else:
            assert "not the complete official release" in log and "data.allow_partial: true" in log, task
    # Only the files of the tasks whose counts are not checked were read to the end and pinned.
    pinned = {key.split("/")[0] for key in json.loads(lock.read_text())["files"]}
    assert pinned == unchecked
    assert "FIRST COPY OF ecg/challenge2017.pkl" in (wd / "logs/data/shards/ecg.log").read_text()

    _config(wd, data={**yaml.safe_load((wd / "config.yaml").read_text())["data"], "allow_partial": True})
    proc = _snakemake(wd, "--cores", "2", "data")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for task in list_tasks():
        manifest = json.loads((wd / "results" / "shards" / task / "manifest.json").read_text())
        assert manifest["source"] == "real"
        assert manifest["provenance"]["complete"] is (task in unchecked), task
    assert {key.split("/")[0] for key in json.loads(lock.read_text())["files"]} == unchecked


def _config(wd: Path, **top) -> None:
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg.update(top)
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_task_specific_methods_run_on_their_tasks_only(tmp_path):
    """AMBER is configured with tasks it does not apply to: the DAG holds its jobs on ECG only, the other
    methods run everywhere, DASH gets its tune job, and asking for AMBER on CIFAR-100 says why not."""
    wd = _workdir(tmp_path)
    _config(wd, tasks=["cifar100", "ecg"], methods=["trivial", "amber", "dash"], nb201={"tasks": []})
    proc = _snakemake(wd, "-n", "--cores", "1", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert (jobs["search"], jobs["tune"], jobs["retrain"]) == ("3", "2", "5")  # amber ecg; dash on both
    proc = _snakemake(wd, "-n", "--cores", "1", "results/runs/cifar100/amber/seed0/scores.json")
    assert proc.returncode != 0
    assert (
        "amber does not apply to cifar100: it runs on ecg, satellite, deepsea only"
        in proc.stdout + proc.stderr
    )


@pytest.mark.integration
def test_killed_retrain_job_resumes_from_its_checkpoint(tmp_path):
    """A retrain job killed after its first epoch is resumed by the next run and ends with equal metrics;
    the cost counts both attempts."""
    target = "results/runs/satellite/wrn/seed0/scores.json"
    whole = _workdir(tmp_path / "whole")
    killed = _workdir(tmp_path / "killed")
    for wd in (whole, killed):
        _config(wd, tasks=["satellite"], methods=["wrn"], seeds=[0])
        assert _snakemake(wd, "--cores", "1", "data").returncode == 0
    assert _snakemake(whole, "--cores", "1", target).returncode == 0

    cmd = _snakemake_cmd(killed, "--cores", "1", target)
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    checkpoint = killed / "results/runs/satellite/wrn/seed0/checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "the job wrote no checkpoint before it ended"
    os.killpg(proc.pid, signal.SIGKILL)  # the job and Snakemake, as a scheduler would
    proc.wait()
    assert not (killed / target).exists()

    # As after any killed Snakemake: remove its stale lock, then run again.
    assert _snakemake(killed, "--unlock").returncode == 0
    rerun = _snakemake(killed, "--cores", "1", "--rerun-incomplete", target)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-5000:]
    log = (killed / "logs/retrain/satellite/wrn/seed0.log").read_text()
    assert "resuming satellite" in log
    a = json.loads((whole / target).read_text())
    b = json.loads((killed / target).read_text())
    assert a["metrics"] == b["metrics"]
    # Snakemake's benchmark file holds the second attempt only; the attempts file beside it both
    first, second = read_attempts(attempts_path(killed / target))
    assert (first.status, second.status) == ("running", "done")
    assert first.job == {"rule": "retrain", "task": "satellite", "method": "wrn", "seed": "0"}
    job = job_costs([killed / target]).iloc[0]
    assert job["attempts"] == 2
    assert job["wall_h"] == pytest.approx(
        read_benchmark(benchmark_path(killed / target)).seconds / 3600 + first.wall_s / 3600
    )
    assert job_costs([whole / target]).iloc[0]["attempts"] == 1


@pytest.mark.integration
def test_default_dag_on_three_tasks_writes_scores_tables_figures_and_report(tmp_path):
    """Every default method (searches included) on a point 2D, a dense 2D and a 1D task, end to end, with the
    NB201 benchmark of the default run (on 3 cells)."""
    wd = _workdir(tmp_path)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    assert cfg["nb201"]["tasks"] == ["ninapro", "darcy"]  # part of the default run
    # The non-NAS methods not (yet) in the default run too, so that the comparison figures see every family.
    _config(
        wd,
        tasks=["ninapro", "darcy", "satellite"],
        methods=[*cfg["methods"], "xgboost", "perceiver_io"],
        nb201={**cfg["nb201"], "cells": 3, "chunk_size": 3, "runs": 5},
    )
    methods = yaml.safe_load((wd / "config.yaml").read_text())["methods"]
    proc = _snakemake(wd, "--cores", "2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    scores = pd.read_csv(wd / "results/tables/scores.csv")
    assert list(scores.columns) == [
        "task",
        "method",
        "seed",
        "metric",
        "value",
        "lower_is_better",
        "data_source",
    ]
    assert set(scores.task) == {"ninapro", "darcy", "satellite"} and set(scores.method) == set(methods)
    assert set(scores[scores.method == "amber"].task) == {"satellite"}  # task-specific
    assert set(scores[scores.method == "autodeeplab"].task) == {"darcy"}
    assert np.isfinite(scores.value).all() and (scores.data_source == "embedded").all()
    best = scores.pivot_table(index="task", columns="method", values="value")
    assert (best["wrn"] < best["trivial"]).all(), best
    for name in ("paper_table.csv", "paper_table.md", "paper_table.tex", "parameter_counts.md"):
        assert (wd / "results/tables" / name).stat().st_size > 0
    comparison = [f"profiles_{w}" for w in ("all", "2d", "constrained", "nas_vs_nonnas")]
    for name in (
        "performance_profiles",
        "learning_curves",
        "parameter_counts",
        *comparison,
        "size_vs_performance",
    ):
        assert (wd / f"results/figures/{name}.png").stat().st_size > 0
        assert (wd / f"results/figures/{name}.pdf").stat().st_size > 0
    _check_searched_architectures_were_retrained(wd, ["ninapro", "darcy", "satellite"], methods)
    for task in ("ninapro", "darcy"):
        assert (wd / f"results/figures/nb201_search_{task}.png").stat().st_size > 0
        assert len(list((wd / f"results/nb201/{task}").glob("nb201-*.pickle.pbz2"))) == 2
    assert set(pd.read_csv(wd / "results/tables/nb201_algorithms.csv").task) == {"ninapro", "darcy"}
    report = _snakemake(wd, "--report", "results/report.html")
    assert report.returncode == 0, (report.stdout + report.stderr)[-3000:]
    html = (wd / "results/report.html").read_text()
    assert len(html) > 10_000 and "arch.json" in html and "nb201_search_darcy.png" in html
    assert "profiles_nas_vs_nonnas.png" in html and "size_vs_performance.png" in html


def _check_searched_architectures_were_retrained(wd: Path, tasks: list[str], methods: list[str]) -> None:
    """Each search method's arch.json exists, and the retrained network is the one it describes."""
    from nb360.methods import get_method
    from nb360.methods.autodeeplab import _network as autodeeplab_network
    from nb360.methods.autodeeplab import budget_for as autodeeplab_budget
    from nb360.methods.darts import eval_budget
    from nb360.models import create_model
    from nb360.runs import read_arch
    from nb360.search.darts_space import Genotype
    from nb360.search.densenas_space import DenseArch
    from nb360.train import count_params

    searched = [m for m in methods if get_method(m).searches]
    expected = {"gaea", "random_search", "densenas", "densenas_random", "wrn_asha", "amber", "autodeeplab"}
    assert expected <= set(searched)
    for task in tasks:
        spec = get_task(task)
        for method in searched:
            if not get_method(method).info.applies_to(task):  # AMBER on ECG, Satellite, DeepSEA only
                assert not (wd / f"results/search/{task}/{method}").exists(), (task, method)
                continue
            body = read_arch(wd / f"results/search/{task}/{method}/seed0/arch.json")
            assert body["task"] == task and body["method"] == method and body["summary"]
            run_dir = wd / f"results/runs/{task}/{method}/seed0"
            params = json.loads((run_dir / "scores.json").read_text())["params"]
            arch = body["arch"]
            if body["kind"] == "darts_genotype":
                b = eval_budget(task, "smoke")
                genotype = Genotype.from_json(json.dumps(arch))
                model = create_model(
                    "darts_eval", spec, genotype=genotype, layers=b.layers, channels=b.channels
                )
                assert count_params(model) == params, (task, method)
            elif body["kind"] == "densenas_arch":
                model = create_model("densenas_net", spec, arch=DenseArch.from_dict(arch))
                assert count_params(model) == params, (task, method)
            elif body["kind"] == "autodeeplab_arch":
                model = autodeeplab_network(spec, arch, autodeeplab_budget("smoke", task))
                assert count_params(model) == arch["params"] == params, (task, method)
            elif body["kind"] == "amber_arch":  # the parameter count its search implied
                assert arch["params"] == params, (task, method)
            else:  # WRN hyperparameters: the retraining started at the searched learning rate
                assert body["kind"] == "wrn_hparams"
                history = json.loads((run_dir / "history.json").read_text())
                assert history["epochs"][0]["lr"] == pytest.approx(arch["lr"]), task


@pytest.mark.integration
def test_nb201_benchmark_trains_merges_searches_and_reports(tmp_path):
    """The NB201 rules end to end on the embedded NinaPro and Darcy: 3 cells in chunks of 2 at the smoke
    budget, official-format tables with the sample as evaluated_indexes, all five algorithms, the report."""
    from nb360.nb201 import plan
    from nb360.nb201.table import read_official

    wd = _workdir(tmp_path)
    _config(
        wd,
        tasks=["ninapro", "darcy"],
        nb201={"tasks": ["ninapro", "darcy"], "cells": 3, "chunk_size": 2, "runs": 5},
    )
    proc = _snakemake(wd, "nb201_report", "--cores", "2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for task in ("ninapro", "darcy"):
        for hp in plan.hps(task, "smoke"):
            table = read_official(
                wd / f"results/nb201/{task}/nb201-{task}-{hp}E.pickle.pbz2", task=task, hp=hp
            )
            assert table.indices == (0, 9, 123) and table.epochs == int(hp)
            assert all(math.isfinite(table.query(i)["test_loss"]) for i in table.indices)
        search = json.loads((wd / f"results/nb201/{task}/search.json").read_text())
        assert len(search["algorithms"]) == 5 and all(len(r) == 5 for r in search["algorithms"].values())
        assert (wd / f"results/figures/nb201_search_{task}.png").stat().st_size > 0
    algos = pd.read_csv(wd / "results/tables/nb201_algorithms.csv")
    assert len(algos) == 10 and set(algos.table_source) == {"embedded"}
    assert (wd / "results/tables/nb201_correlations.md").stat().st_size > 0


def test_dry_run_of_the_full_nb201_generation_is_a_few_hundred_jobs(tmp_path):
    wd = _workdir(tmp_path)
    _config(
        wd,
        tasks=["ninapro", "darcy"],
        nb201={"tasks": ["ninapro", "darcy"], "cells": "all", "chunk_size": 256},
    )
    proc = _snakemake(wd, "nb201_report", "-n", "--config", "train={budget: paper}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    counts = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.startswith("nb201_"))
    assert counts == {"nb201_chunk": "248", "nb201_table": "4", "nb201_search": "2", "nb201_report": "1"}


def test_nb201_official_without_the_files_names_them_and_where_they_go(tmp_path):
    wd = _workdir(tmp_path, raw_dir=str(tmp_path / "raw"))
    proc = _snakemake(wd, "nb201_official", "-n")
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert f"{tmp_path / 'raw'}/nb201/NATS-tss-v1_0-2397f.pickle.pbz2" in err
    assert "place them in" in err and "Precomputed NB201 benchmark" in err
    assert "MissingInputException" not in err


@pytest.mark.integration
def test_nb201_official_searches_and_reports_hand_placed_official_files(tmp_path):
    """The four official files (here tiny ones in the official format) placed in <raw_dir>/nb201/: pinned in
    the lock file, searched, and reported under results/nb201_official/ as "official"."""
    from nb360.nb201 import plan
    from tests.test_nb201_table import table

    raw, lock = tmp_path / "raw", tmp_path / "lock.json"
    for (task, hp), name in plan.OFFICIAL_FILES.items():
        (raw / "nb201").mkdir(parents=True, exist_ok=True)
        table(task, epochs=int(hp)).write_official(raw / "nb201" / name)
    wd = _workdir(tmp_path / "wd", raw_dir=str(raw), lockfile=str(lock))
    _config(wd, nb201={"tasks": [], "runs": 5})
    proc = _snakemake(wd, "nb201_official", "--cores", "2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert {f"nb201/{name}" for name in plan.OFFICIAL_FILES.values()} <= set(
        json.loads(lock.read_text())["files"]
    )
    algos = pd.read_csv(wd / "results/nb201_official/tables/nb201_algorithms.csv")
    assert len(algos) == 10 and set(algos.table_source) == {"official"}
    for task in plan.TASKS:
        assert (wd / f"results/nb201_official/figures/nb201_search_{task}.png").stat().st_size > 0
