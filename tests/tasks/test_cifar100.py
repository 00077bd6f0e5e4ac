import gzip
import io
import json
import os
import pickle
import re
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from nb360.data.pipeline import generate_embedded
from nb360.data.pypi import fetch, list_members, read_member
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.safe_pickle import UnsafePickleError, safe_loads
from nb360.data.shards import open_shards, sha256_file
from nb360.tasks import BatchContext, get_task
from nb360.tasks.cifar100 import (
    EMBEDDED_TEST,
    EMBEDDED_TRAIN,
    FOOLBOX_WHEEL,
    MEAN,
    MEMBER_DIR,
    STD,
    TARBALL,
    augment,
)

TASK = "cifar100"


@pytest.fixture(scope="module")
def splits(embedded):
    return embedded.read(TASK)


def _members(path):
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_reader_shapes_dtypes_and_splits(splits):
    n_val = EMBEDDED_TRAIN // 5
    assert {k: len(v) for k, v in splits.items()} == {
        "train": EMBEDDED_TRAIN - n_val,
        "val": n_val,
        "test": EMBEDDED_TEST,
    }
    for data in splits.values():
        x, y = data.items["x"], data.items["y"]
        assert x.shape[1:] == (3, 32, 32) and x.dtype == np.uint8
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 99
    # class-balanced train and val parts of the training file
    assert (np.bincount(splits["train"].items["y"], minlength=100) == (EMBEDDED_TRAIN - n_val) // 100).all()
    assert (np.bincount(splits["val"].items["y"], minlength=100) == n_val // 100).all()
    assert len(np.unique(splits["test"].items["y"])) == 100


def test_official_layout_and_validation_is_the_tail(embedded, splits):
    members = _members(embedded.raw_dir(TASK) / TARBALL)
    assert set(members) == {f"{MEMBER_DIR}/{m}" for m in ("train", "test", "meta")}
    train = safe_loads(members[f"{MEMBER_DIR}/train"], encoding="bytes")
    assert set(train) == {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"}
    assert train[b"data"].shape == (EMBEDDED_TRAIN, 3072) and train[b"data"].dtype == np.uint8
    meta = safe_loads(members[f"{MEMBER_DIR}/meta"], encoding="bytes")
    assert len(meta[b"fine_label_names"]) == 100 and len(meta[b"coarse_label_names"]) == 20
    n_val = EMBEDDED_TRAIN // 5
    np.testing.assert_array_equal(splits["val"].items["y"], train[b"fine_labels"][-n_val:])
    np.testing.assert_array_equal(splits["train"].items["x"][5], train[b"data"][5].reshape(3, 32, 32))


def test_real_cifar_images_pass_unchanged(pypi_cache, splits):
    # The first 20 test rows are foolbox's real CIFAR-100 test images with the labels in their file names:
    # checks the RGB plane order from writer through reader against independent PNG decoding.
    wheel = fetch(FOOLBOX_WHEEL, pypi_cache)
    names = sorted(n for n in list_members(wheel) if re.search(r"/cifar100_\d+_\d+\.png$", n))
    assert len(names) == 20
    x, y = splits["test"].items["x"], splits["test"].items["y"]
    for i, name in enumerate(names):
        png = np.asarray(Image.open(io.BytesIO(read_member(wheel, name))).convert("RGB"))
        np.testing.assert_array_equal(x[i], png.transpose(2, 0, 1))
        assert y[i] == int(name.rsplit("_", 1)[1][:-4])


def _rewrite_tarball(src_dir, dst_dir, member, payload):
    """Copy the raw folder, replacing one member, and return a RawFolder that trusts the new bytes."""
    shutil.copytree(src_dir, dst_dir)
    members = _members(src_dir / TARBALL)
    members[member] = payload
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (dst_dir / TARBALL).write_bytes(buf.getvalue())


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickles_are_read_only_verified_and_restricted(embedded, tmp_path):
    src = embedded.raw_dir(TASK)
    stamp = json.loads((src / "raw.json").read_text())
    trusted = {k: v["sha256"] for k, v in stamp["files"].items()}
    # A tarball that changed after it was verified is refused before anything is unpickled.
    _rewrite_tarball(src, tmp_path / "tampered", f"{MEMBER_DIR}/test", pickle.dumps({b"data": 0}, protocol=2))
    with pytest.raises(RawDataError, match="changed since it was verified"):
        get_task(TASK).read_raw(RawFolder(tmp_path / "tampered", trusted))
    # Even a verified tarball cannot make the reader import arbitrary callables.
    evil = pickle.dumps({b"data": _Evil(), b"fine_labels": []}, protocol=2)
    _rewrite_tarball(src, tmp_path / "evil", f"{MEMBER_DIR}/train", evil)
    folder = RawFolder(tmp_path / "evil", {TARBALL: sha256_file(tmp_path / "evil" / TARBALL)})
    with pytest.raises(UnsafePickleError, match="getcwd"):
        get_task(TASK).read_raw(folder)
    # A malformed but harmless member gives a clear error naming the file.
    bad = pickle.dumps({b"data": np.zeros((3, 10), np.uint8), b"fine_labels": [0, 1, 2]}, protocol=2)
    _rewrite_tarball(src, tmp_path / "bad", f"{MEMBER_DIR}/train", bad)
    folder = RawFolder(tmp_path / "bad", {TARBALL: sha256_file(tmp_path / "bad" / TARBALL)})
    with pytest.raises(RawDataError, match=r"cifar-100-python/train: expected data uint8 \(N, 3072\)"):
        get_task(TASK).read_raw(folder)


def _shard(manifest, split):
    return open_shards(manifest, [split])[0]


def test_make_batch_normalises_and_augments(embedded):
    spec = get_task(TASK)
    manifest = embedded.manifest(TASK)
    np.testing.assert_allclose(manifest["normaliser"]["mean"], MEAN)
    np.testing.assert_allclose(manifest["normaliser"]["std"], STD)
    shard = _shard(manifest, "train")
    idx = np.array([3, 0, 17, 3, 250, 1999])
    raw = shard.items("x", idx)
    mean = np.asarray(MEAN, np.float32)[:, None, None]
    std = np.asarray(STD, np.float32)[:, None, None]
    norm = (raw.astype(np.float32) / 255 - mean) / std

    ev = spec.make_batch(shard, idx, BatchContext(False, manifest["normaliser"], np.random.default_rng(0)))
    assert ev["x"].dtype == np.float32 and ev["x"].shape == (6, 3, 32, 32)
    np.testing.assert_allclose(ev["x"], norm, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ev["y"], shard.items("y", idx))

    tr = spec.make_batch(shard, idx, BatchContext(True, manifest["normaliser"], np.random.default_rng(1)))
    again = spec.make_batch(shard, idx, BatchContext(True, manifest["normaliser"], np.random.default_rng(1)))
    assert tr["x"].dtype == np.float32 and tr["x"].shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(tr["x"], again["x"])  # ctx.rng is the only randomness
    np.testing.assert_array_equal(tr["y"], ev["y"])
    # Each training view is a 32x32 window of the zero-padded image (maybe mirrored) with one Cutout square.
    pad_value = (0 - mean) / std
    padded = np.broadcast_to(pad_value, (6, 3, 40, 40)).copy()
    padded[:, :, 4:36, 4:36] = norm
    for i in range(len(idx)):
        hole = np.all(tr["x"][i] == 0, axis=0)
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        assert hole[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all() and hole.sum() == len(rows) * len(
            cols
        )
        windows = [padded[i, :, oy : oy + 32, ox : ox + 32] for oy in range(9) for ox in range(9)]
        windows += [w[..., ::-1] for w in windows]
        matches = [w for w in windows if np.allclose(np.where(hole, 0, w), tr["x"][i], atol=1e-5)]
        assert matches, f"training view {i} is not a crop/flip of its image"


def test_augment_is_random_over_the_batch():
    x = np.random.default_rng(0).integers(0, 256, size=(64, 3, 32, 32), dtype=np.uint8)
    mean, std = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)
    a = augment(x, mean, std, np.random.default_rng(0))
    b = augment(x, mean, std, np.random.default_rng(1))
    assert not np.array_equal(a, b)
    # Cutout squares are clipped at the border (at least 8x8) and whole (16x16) when centred inside
    holes = (a == 0).all(axis=1).sum(axis=(1, 2))
    assert holes.min() >= 64 and holes.max() == 256


def test_generation_is_deterministic(embedded, tmp_path, pypi_cache):
    first = json.loads(embedded.stamp(TASK).read_text())["files"][TARBALL]["sha256"]
    stamp = generate_embedded(TASK, tmp_path, seed=0, cache_dir=pypi_cache)
    assert json.loads(stamp.read_text())["files"][TARBALL]["sha256"] == first


def _error_pct(pred, y):
    return 100.0 * np.mean(pred != y)


def test_embedded_data_is_learnable(embedded):
    from sklearn.neighbors import KNeighborsClassifier

    manifest = embedded.manifest(TASK)
    tr, te = _shard(manifest, "train"), _shard(manifest, "test")

    def features(x):  # 8x8 average-pooled colour image
        return x.astype(np.float32).reshape(len(x), 3, 8, 4, 8, 4).mean(axis=(3, 5)).reshape(len(x), -1) / 255

    x_tr, y_tr = features(tr.items("x")), tr.items("y")
    x_te, y_te = features(te.items("x")), te.items("y")
    model_err = _error_pct(KNeighborsClassifier(1).fit(x_tr, y_tr).predict(x_te), y_te)
    trivial_err = _error_pct(np.full_like(y_te, np.bincount(y_tr).argmax()), y_te)
    assert trivial_err > 95
    assert model_err < 60, (model_err, trivial_err)
