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
    verify_against_lock,
    write_stamp,
)
from nb360.data.shards import MANIFEST_FORMAT, SplitData, sha256_file, write_manifest, write_split_shards
from nb360.tasks import DRIVE_FOLDER, EmbeddedContext, get_task

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

    Files already present (e.g. fetched by hand from the Google Drive folder) are used as they are and
    verified against the lock file; missing ones are downloaded from ``mirror`` (default: each file's
    official URL). Whatever cannot be had is listed in one error with where to get it.
    """
    spec = get_task(task)
    folder = Path(raw_dir) / task
    folder.mkdir(parents=True, exist_ok=True)
    lock = LockFile(lockfile)
    digests: dict[str, str] = {}
    missing: list[str] = []
    for rf in spec.raw_files:
        path = folder / rf.name
        key = f"{task}/{rf.name}"
        if not path.exists() and allow_download and rf.url is not None:
            url = rf.url if mirror is None else urljoin(mirror.rstrip("/") + "/", _key_of(rf.url))
            entry = lock.get(key)
            try:
                download(url, path, expected_sha256=entry["sha256"] if entry else None, options=options)
            except DownloadError as e:
                log.error("%s", e)
        if not path.exists():
            note = f"; {rf.note}" if rf.note else ""
            missing.append(f"  {path}  ({_size(rf.size)}; {rf.url or 'no direct URL'}{note})")
            continue
        log.info("verifying %s", path)
        digests[rf.name] = verify_against_lock(lock, key, path, origin=rf.url or "local")
    if missing:
        raise RawDataError(
            f"task {task}: {len(missing)} official raw file(s) are missing:\n"
            + "\n".join(missing)
            + f"\nDownload them by hand from the benchmark's Google Drive folder {DRIVE_FOLDER} "
            f"(or the old S3 bucket) and put them under {folder}/ with exactly these names, then run the "
            f"workflow again. They will be verified against the lock file {lock.path} (or recorded there on "
            "first use)."
        )
    return write_stamp(folder, task, "real", digests)


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
    task: str, stamp: str | Path, out_dir: str | Path, provenance: Mapping[str, Any] | None = None
) -> Path:
    """Read the raw files named by ``stamp`` with the task's reader and write shards plus manifest."""
    spec = get_task(task)
    raw = RawFolder.from_stamp(stamp)
    t0 = time.time()
    splits = spec.read_raw(raw)
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
    normaliser = spec.fit_normaliser(splits) if spec.fit_normaliser else {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split_entries = {}
    for name, data in splits.items():
        split_entries[name] = write_split_shards(out, task, name, data, spec.items_per_shard)
        log.info(
            "wrote %s/%s: %d items in %d shard(s)", task, name, len(data), len(split_entries[name]["shards"])
        )
    stamp_body = json.loads(Path(stamp).read_text())
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
            "raw_files": stamp_body["files"],
            "raw_dir": str(raw.root),
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


__all__ = ["STAMP_NAME", "SplitData", "build_shards", "fetch_real", "generate_embedded"]
