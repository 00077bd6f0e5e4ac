"""A flipped bit in a shard is an error naming the file, on every read path, never a different number."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from nb360.data.loader import ShardDataset, make_loader
from nb360.data.shards import (
    MANIFEST_FORMAT,
    SHARD_FORMAT,
    ShardArrays,
    ShardError,
    SplitData,
    open_shards,
    read_manifest,
    write_manifest,
    write_split_shards,
)

N = 40


def _build(tmp_path: Path) -> Path:
    """One training shard of N items: float32 inputs (N, 3, 4), int64 labels, a ragged field, a table."""
    rng = np.random.default_rng(0)
    data = SplitData(
        items={"x": rng.normal(size=(N, 3, 4)).astype(np.float32) + 2.0, "y": np.arange(N, dtype=np.int64)},
        ragged={"sig": [np.full(i % 5 + 1, i, np.float32) for i in range(N)]},
        tables={"win": np.array([[i, i % 3] for i in range(N)], dtype=np.int64)},
    )
    out = tmp_path / "satellite"
    entry = write_split_shards(out, "satellite", "train", data, items_per_shard=N)
    manifest = {"format": MANIFEST_FORMAT, "task": "satellite", "splits": {"train": entry}, "normaliser": {}}
    return write_manifest(out, manifest)


def _byte_of(path: Path, dataset: str, row: int, flat: int = 0, byte: int = 0) -> int:
    """File offset of byte ``byte`` of element ``flat`` (C order within the row) of row ``row``."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        rows = ds.chunks[0]
        info = ds.id.get_chunk_info_by_coord((row // rows * rows,) + (0,) * (ds.ndim - 1))
        row_elems = int(np.prod(ds.chunks[1:], dtype=np.int64))
        # Fletcher-32 leaves the chunk's bytes as they are (its checksum is appended after them).
        return info.byte_offset + ((row % rows) * row_elems + flat) * ds.dtype.itemsize + byte


def _flip(path: Path, offset: int, mask: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= mask
    path.write_bytes(bytes(raw))  # same size: only the checksums can tell


# (dataset, row, element, byte, bit mask, what the flip does to the value)
FLIPS = {
    # Label 6 -> 7: a different class, silently, without a checksum.
    "label": ("items/y", 6, 0, 0, 0x01),
    # float32 little-endian: byte 3 holds the sign and the top 7 exponent bits; 0x01 there is exponent bit 1,
    # i.e. the value is scaled by 4 or 1/4.
    "exponent": ("items/x", 11, 5, 3, 0x01),
}


@pytest.fixture(params=sorted(FLIPS))
def corrupt(tmp_path, request):
    mpath = _build(tmp_path)
    shard = mpath.parent / "train-00000.h5"
    name, row, flat, byte, mask = FLIPS[request.param]
    with h5py.File(shard, "r") as f:
        before = f[name][row].reshape(-1)[flat]
    size = shard.stat().st_size
    _flip(shard, _byte_of(shard, name, row, flat, byte), mask)
    assert shard.stat().st_size == size
    with h5py.File(shard, "r") as f:  # the flip hit the value we meant (read raw, checksum filter off)
        ds = f[name]
        info = ds.id.get_chunk_info(0)
        raw = ds.id.read_direct_chunk((0,) * ds.ndim)[1][: info.size - 4]
        after = np.frombuffer(raw, ds.dtype).reshape((-1, *ds.chunks[1:]))[row].reshape(-1)[flat]
    assert after != before
    return mpath, shard


def _names_file_and_fix(shard: Path) -> str:
    return rf"shard {shard}.*delete {shard.parent / 'manifest.json'} and rerun the workflow .*--configfile"


def test_in_memory_load_fails_on_sha256(corrupt):
    mpath, shard = corrupt
    with pytest.raises(ShardError, match=_names_file_and_fix(shard)) as e:
        open_shards(read_manifest(mpath), ["train"], in_memory=True)
    assert "sha256" in str(e.value) and "make data" not in str(e.value)


def test_in_memory_load_without_manifest_fails_on_fletcher32(corrupt):
    _, shard = corrupt
    with pytest.raises(ShardError, match=_names_file_and_fix(shard)) as e:
        ShardArrays(shard, in_memory=True)
    assert "checksums" in str(e.value) and "sha256" not in str(e.value)  # HDF5's own check caught it


def test_streamed_read_fails(corrupt):
    mpath, shard = corrupt
    ds = ShardDataset(mpath, ["train"], train=False, in_memory=False)  # opening reads only metadata
    with pytest.raises(ShardError, match=_names_file_and_fix(shard)):
        ds.batch(np.arange(N))


@pytest.mark.parametrize("in_memory", [None, False])
def test_loader_fails_before_the_first_batch_is_used(corrupt, in_memory):
    mpath, shard = corrupt
    with pytest.raises(ShardError, match=_names_file_and_fix(shard)):
        for _ in make_loader(mpath, ["train"], batch_size=8, train=True, in_memory=in_memory):
            pytest.fail("a batch came out of a corrupt shard")


def test_dataloader_worker_fails(corrupt):
    mpath, shard = corrupt
    loader = make_loader(mpath, ["train"], batch_size=8, train=False, in_memory=False, num_workers=1)
    with pytest.raises(ShardError, match=rf"shard {shard}"):
        next(iter(loader))


def test_every_dataset_has_chunk_checksums(tmp_path):
    mpath = _build(tmp_path)
    with h5py.File(mpath.parent / "train-00000.h5", "r") as f:
        assert f.attrs["format"] == SHARD_FORMAT.encode()
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert sorted(names) == [
            "items/x",
            "items/y",
            "ragged/sig/offsets",
            "ragged/sig/values",
            "tables/win",
        ]
        for name in names:
            assert f[name].chunks is not None and f[name].fletcher32, name


def test_empty_split_is_written_and_read(tmp_path):
    data = SplitData(
        items={"x": np.zeros((0, 2), np.float32)}, ragged={"s": []}, tables={"t": np.zeros((0, 2), np.int64)}
    )
    entry = write_split_shards(tmp_path / "satellite", "satellite", "test", data, items_per_shard=4)
    shard = ShardArrays(tmp_path / "satellite" / "test-00000.h5", entry["shards"][0], in_memory=False)
    assert shard.n_items == 0 and shard.items("x").shape == (0, 2) and shard.table("t").shape == (0, 2)


@pytest.mark.parametrize("in_memory", [False, True])
def test_any_flipped_byte_is_an_error_or_harmless(tmp_path, in_memory):
    """Flip a bit in every third byte of a small shard in turn (the two modes take different thirds; every
    checksummed block is longer than 3 bytes): reading all its content either raises ShardError or returns
    exactly the original values (a byte HDF5 never uses); never different numbers. Without the manifest's
    sha256, so that only HDF5's checksums (chunks and metadata) can catch it."""
    data = SplitData(
        items={"x": np.linspace(1, 2, 12, dtype=np.float32).reshape(4, 3), "y": np.arange(4)},
        ragged={"s": [np.full(i + 1, i, np.float32) for i in range(4)]},
        tables={"t": np.array([[0, 1], [3, 2]])},
    )
    write_split_shards(tmp_path / "satellite", "satellite", "train", data, items_per_shard=4)
    shard = tmp_path / "satellite" / "train-00000.h5"
    good = shard.read_bytes()

    def read_all() -> list[np.ndarray]:
        s = ShardArrays(shard, in_memory=in_memory)
        try:
            out = [s.items("x"), s.items("y"), s.table("t"), *(s.ragged("s", i) for i in range(4))]
            return [*out, np.array([s.n_items])]
        finally:
            if s._file is not None:
                s._file.close()

    expected = read_all()
    silent = []
    for pos in range(int(in_memory), len(good), 3):
        bad = bytearray(good)
        bad[pos] ^= 0x10
        shard.write_bytes(bytes(bad))
        try:
            got = read_all()
        except ShardError:
            continue
        if any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(got, expected, strict=True)):
            silent.append(pos)
    assert silent == []


def test_previous_format_is_rejected_with_rebuild(tmp_path):
    mpath = _build(tmp_path)
    manifest = json.loads(mpath.read_text())
    manifest["format"] = "nb360-manifest/1"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=rf"{mpath} has format 'nb360-manifest/1'.*rebuild: delete {mpath}"):
        read_manifest(mpath)
    # A version-1 shard (no checksums, variable-length string attributes) listed by a current manifest.
    shard = mpath.parent / "train-00000.h5"
    with h5py.File(shard, "w") as f:
        f.attrs["format"] = "nb360-shard/1"
        f.attrs["n_items"] = N
        f.create_dataset("items/y", data=np.arange(N))
    with pytest.raises(ShardError, match=rf"{shard} has format 'nb360-shard/1'.*older version: rebuild"):
        ShardArrays(shard, in_memory=False)


def test_missing_manifest_fix_names_the_workflow_not_make(tmp_path):
    with pytest.raises(ShardError, match=r"rerun|run the workflow") as e:
        read_manifest(tmp_path / "satellite" / "manifest.json")
    assert "--configfile" in str(e.value) and "make data" not in str(e.value)
