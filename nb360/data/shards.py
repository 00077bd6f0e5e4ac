"""HDF5 shards: the one on-disk format between preprocessing and training.

Layout (readable with h5py alone; see the README, section "Shard format"):

``<shard_dir>/<task>/manifest.json`` lists, per split, the shard files ``<split>-00000.h5`` ... with their
item counts, sizes and sha256, plus the task's normaliser statistics and the provenance of the data.

One shard file holds ``n_items`` items of one split:

* ``/items/<name>``: arrays with leading dimension ``n_items`` (one row per item);
* ``/ragged/<name>/values`` and ``/ragged/<name>/offsets``: variable-length items; item ``i`` is
  ``values[offsets[i]:offsets[i + 1]]`` (concatenated along axis 0);
* ``/tables/<name>``: integer tables with their own length whose **first column is an item index** into
  this shard (e.g. ECG windows: item, start).

Attributes on the root: ``format``, ``task``, ``split``, ``shard``, ``n_items``.
Every file is written under a temporary name and renamed when complete; the manifest is written last, so a
killed job never leaves a manifest that points at missing or partial shards.

Integrity: a flipped bit must be an error, never a silently different number. Every dataset is chunked with
HDF5's Fletcher-32 filter, which HDF5 verifies on every chunk it reads (in-memory loads, streamed reads,
DataLoader workers alike); the file is written in the HDF5 1.10 format, whose superblock, object headers
(attributes, links, layouts) and chunk indexes carry their own checksums; string attributes are fixed-length,
so they live in the checksummed object header rather than in the (unchecked) global heap. A shard loaded into
memory is also hashed once and compared with the sha256 in the manifest. HDF5's bare checksum errors are
re-raised as :class:`ShardError` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Version 2: Fletcher-32 on every dataset, HDF5 1.10 file format (checksummed metadata), fixed-length string
# attributes. Version-1 files carry no checksums and are rejected (rebuild).
SHARD_FORMAT = "nb360-shard/2"
MANIFEST_FORMAT = "nb360-manifest/2"
MANIFEST_NAME = "manifest.json"
# Target bytes per HDF5 chunk for row datasets: a chunk never spans more than a handful of items, so a
# random read of one item decompresses (we do not compress) and reads little besides it.
_CHUNK_TARGET_BYTES = 256 * 1024
# HDF5 file-format bounds: 1.10 objects checksum all their metadata; pinned so files do not change with h5py.
_LIBVER = ("v110", "v110")


class ShardError(RuntimeError):
    """A shard or manifest is missing, truncated or corrupt. The message names the file and the fix."""


def rebuild_hint(shard_dir: str | os.PathLike) -> str:
    """The fix for a bad shard or manifest of the task in ``shard_dir``: rebuild with the user's own command.

    (Not ``make data``: that ignores a config overlay, and would build the shards somewhere else.)
    """
    manifest = Path(shard_dir) / MANIFEST_NAME
    return (
        f"delete {manifest} and rerun the workflow with the same command and --configfile you used; "
        f"Snakemake then rebuilds {manifest} and the shards next to it"
    )


@dataclass
class SplitData:
    """The content of one split as a raw reader returns it, before sharding."""

    items: dict[str, np.ndarray] = field(default_factory=dict)
    ragged: dict[str, list[np.ndarray]] = field(default_factory=dict)
    tables: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        lengths = {len(v) for v in self.items.values()} | {len(v) for v in self.ragged.values()}
        if len(lengths) > 1:
            raise ValueError(f"items and ragged fields disagree on the number of items: {sorted(lengths)}")
        return lengths.pop() if lengths else 0

    def select(self, idx: np.ndarray) -> SplitData:
        """The items ``idx`` (in that order), with tables re-based onto the new item numbering."""
        idx = np.asarray(idx, dtype=np.int64)
        new_pos = np.full(len(self), -1, dtype=np.int64)
        new_pos[idx] = np.arange(len(idx))
        tables = {}
        for name, t in self.tables.items():
            keep = new_pos[t[:, 0]] >= 0
            t2 = t[keep].copy()
            t2[:, 0] = new_pos[t2[:, 0]]
            tables[name] = t2
        return SplitData(
            items={k: v[idx] for k, v in self.items.items()},
            ragged={k: [v[i] for i in idx] for k, v in self.ragged.items()},
            tables=tables,
        )


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary name next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left over when the write or rename failed


def _row_chunks(arr: np.ndarray) -> tuple[int, ...]:
    """Whole rows per chunk, about _CHUNK_TARGET_BYTES each (at least one row; one for empty arrays)."""
    if arr.ndim == 0:
        raise ValueError("shard datasets have a leading item (or row) dimension; got a scalar")
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
    rows = int(max(1, min(len(arr), _CHUNK_TARGET_BYTES // row_bytes)))
    return (rows, *(max(1, d) for d in arr.shape[1:]))


def _create_dataset(group: h5py.Group, name: str, arr: np.ndarray) -> None:
    """A chunked dataset with Fletcher-32 checksums (HDF5 filters need chunking, even for small arrays)."""
    arr = np.ascontiguousarray(arr)
    # A chunk may not exceed a fixed dimension of size 0: empty dimensions are declared extendible.
    maxshape = tuple(None if d == 0 else d for d in arr.shape)
    group.create_dataset(name, data=arr, chunks=_row_chunks(arr), maxshape=maxshape, fletcher32=True)


def _attr_value(value: Any) -> Any:
    # Fixed-length bytes: stored in the (checksummed) object header, unlike h5py's variable-length str.
    return np.bytes_(value.encode()) if isinstance(value, str) else value


def _decoded_attrs(attrs: h5py.AttributeManager) -> dict[str, Any]:
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}


def write_shard(path: str | os.PathLike, data: SplitData, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Write one shard atomically; return its manifest entry (file, n_items, bytes, sha256)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = len(data)
    with h5py.File(tmp, "w", libver=_LIBVER) as f:
        f.attrs["format"] = _attr_value(SHARD_FORMAT)
        f.attrs["n_items"] = n
        for k, v in attrs.items():
            f.attrs[k] = _attr_value(v)
        g = f.create_group("items")
        for name, arr in data.items.items():
            _create_dataset(g, name, arr)
        g = f.create_group("ragged")
        for name, seq in data.ragged.items():
            lengths = np.array([len(a) for a in seq], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            values = np.concatenate(seq, axis=0) if seq else np.zeros((0,), np.float32)
            sub = g.create_group(name)
            _create_dataset(sub, "values", values)
            _create_dataset(sub, "offsets", offsets)
        g = f.create_group("tables")
        for name, t in data.tables.items():
            t = np.asarray(t, dtype=np.int64)
            if t.ndim != 2 or (len(t) and (t[:, 0].min() < 0 or t[:, 0].max() >= n)):
                raise ValueError(f"table {name!r} must be 2D with an item index (0..{n - 1}) in column 0")
            _create_dataset(g, name, t)
    os.replace(tmp, path)
    return {"file": path.name, "n_items": n, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _describe(data: SplitData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, arr in data.items.items():
        out[name] = {"kind": "item", "dtype": str(arr.dtype), "shape": [None, *arr.shape[1:]]}
    for name, seq in data.ragged.items():
        first = seq[0] if seq else np.zeros((0,))
        out[name] = {"kind": "ragged", "dtype": str(first.dtype), "shape": [None, *first.shape[1:]]}
    for name, t in data.tables.items():
        out[name] = {"kind": "table", "dtype": "int64", "shape": [None, int(t.shape[1])]}
    return out


def write_split_shards(
    out_dir: str | os.PathLike, task: str, split: str, data: SplitData, items_per_shard: int
) -> dict[str, Any]:
    """Cut a split into shard files; return the manifest entry of the split."""
    out_dir = Path(out_dir)
    n = len(data)
    shards = []
    starts = list(range(0, n, items_per_shard)) or [0]
    for k, start in enumerate(starts):
        part = data.select(np.arange(start, min(n, start + items_per_shard)))
        shards.append(
            write_shard(out_dir / f"{split}-{k:05d}.h5", part, {"task": task, "split": split, "shard": k})
        )
    return {"n_items": n, "datasets": _describe(data), "shards": shards}


def write_manifest(out_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write the manifest last and atomically, and remove shard files it does not list (stale runs)."""
    out_dir = Path(out_dir)
    listed = {s["file"] for sp in manifest["splits"].values() for s in sp["shards"]}
    for p in out_dir.glob("*.h5"):
        if p.name not in listed:
            p.unlink()
    path = out_dir / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise ShardError(
            f"shard manifest {path} does not exist; build the shards first: run the workflow with the "
            f"command and --configfile you use (Snakemake builds {path})"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"shard manifest {path} is not valid JSON ({e}); {rebuild_hint(path.parent)}") from e
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != MANIFEST_FORMAT:
        if isinstance(fmt, str) and fmt.startswith("nb360-manifest/"):
            raise ShardError(
                f"shard manifest {path} has format {fmt!r}, this version reads {MANIFEST_FORMAT!r} "
                f"(shards with per-chunk checksums); rebuild: {rebuild_hint(path.parent)}"
            )
        raise ShardError(f"{path} is not an nb360 manifest (format {fmt!r})")
    manifest["_dir"] = str(path.parent)
    return manifest


def verify_shards(manifest: Mapping[str, Any], checksum: bool = True) -> None:
    """Check every shard of a manifest exists with its recorded size (and sha256)."""
    root = Path(manifest["_dir"])
    for split in manifest["splits"].values():
        for entry in split["shards"]:
            _check_shard_file(root / entry["file"], entry, checksum=checksum)


def _check_shard_file(path: Path, entry: Mapping[str, Any], checksum: bool) -> None:
    fix = rebuild_hint(path.parent)
    if not path.exists():
        raise ShardError(f"shard {path} listed in the manifest is missing; {fix}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ShardError(
            f"shard {path} has {size} bytes but the manifest records {entry['bytes']} "
            f"(truncated or replaced); {fix}"
        )
    if checksum and sha256_file(path) != entry["sha256"]:
        raise ShardError(f"shard {path} does not match its sha256 in the manifest (corrupt); {fix}")


def _members(group: h5py.Group) -> dict[str, Any]:
    # Not group.items(): h5py turns a member that fails to open (e.g. a bad header checksum) into None.
    return {name: group[name] for name in group}


def _unreadable(path: Path, err: BaseException) -> ShardError:
    """A ShardError for an HDF5 error while reading ``path`` (h5py's messages do not name the file)."""
    return ShardError(
        f"shard {path} cannot be read, HDF5 says: {err}; every chunk and all metadata of a shard carry "
        f"checksums, so the file is damaged (or is not a shard of this layout); {rebuild_hint(path.parent)}"
    )


class ShardArrays:
    """Read access to one shard, held in memory or streamed from the HDF5 file.

    Streamed shards open their file lazily in the process that reads (h5py handles do not survive
    pickling or forking), so a dataset built on them can be used by DataLoader workers. Every read is
    checked: a shard held in memory is hashed against the manifest's sha256 (when given ``entry``), and HDF5
    verifies each chunk's Fletcher-32 checksum as it reads it; a failure raises :class:`ShardError`.
    """

    def __init__(
        self, path: str | os.PathLike, entry: Mapping[str, Any] | None = None, in_memory: bool = True
    ):
        self.path = Path(path)
        if entry is not None:
            _check_shard_file(self.path, entry, checksum=False)
        elif not self.path.exists():
            raise ShardError(f"shard {self.path} does not exist")
        self.in_memory = in_memory
        self._file: h5py.File | None = None
        self._mem: dict[str, Any] | None = None
        source: str | io.BytesIO = str(self.path)
        if in_memory:
            # The whole file is read anyway: hash the very bytes that are parsed (one read, no window
            # between the check and the use).
            raw = self.path.read_bytes()
            if entry is not None and hashlib.sha256(raw).hexdigest() != entry["sha256"]:
                raise ShardError(
                    f"shard {self.path} does not match its sha256 in the manifest (corrupt); "
                    f"{rebuild_hint(self.path.parent)}"
                )
            source = io.BytesIO(raw)
        try:
            with h5py.File(source, "r") as f:
                self.attrs = _decoded_attrs(f.attrs)
                if self.attrs.get("format") != SHARD_FORMAT:
                    raise ShardError(
                        f"shard {self.path} has format {self.attrs.get('format')!r}, this version reads "
                        f"{SHARD_FORMAT!r} (files with per-chunk checksums); it was written by an older "
                        f"version: rebuild: {rebuild_hint(self.path.parent)}"
                    )
                self.n_items = int(self.attrs["n_items"])
                ragged = _members(f["ragged"])
                if in_memory:
                    self._mem = {
                        "items": {k: v[()] for k, v in _members(f["items"]).items()},
                        "ragged": {k: (g["values"][()], g["offsets"][()]) for k, g in ragged.items()},
                        "tables": {k: v[()] for k, v in _members(f["tables"]).items()},
                    }
                    self._ragged_offsets = {k: v[1] for k, v in self._mem["ragged"].items()}
                    self._tables = self._mem["tables"]
                else:
                    self._ragged_offsets = {k: g["offsets"][()] for k, g in ragged.items()}
                    self._tables = {k: v[()] for k, v in _members(f["tables"]).items()}
        except (OSError, KeyError, ValueError) as e:
            raise _unreadable(self.path, e) from e

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def _h5(self) -> h5py.File:
        if self._file is None:
            # A larger chunk cache than HDF5's 1 MiB default keeps recently read chunks of every dataset.
            try:
                self._file = h5py.File(self.path, "r", rdcc_nbytes=64 * 1024 * 1024, rdcc_nslots=10007)
            except (OSError, KeyError) as e:
                raise _unreadable(self.path, e) from e
        return self._file

    @property
    def item_names(self) -> list[str]:
        if self._mem is not None:
            return list(self._mem["items"])
        try:
            return list(self._h5()["items"])
        except (OSError, KeyError) as e:  # h5py: KeyError when an object header fails
            raise _unreadable(self.path, e) from e

    def items(self, name: str, idx: np.ndarray | slice | None = None) -> np.ndarray:
        """Rows ``idx`` of item dataset ``name`` (any order; duplicates allowed)."""
        if self._mem is not None:
            arr = self._mem["items"][name]
            return arr if idx is None else arr[idx]
        try:
            ds = self._h5()["items"][name]
            if idx is None or isinstance(idx, slice):
                return ds[idx if idx is not None else ()]
            idx = np.asarray(idx)
            uniq, inverse = np.unique(idx, return_inverse=True)
            # h5py fancy selections must be increasing; contiguous runs read as one slice.
            if len(uniq) and uniq[-1] - uniq[0] + 1 == len(uniq):
                block = ds[int(uniq[0]) : int(uniq[-1]) + 1]
            else:
                block = ds[uniq]
        except (OSError, KeyError) as e:  # e.g. a chunk that fails its Fletcher-32 checksum
            raise _unreadable(self.path, e) from e
        return block[inverse]

    def ragged(self, name: str, i: int) -> np.ndarray:
        off = self._ragged_offsets[name]
        a, b = int(off[i]), int(off[i + 1])
        if self._mem is not None:
            return self._mem["ragged"][name][0][a:b]
        try:
            return self._h5()["ragged"][name]["values"][a:b]
        except (OSError, KeyError) as e:  # h5py: KeyError when an object header fails
            raise _unreadable(self.path, e) from e

    def ragged_length(self, name: str, i: int) -> int:
        off = self._ragged_offsets[name]
        return int(off[i + 1] - off[i])

    def table(self, name: str) -> np.ndarray:
        return self._tables[name]

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size


def open_shards(
    manifest: Mapping[str, Any], splits: Sequence[str], in_memory: bool = True
) -> list[ShardArrays]:
    """Every shard of ``splits`` (size-checked against the manifest; sha256-checked when held in memory)."""
    return [
        ShardArrays(path, entry, in_memory=in_memory) for path, entry in iter_split_shards(manifest, splits)
    ]


def iter_split_shards(manifest: Mapping[str, Any], splits: Sequence[str]) -> Iterator[tuple[str, Mapping]]:
    root = Path(manifest["_dir"])
    for split in splits:
        if split not in manifest["splits"]:
            raise ShardError(
                f"split {split!r} is not in {root / MANIFEST_NAME} (has: {', '.join(manifest['splits'])})"
            )
        for entry in manifest["splits"][split]["shards"]:
            yield str(root / entry["file"]), entry
