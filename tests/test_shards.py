import gc
import json
import weakref

import h5py
import numpy as np
import pytest
import torch

from nb360.data.loader import EpochBatchSampler, ShardDataset, _LazyRng, make_loader
from nb360.data.shards import (
    MANIFEST_FORMAT,
    ShardError,
    SplitData,
    read_manifest,
    verify_shards,
    write_manifest,
    write_split_shards,
)


def _toy(tmp_path, n=10, per_shard=4):
    data = SplitData(
        items={"x": np.arange(n * 2, dtype=np.float32).reshape(n, 1, 2), "y": np.arange(n)},
        ragged={"sig": [np.full(i + 1, i, np.float32) for i in range(n)]},
        tables={"win": np.array([[i, j] for i in range(n) for j in range(i % 3)], dtype=np.int64)},
    )
    out = tmp_path / "satellite"
    entry = write_split_shards(out, "satellite", "train", data, per_shard)
    manifest = {
        "format": MANIFEST_FORMAT,
        "task": "satellite",
        "splits": {"train": entry},
        "normaliser": {},
    }
    return data, write_manifest(out, manifest)


def test_shards_round_trip_with_ragged_and_tables(tmp_path):
    _, mpath = _toy(tmp_path)
    manifest = read_manifest(mpath)
    verify_shards(manifest)
    entry = manifest["splits"]["train"]
    assert [s["n_items"] for s in entry["shards"]] == [4, 4, 2]
    with h5py.File(tmp_path / "satellite" / "train-00001.h5") as f:  # readable with h5py alone
        off = f["ragged/sig/offsets"][()]
        assert f["ragged/sig/values"][off[1] : off[2]].tolist() == [5.0] * 6  # item 5 = local item 1
        assert (f["tables/win"][:, 0] < 4).all()
        assert f["items/y"][()].tolist() == [4, 5, 6, 7]
    assert entry["datasets"]["x"] == {"kind": "item", "dtype": "float32", "shape": [None, 1, 2]}


@pytest.mark.parametrize("in_memory", [True, False])
def test_dataset_batches_follow_index_order_across_shards(tmp_path, in_memory):
    _, mpath = _toy(tmp_path)
    ds = ShardDataset(mpath, ["train"], train=False, in_memory=in_memory)
    b = ds.batch(np.array([9, 0, 5, 5, 3]))
    assert b["y"].tolist() == [9, 0, 5, 5, 3]
    assert b["x"].dtype == torch.float32 and b["x"].shape == (5, 1, 2)


def test_loader_is_deterministic_and_resumable(tmp_path):
    _, mpath = _toy(tmp_path)
    a = [b["y"].tolist() for b in make_loader(mpath, ["train"], 3, train=True, seed=7)]
    b = [b["y"].tolist() for b in make_loader(mpath, ["train"], 3, train=True, seed=7)]
    assert a == b and sorted(y for batch in a for y in batch) == list(range(10))
    sampler = EpochBatchSampler(10, 3, shuffle=True, seed=7)
    first, second = list(sampler), list(sampler)
    sampler.set_epoch(1)
    assert [k for k, _ in second] == [(1, i) for i in range(4)]
    assert [i.tolist() for _, i in list(sampler)] == [i.tolist() for _, i in second]
    assert [i.tolist() for _, i in first] != [i.tolist() for _, i in second]


def test_truncated_shard_is_named(tmp_path):
    _, mpath = _toy(tmp_path)
    shard = tmp_path / "satellite" / "train-00001.h5"
    shard.write_bytes(shard.read_bytes()[:500])
    with pytest.raises(ShardError, match=r"train-00001\.h5 has 500 bytes .*truncated"):
        ShardDataset(mpath, ["train"], train=True)


def test_corrupt_shard_fails_checksum(tmp_path):
    _, mpath = _toy(tmp_path)
    shard = tmp_path / "satellite" / "train-00000.h5"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=r"train-00000\.h5 does not match its sha256"):
        verify_shards(read_manifest(mpath))


def test_missing_shard_and_manifest_are_named(tmp_path):
    _, mpath = _toy(tmp_path)
    (tmp_path / "satellite" / "train-00002.h5").unlink()
    with pytest.raises(ShardError, match=r"train-00002\.h5 listed in the manifest is missing"):
        ShardDataset(mpath, ["train"], train=True)
    with pytest.raises(ShardError, match=r"nope[/\\]manifest\.json does not exist"):
        read_manifest(tmp_path / "nope" / "manifest.json")
    with pytest.raises(ShardError, match="split 'val' is not in"):
        ShardDataset(mpath, ["val"], train=False)


def test_stale_shards_are_removed_and_manifest_written_last(tmp_path):
    _, mpath = _toy(tmp_path)
    stale = tmp_path / "satellite" / "old-00000.h5"
    stale.write_bytes(b"x")
    manifest = json.loads(mpath.read_text())
    write_manifest(mpath.parent, manifest)
    assert not stale.exists()
    assert not list(mpath.parent.glob(".*tmp*"))


def test_sampler_order_is_the_same_with_the_full_pool_given():
    a = EpochBatchSampler(10, 3, shuffle=True, seed=7)
    b = EpochBatchSampler(10, 3, shuffle=True, seed=7, pool=np.arange(10))
    for _ in range(3):
        assert [(k, i.tolist()) for k, i in a] == [(k, i.tolist()) for k, i in b]


def test_lazy_rng_draws_as_a_generator_and_only_when_used():
    lazy = _LazyRng((7, 2, 5))
    assert "_gen" not in lazy.__dict__  # nothing seeded until a batch draws
    gen = np.random.default_rng([7, 2, 5])
    got = [lazy.integers(0, 100), lazy.random(), lazy.integers(0, 100, size=3).tolist(), lazy.uniform()]
    assert got == [gen.integers(0, 100), gen.random(), gen.integers(0, 100, size=3).tolist(), gen.uniform()]
    with pytest.raises(AttributeError):
        lazy.__deepcopy__  # noqa: B018 (probes for special methods are not generator attributes)


def test_loader_keeps_no_reference_to_a_batch_it_handed_out(tmp_path):
    _, mpath = _toy(tmp_path)
    it = iter(make_loader(mpath, ["train"], 3, train=True, seed=7))
    batch = next(it)
    gone = weakref.ref(batch["x"])
    del batch
    gc.collect()
    assert gone() is None  # so the next batch can reuse its memory instead of faulting in fresh pages
    assert next(it)["x"].shape == (3, 1, 2)
