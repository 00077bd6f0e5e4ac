"""The workflow through Snakemake's command line, in a scratch working directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nb360.data.loader import ShardDataset
from nb360.tasks import get_task
from tests.conftest import PYPI_CACHE, REPO


def _workdir(tmp_path: Path, **data_overrides) -> Path:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"]["pypi_cache"] = str(PYPI_CACHE)
    cfg["data"].update(data_overrides)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
    ]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=1800)


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
def test_real_source_uses_hand_placed_official_files(tmp_path, embedded):
    """`data.source: real` is the only switch: official files placed by hand are verified and sharded."""
    raw = tmp_path / "raw"
    shutil.copytree(
        embedded.raw_dir("satellite"), raw / "satellite", ignore=shutil.ignore_patterns("raw.json")
    )
    wd = _workdir(
        tmp_path,
        source="real",
        raw_dir=str(raw),
        lockfile=str(tmp_path / "lock.json"),
        mirror="http://127.0.0.1:9/",
    )
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["tasks"] = ["satellite"]
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _snakemake(wd, "--cores", "1", "data")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    manifest = json.loads((wd / "results" / "shards" / "satellite" / "manifest.json").read_text())
    assert manifest["source"] == "real"
    assert set(json.loads((tmp_path / "lock.json").read_text())["files"]) == {
        "satellite/satellite_train.npy",
        "satellite/satellite_test.npy",
    }
    assert (
        "FIRST COPY OF satellite/satellite_train.npy"
        in (wd / "logs/data/fetch_raw/satellite.log").read_text()
    )
