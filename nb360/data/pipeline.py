"""The data half of the DAG as plain functions: fetch raw files (real or embedded) and build shards.

Each function is what one Snakemake rule calls; all of them work without Snakemake.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import h5py
import numpy as np

import nb360
from nb360.data.download import DownloadError, DownloadOptions, download
from nb360.data.rawfolder import (
    STAMP_NAME,
    LockFile,
    RawDataError,
    RawFolder,
    check_lock,
    near_names_hint,
    write_stamp,
)
from nb360.data.shards import MANIFEST_FORMAT, SplitData, sha256_file, write_manifest, write_split_shards
from nb360.tasks import DRIVE_FOLDER, EmbeddedContext, TaskSpec, get_task

log = logging.getLogger(__name__)

REQUIRED_SPLITS = ("train", "val", "test")


def fetch_real(
    task: str,
    raw_dir: str | Path,
    lockfile: str | Path,
    mirror: str | None = None,
    options: DownloadOptions | None = None,
    allow_download: bool = True,
) -> Path:
    """Make sure the official raw files of ``task`` are in ``raw_dir/task``, verified; write the stamp.

    Files already present (e.g. fetched by hand from the Google Drive folder) are used as they are; missing
    ones are downloaded from ``mirror`` (default: each file's official URL). A file pinned in the lock file
    must match it; one not pinned yet is "pending" in the stamp: the shards step pins it once the task's
    reader has read it without error. Whatever cannot be had is listed in one error with where to get it.
    """
    spec = get_task(task)
    folder = Path(raw_dir) / task
    folder.mkdir(parents=True, exist_ok=True)
    lock = LockFile(lockfile)
    digests: dict[str, str] = {}
    pinned: set[str] = set()
    missing: list[str] = []
    for rf in spec.raw_files:
        path = folder / rf.name
        key = f"{task}/{rf.name}"
        digest = None
        if not path.exists() and allow_download and rf.url is not None:
            url = rf.url if mirror is None else urljoin(mirror.rstrip("/") + "/", _key_of(rf.url))
            entry = lock.get(key)
            try:
                digest = download(
                    url, path, expected_sha256=entry["sha256"] if entry else None, options=options
                )
            except DownloadError as e:
                log.error("%s", e)
        if not path.exists():
            note = f"; {rf.note}" if rf.note else ""
            hint = near_names_hint(folder, rf.name, [f.name for f in spec.raw_files])
            missing.append(f"  {path}  ({_size(rf.size)}; {rf.url or 'no direct URL'}{note}){hint}")
            continue
        log.info("verifying %s", path)
        digests[rf.name] = digest or sha256_file(path)
        if check_lock(lock, key, path, digests[rf.name]):
            pinned.add(rf.name)
        else:
            log.warning(
                "%s (sha256 %s) is not pinned in %s yet: it is pinned after the shards step has read it "
                "without error",
                path,
                digests[rf.name],
                lock.path,
            )
    if missing:
        raise RawDataError(
            f"task {task}: {len(missing)} official raw file(s) are missing:\n"
            + "\n".join(missing)
            + f"\nDownload them by hand from the benchmark's Google Drive folder {DRIVE_FOLDER} "
            f"(or the old S3 bucket) and put them under {folder}/ with exactly these names, then run the "
            f"workflow again. They will be verified against the lock file {lock.path} (or pinned there once "
            "they have been read without error)."
        )
    return write_stamp(
        folder, task, "real", digests, pinned=pinned, extra={"lockfile": str(lock.path.absolute())}
    )


def _key_of(url: str) -> str:
    """Object key of an official URL, to be joined onto a mirror (keeps the bucket's folder layout)."""
    return urlparse(url).path.lstrip("/")


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def generate_embedded(task: str, out_dir: str | Path, seed: int, cache_dir: str | Path) -> Path:
    """Write the embedded raw dataset of ``task`` (official names and formats) and its stamp."""
    spec = get_task(task)
    folder = Path(out_dir) / task
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    spec.generate_embedded(folder, EmbeddedContext(seed=seed, cache_dir=Path(cache_dir)))
    digests = {}
    for rf in spec.raw_files:
        path = folder / rf.name
        if not path.exists():
            raise RawDataError(f"embedded generator of {task} did not write {path}")
        digests[rf.name] = sha256_file(path)
    log.info("generated embedded %s in %.1f s", task, time.time() - t0)
    return write_stamp(folder, task, "embedded", digests, extra={"seed": seed})


def build_shards(
    task: str,
    stamp: str | Path,
    out_dir: str | Path,
    provenance: Mapping[str, Any] | None = None,
    allow_partial: bool = False,
) -> Path:
    """Read the raw files named by ``stamp`` with the task's reader and write shards plus manifest.

    Real data: the item counts must match the complete release's (:attr:`TaskSpec.real_counts`) unless
    ``allow_partial``; files not yet pinned in the lock file are pinned after they were read without error
    and their counts matched. The manifest records the checksums of the bytes actually read.
    """
    spec = get_task(task)
    raw = RawFolder.from_stamp(stamp)
    stamp_body = json.loads(Path(stamp).read_text())
    unlisted = [rf.name for rf in spec.raw_files if rf.name not in raw.checksums]
    if unlisted:
        raise RawDataError(
            f"{stamp} does not list {', '.join(unlisted)} (written by another version?); delete it and run "
            "the workflow again"
        )
    t0 = time.time()
    splits = read_splits(spec, raw)
    for rf in spec.raw_files:
        if rf.name not in raw.digests:  # a file the reader did not need: verified all the same
            raw.verify(rf.name)
    if raw.unverified:
        raise RawDataError(
            f"reader of {task} read {', '.join(sorted(raw.unverified))} from {raw.root}, which {stamp} does "
            "not list: add it to the task's raw_files"
        )
    for name in REQUIRED_SPLITS:
        if name not in splits or len(splits[name]) == 0:
            raise RawDataError(f"reader of {task} returned no {name!r} split from {raw.root}")
    log.info(
        "read %s (%s) in %.1f s: %s",
        task,
        raw.source,
        time.time() - t0,
        ", ".join(f"{k}={len(v)}" for k, v in splits.items()),
    )
    complete = check_counts(spec, splits, raw, allow_partial)
    pinned = _pin(spec, raw) if complete else set()
    normaliser = spec.fit_normaliser(splits) if spec.fit_normaliser else {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split_entries = {}
    for name, data in splits.items():
        split_entries[name] = write_split_shards(out, task, name, data, spec.items_per_shard)
        log.info(
            "wrote %s/%s: %d items in %d shard(s)", task, name, len(data), len(split_entries[name]["shards"])
        )
    raw_files = {}
    for rf in spec.raw_files:
        raw_files[rf.name] = {"sha256": raw.digests[rf.name], "size": (raw.root / rf.name).stat().st_size}
        if raw.lock is not None:
            raw_files[rf.name]["lock"] = "pinned" if rf.name in pinned else "not pinned (partial copy)"
    manifest = {
        "format": MANIFEST_FORMAT,
        "task": task,
        "source": raw.source,
        "input_shape": list(spec.input_shape),
        "layout": "channels_first",
        "output_kind": spec.output_kind,
        "num_outputs": spec.num_outputs,
        "normaliser": _jsonable(normaliser),
        "splits": split_entries,
        "provenance": {
            "raw_files": raw_files,
            "raw_dir": str(raw.root),
            **({"complete": complete} if raw.source == "real" else {}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {
                "nb360": nb360.__version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "h5py": h5py.__version__,
            },
            **({"seed": stamp_body["seed"]} if "seed" in stamp_body else {}),
            "config": dict(provenance or {}),
        },
    }
    return write_manifest(out, manifest)


def read_splits(spec: TaskSpec, raw: RawFolder) -> dict[str, SplitData]:
    """The task's reader on ``raw``. Whatever escapes it becomes one :class:`RawDataError` naming the raw
    file it was reading (:attr:`RawFolder.current`) and the fix, for every format alike."""
    try:
        return spec.read_raw(raw)
    except MemoryError:
        raise
    except Exception as e:
        if raw.current is None:
            raise  # failed before touching any file: not about the data
        raise RawDataError(_read_failure(spec, raw, e)) from e


def _read_failure(spec: TaskSpec, raw: RawFolder, e: Exception) -> str:
    path = raw.root / raw.current
    lock_note = ""
    if raw.lock is not None:
        lock_note = f"\nNothing was pinned in the lock file {raw.lock.path}."
    if isinstance(e, RawDataError):  # the reader's own check already names the file and the fix
        return f"{e}{lock_note}"
    if raw.source == "embedded":
        fix = f"The embedded generator wrote it: delete {raw.root} and run the workflow again."
    else:
        fix = (
            f"Delete it and put a good copy there (download it again by hand, or delete {raw.stamp} too so "
            "that the next run's fetch step downloads it), then run the workflow again."
        )
        if raw.lock is not None and raw.lock.get(raw.key(raw.current)) is not None:
            lock_note = (
                f"\nIts sha256 is the one pinned in {raw.lock.path}: if a fresh copy fails too, that pin is "
                "of a bad copy: remove the entry."
            )
    return (
        f"{path} could not be read ({type(e).__name__}: {e}): the file is truncated or corrupt, or not the "
        f"official {spec.title} file. {fix}{lock_note}"
    )


def check_counts(
    spec: TaskSpec, splits: Mapping[str, SplitData], raw: RawFolder, allow_partial: bool
) -> bool:
    """Whether the items per split are those of the complete official release (always true for embedded data).

    A difference stops the build (a file cut short can read without error: a tar cut at a member boundary),
    unless ``allow_partial``: then it is logged and ``False`` returned.
    """
    if raw.source != "real":
        return True
    counts = spec.real_counts
    if counts.unchecked:
        log.info("%s: item counts not checked%s: %s", spec.name, _except(counts.splits), counts.unchecked)
    found = {name: len(splits[name]) if name in splits else 0 for name in counts.splits}
    if found == dict(counts.splits):
        return True
    lines = "\n".join(
        f"  {name}: {found[name]:,} items, the complete release has {n:,}"
        for name, n in counts.splits.items()
    )
    files = ", ".join(str(raw.root / rf.name) for rf in spec.raw_files)
    msg = (
        f"task {spec.name}: the raw files are not the complete official release:\n{lines}\n"
        f"(documented in {counts.source}). A file may be cut short (a tar cut at a member boundary reads "
        f"without error) or be another version: fetch {files} again. For a deliberately partial copy set "
        "data.allow_partial: true in the configuration; its shards are then built, but its files are not "
        "pinned in the lock file."
    )
    if not allow_partial:
        raise RawDataError(msg)
    log.warning("%s\ndata.allow_partial is set: building the shards of this partial copy.", msg)
    return False


def _except(splits: Mapping[str, int]) -> str:
    return f" except {', '.join(splits)}" if splits else ""


def _pin(spec: TaskSpec, raw: RawFolder) -> set[str]:
    """Pin the files just read (those not pinned yet); return the names now pinned."""
    if raw.lock is None:
        return set()
    raw.lock.pin(
        {
            raw.key(rf.name): (raw.digests[rf.name], (raw.root / rf.name).stat().st_size, rf.url or "local")
            for rf in spec.raw_files
        }
    )
    return {rf.name for rf in spec.raw_files}


def _jsonable(obj: Any) -> Any:
    """Normaliser statistics may be arrays; the manifest stores them as (nested) lists."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


__all__ = [
    "STAMP_NAME",
    "SplitData",
    "build_shards",
    "check_counts",
    "fetch_real",
    "generate_embedded",
    "read_splits",
]
