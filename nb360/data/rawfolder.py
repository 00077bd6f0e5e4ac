"""Raw data folders, the checksum lock file, and verified reads of the official raw files.

A task's raw folder holds the official files under their official names (``<raw_dir>/<task>/<name>``),
whether they were downloaded by the workflow, copied there by hand, or written by the embedded generator.
After they are fetched and verified, a stamp ``<raw_dir>/<task>/raw.json`` records each file's sha256; the
preprocessing step reads files only through :class:`RawFolder`, which re-verifies every pickled file
against that record before unpickling it with the restricted unpickler.

No checksums are published for the benchmark's files, so the lock file records each file's sha256 the first
time a complete copy is seen (with a loud warning) and every later copy is verified against it. Commit the
lock file to pin your data.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from nb360.data.safe_pickle import npy_dtype, safe_load, safe_load_npy
from nb360.data.shards import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

STAMP_NAME = "raw.json"


class RawDataError(RuntimeError):
    """A raw file is missing, corrupt or unverified. The message names the file and the fix."""


class LockFile:
    """``{"files": {"<task>/<name>": {"sha256": ..., "size": ..., "recorded": ..., "origin": ...}}}``.

    Updates take an exclusive ``flock`` and rewrite the file atomically, so parallel fetch jobs can share it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text()).get("files", {})
        except json.JSONDecodeError as e:
            raise RawDataError(f"lock file {self.path} is not valid JSON ({e}); fix or delete it") from e

    def get(self, key: str) -> dict[str, Any] | None:
        return self.read().get(key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".flock"), "w") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lk, fcntl.LOCK_UN)

    def record(self, key: str, sha256: str, size: int, origin: str) -> None:
        with self._locked():
            files = self.read()
            files[key] = {
                "sha256": sha256,
                "size": size,
                "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "origin": origin,
            }
            body = {
                "comment": "sha256 of the official raw files, recorded on their first complete download; "
                "every later copy is verified against it. Commit this file to pin your data.",
                "files": dict(sorted(files.items())),
            }
            atomic_write_text(self.path, json.dumps(body, indent=2) + "\n")
        log.warning(
            "FIRST COPY OF %s: no checksum was published or recorded for it, so its sha256 %s is now "
            "recorded in %s. Every later copy will be verified against it. If this copy may be incomplete or "
            "tampered with, delete that entry and fetch it again.",
            key,
            sha256,
            self.path,
        )


def verify_against_lock(lock: LockFile, key: str, path: Path, origin: str) -> str:
    """sha256 of ``path``, checked against (or recorded into) the lock file."""
    digest = sha256_file(path)
    entry = lock.get(key)
    if entry is None:
        lock.record(key, digest, path.stat().st_size, origin)
    elif entry["sha256"] != digest:
        raise RawDataError(
            f"{path} does not match the sha256 recorded in {lock.path} for {key}\n"
            f"  expected {entry['sha256']}\n  found    {digest}\n"
            "The file is corrupt, incomplete or another version: delete it and fetch it again. If you are "
            "sure this copy is the right one, remove the entry from the lock file."
        )
    return digest


def write_stamp(
    folder: Path, task: str, source: str, files: Mapping[str, str], extra: Mapping | None = None
) -> Path:
    """Record the verified files of a raw folder; this is what the preprocessing rule depends on."""
    body = {
        "task": task,
        "source": source,
        "files": {
            name: {"sha256": digest, "size": (folder / name).stat().st_size} for name, digest in files.items()
        },
        **(extra or {}),
    }
    path = folder / STAMP_NAME
    atomic_write_text(path, json.dumps(body, indent=2) + "\n")
    return path


class RawFolder:
    """Verified access to a task's raw files (official names, relative to ``root``)."""

    def __init__(self, root: str | os.PathLike, checksums: Mapping[str, str], source: str = "real"):
        self.root = Path(root)
        self.checksums = dict(checksums)
        self.source = source

    @classmethod
    def from_stamp(cls, stamp: str | os.PathLike) -> RawFolder:
        stamp = Path(stamp)
        if not stamp.exists():
            raise RawDataError(f"raw-data stamp {stamp} is missing; run the fetch step for this task first")
        body = json.loads(stamp.read_text())
        return cls(
            stamp.parent, {k: v["sha256"] for k, v in body["files"].items()}, body.get("source", "real")
        )

    def path(self, name: str) -> Path:
        p = self.root / name
        if not p.exists():
            raise RawDataError(f"raw file {p} is missing; fetch it again (see the README, 'Real data')")
        return p

    def verify(self, name: str) -> Path:
        p = self.path(name)
        expected = self.checksums.get(name)
        if expected is None:
            raise RawDataError(f"no checksum recorded for {p}; refusing to read it unverified")
        if sha256_file(p) != expected:
            raise RawDataError(
                f"{p} changed since it was verified (sha256 differs from {self.root / STAMP_NAME}); "
                "fetch it again"
            )
        return p

    @contextlib.contextmanager
    def open(self, name: str, verify: bool = False) -> Iterator[IO[bytes]]:
        p = self.verify(name) if verify else self.path(name)
        opener = gzip.open if name.endswith(".gz") and not name.endswith(".tar.gz") else open
        with opener(p, "rb") as f:
            yield f

    def load_pickle(self, name: str, encoding: str = "ASCII") -> Any:
        """Verify, then unpickle with the restricted unpickler (gzip handled by the file name)."""
        with self.open(name, verify=True) as f:
            return safe_load(f, encoding=encoding)

    def load_npy(self, name: str) -> np.ndarray:
        """``.npy`` file; object arrays are verified first and read with the restricted unpickler."""
        with self.open(name) as f:
            dtype = npy_dtype(f)
        if dtype.hasobject:
            self.verify(name)
        with self.open(name) as f:
            return safe_load_npy(f)
