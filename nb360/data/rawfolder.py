"""Raw data folders, the checksum lock file, and verified reads of the official raw files.

A task's raw folder holds the official files under their official names (``<raw_dir>/<task>/<name>``),
whether they were downloaded by the workflow, copied there by hand, or written by the embedded generator.
The fetch step writes a stamp ``<raw_dir>/<task>/raw.json`` with each file's sha256; the preprocessing step
reads files only through :class:`RawFolder`, which hashes every file once, before its first read, and checks
it against that stamp (and, for a file that changed since, against the lock file).

No checksums are published for the benchmark's files, so the lock file pins each file's sha256 the first time
a copy has been **read without error** (by the shards step, after the task's reader read every file and the
item counts matched the documented ones); until then the file is "pending" in the stamp. A copy that matches a
lock entry is accepted, any other copy of a pinned file is refused. Commit the lock file to pin your data.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import gzip
import json
import logging
import os
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from nb360.data.safe_pickle import npy_dtype, safe_load, safe_load_npy
from nb360.data.shards import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

STAMP_NAME = "raw.json"
# Files in a raw folder that are never official files (for the near-namesake hint of a missing file).
_NOT_RAW = (STAMP_NAME, ".flock", ".part")


class RawDataError(RuntimeError):
    """A raw file is missing, corrupt or unverified. The message names the file and the fix."""


class LockFile:
    """``{"files": {"<task>/<name>": {"sha256": ..., "size": ..., "recorded": ..., "origin": ...}}}``.

    Updates take an exclusive ``flock`` and rewrite the file atomically, so parallel jobs can share it.
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

    def pin(self, entries: Mapping[str, tuple[str, int, str]]) -> list[str]:
        """Pin ``{key: (sha256, size, origin)}``; return the keys that were new.

        Under the lock, a key pinned meanwhile with another sha256 is an error (nothing is written then).
        """
        with self._locked():
            files = self.read()
            for key, (digest, _, _) in entries.items():
                if key in files and files[key]["sha256"] != digest:
                    raise RawDataError(
                        f"{key} was read with sha256 {digest}, but {self.path} now pins "
                        f"{files[key]['sha256']} for it (pinned meanwhile by another run?): fetch the file "
                        "again, or remove that entry from the lock file if this copy is the right one"
                    )
            new = [key for key in entries if key not in files]
            if not new:
                return []
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for key in new:
                digest, size, origin = entries[key]
                files[key] = {"sha256": digest, "size": size, "recorded": now, "origin": origin}
            body = {
                "comment": "sha256 of the official raw files, pinned when a copy was first read without "
                "error; every later copy is verified against it. Commit this file to pin your data.",
                "files": dict(sorted(files.items())),
            }
            atomic_write_text(self.path, json.dumps(body, indent=2) + "\n")
        for key in new:
            log.warning(
                "FIRST COPY OF %s: no checksum was published or pinned for it; this copy was read without "
                "error, so its sha256 %s is now pinned in %s. Every later copy will be verified against it. "
                "If this copy may be incomplete or tampered with, delete that entry and fetch it again.",
                key,
                entries[key][0],
                self.path,
            )
        return new


def check_lock(lock: LockFile, key: str, path: Path, digest: str) -> bool:
    """Whether ``key`` is pinned in ``lock`` (then ``digest`` must match it); ``False``: not pinned yet."""
    entry = lock.get(key)
    if entry is None:
        return False
    if entry["sha256"] != digest:
        raise RawDataError(
            f"{path} does not match the sha256 pinned in {lock.path} for {key}\n"
            f"  expected {entry['sha256']}\n  found    {digest}\n"
            "The file is corrupt, incomplete or another version: delete it and fetch it again. If you are "
            "sure this copy is the right one, remove the entry from the lock file."
        )
    return True


def near_names(folder: Path, name: str, official: Collection[str] = ()) -> list[str]:
    """Files in ``folder`` whose names are close to ``name`` (e.g. ``labels_train.npy``), other than the
    ``official`` names (files that are where they belong)."""
    if not folder.is_dir():
        return []
    present = [
        p.name
        for p in folder.iterdir()
        if p.is_file() and not p.name.endswith(_NOT_RAW) and p.name not in official
    ]
    return difflib.get_close_matches(name, present, n=3, cutoff=0.6)


def near_names_hint(folder: Path, name: str, official: Collection[str] = ()) -> str:
    """A hint for the error about missing ``name``: files present under a near name, to be renamed."""
    near = near_names(folder, name, official)
    if not near:
        return ""
    return f" [{folder} holds {', '.join(near)}: if that is this file, rename it to {name}]"


def write_stamp(
    folder: Path,
    task: str,
    source: str,
    files: Mapping[str, str],
    pinned: Collection[str] | None = None,
    extra: Mapping | None = None,
) -> Path:
    """Record the verified files of a raw folder; this is what the preprocessing rule depends on.

    With ``pinned`` (real data), each file is marked "pinned" (it matched the lock file) or "pending" (its
    checksum is pinned only after the shards step has read it without error).
    """

    def entry(name: str, digest: str) -> dict[str, Any]:
        e: dict[str, Any] = {"sha256": digest, "size": (folder / name).stat().st_size}
        if pinned is not None:
            e["lock"] = "pinned" if name in pinned else "pending"
        return e

    body = {
        "task": task,
        "source": source,
        "files": {name: entry(name, digest) for name, digest in files.items()},
        **(extra or {}),
    }
    path = folder / STAMP_NAME
    atomic_write_text(path, json.dumps(body, indent=2) + "\n")
    return path


def _check_gzip(path: Path) -> None:
    """Read a gzip stream to its end: its CRC is checked only there, and readers may stop early (a tar reader
    stops at the last member it needs), so a flipped bit could otherwise decode to different data."""
    with gzip.open(path, "rb") as f:
        while f.read(1 << 22):
            pass


class RawFolder:
    """Verified access to a task's raw files (official names, relative to ``root``).

    Every file is hashed once, before its first read, and checked against ``checksums`` (the stamp). A file
    that changed since the stamp was written is refused, unless ``lock`` is given and the file is not pinned
    there: then the new copy is read (a logged warning) and its checksum is what :attr:`digests` records.
    :attr:`current` is the file the reader touched last, so a failure can name it.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        checksums: Mapping[str, str],
        source: str = "real",
        lock: LockFile | None = None,
        task: str | None = None,
    ):
        self.root = Path(root)
        self.checksums = dict(checksums)
        self.source = source
        self.lock = lock
        self.task = task or self.root.name
        self.digests: dict[str, str] = {}  # sha256 of every file read, taken right before its first read
        self.unverified: set[str] = set()  # files read without a recorded checksum (plain formats only)
        self.current: str | None = None

    @classmethod
    def from_stamp(cls, stamp: str | os.PathLike) -> RawFolder:
        stamp = Path(stamp)
        if not stamp.exists():
            raise RawDataError(f"raw-data stamp {stamp} is missing; run the fetch step for this task first")
        body = json.loads(stamp.read_text())
        lockfile = body.get("lockfile")
        return cls(
            stamp.parent,
            {k: v["sha256"] for k, v in body["files"].items()},
            body.get("source", "real"),
            lock=LockFile(lockfile) if lockfile else None,
            task=body.get("task"),
        )

    @property
    def stamp(self) -> Path:
        return self.root / STAMP_NAME

    def key(self, name: str) -> str:
        """The file's key in the lock file."""
        return f"{self.task}/{name}"

    def _access(self, name: str) -> Path:
        """The path of ``name``, hashed and checked on first access; remembered as the current file."""
        p = self.root / name
        self.current = name
        if not p.exists():
            hint = near_names_hint(self.root, name, self.checksums)
            raise RawDataError(
                f"raw file {p} is missing{hint}; put the official file there "
                f"(see the README, 'Real data'), or delete {self.stamp} so that the next run's fetch step "
                "downloads it again"
            )
        if name in self.digests or name in self.unverified:
            return p
        expected = self.checksums.get(name)
        if expected is None:
            self.unverified.add(name)
            return p
        digest = sha256_file(p)
        if digest != expected:
            self._changed(name, p, expected, digest)
        if name.endswith(".gz") and not self._pinned(name):
            _check_gzip(p)
        self.digests[name] = digest
        return p

    def _pinned(self, name: str) -> bool:
        return self.lock is not None and self.lock.get(self.key(name)) is not None

    def _changed(self, name: str, p: Path, expected: str, digest: str) -> None:
        """``p`` differs from the stamp: refuse it, unless it is real data not yet pinned in the lock."""
        if self.lock is None:
            fix = (
                f"delete {self.root} and run the workflow again"
                if self.source == "embedded"
                else f"delete {self.stamp} and run the workflow again, so that the fetch step verifies it"
            )
            raise RawDataError(
                f"{p} changed since it was verified (sha256 {digest}, {self.stamp} records {expected}); {fix}"
            )
        if check_lock(self.lock, self.key(name), p, digest):
            return  # matches its pin (pinned since the stamp was written)
        log.warning(
            "%s changed since the fetch step verified it (sha256 %s, the stamp records %s). It is not pinned "
            "in %s, so this copy is read and its checksum recorded in the manifest (and pinned if it reads "
            "without error).",
            p,
            digest,
            expected,
            self.lock.path,
        )

    def path(self, name: str) -> Path:
        """Path of a plain (not pickled) file, checked against the stamp; the caller reads it."""
        return self._access(name)

    def verify(self, name: str) -> Path:
        """Like :meth:`path`, but a file without a recorded checksum is refused (pickled content)."""
        p = self._access(name)
        if name not in self.digests:
            raise RawDataError(f"no checksum recorded for {p}; refusing to read it unverified")
        return p

    @contextlib.contextmanager
    def open(self, name: str, verify: bool = False) -> Iterator[IO[bytes]]:
        p = self.verify(name) if verify else self._access(name)
        opener = gzip.open if name.endswith(".gz") and not name.endswith(".tar.gz") else open
        with opener(p, "rb") as f:
            yield f

    def load_pickle(self, name: str, encoding: str = "ASCII") -> Any:
        """Verify, then unpickle with the restricted unpickler (gzip handled by the file name)."""
        with self.open(name, verify=True) as f:
            return safe_load(f, encoding=encoding)

    def load_npy(self, name: str) -> np.ndarray:
        """``.npy`` file; object arrays must be verified and are read with the restricted unpickler."""
        with self.open(name) as f:
            dtype = npy_dtype(f)
        if dtype.hasobject:
            self.verify(name)
        with self.open(name) as f:
            return safe_load_npy(f)
