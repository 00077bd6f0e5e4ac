import gzip
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from nb360.data.pipeline import generate_embedded
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.safe_pickle import UnsafePickleError
from nb360.data.shards import open_shards, sha256_file
from nb360.tasks import BatchContext, get_task
from nb360.tasks.cifar100 import EMBEDDED_TEST, EMBEDDED_TRAIN, embedded_images
from nb360.tasks.common import rng_for
from nb360.tasks.spherical import (
    BANDWIDTH,
    FILE,
    ROTATION_CHUNK,
    dh_grid,
    image_coordinates,
    project,
    project_split,
    random_rotation,
)

TASK = "spherical"


@pytest.fixture(scope="module")
def splits(embedded):
    return embedded.read(TASK)


def test_reader_shapes_dtypes_and_splits(splits):
    n_val = EMBEDDED_TRAIN // 5
    assert {k: len(v) for k, v in splits.items()} == {
        "train": EMBEDDED_TRAIN - n_val,
        "val": n_val,
        "test": EMBEDDED_TEST,
    }
    for data in splits.values():
        x, y = data.items["x"], data.items["y"]
        # the embedded file holds uint8 like S2CNN's generator; kept as uint8, no normalisation
        assert x.shape[1:] == (3, 60, 60) and x.dtype == np.uint8
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 99
        assert (x.reshape(len(x), -1).max(axis=1) == 255).all()  # per-image min-max rescaled
        assert (x.reshape(len(x), -1).min(axis=1) == 0).all()  # zero outside the footprint
    assert len(np.unique(splits["train"].items["y"])) == 100


def test_same_images_as_cifar100_projected(splits, pypi_cache, embedded):
    raw = RawFolder.from_stamp(embedded.stamp(TASK))
    obj = raw.load_pickle(FILE)
    assert set(obj) == {"train", "test"} and set(obj["train"]) == {"images", "labels"}
    cifar = embedded_images(0, pypi_cache)
    np.testing.assert_array_equal(obj["train"]["labels"], cifar["train"][1])
    np.testing.assert_array_equal(obj["test"]["labels"], cifar["test"][1])
    n_val = EMBEDDED_TRAIN // 5
    np.testing.assert_array_equal(splits["val"].items["x"], obj["train"]["images"][-n_val:])
    # the first two rotation chunks of the test file, re-projected from the CIFAR-100 generator's images
    k = 2 * ROTATION_CHUNK
    again = project_split(cifar["test"][0][:k], rng_for(0, TASK, "test"), rotate=True)
    np.testing.assert_array_equal(again, splits["test"].items["x"][:k])


def test_grid_and_rotation():
    g = dh_grid()
    assert g.shape == (2 * BANDWIDTH, 2 * BANDWIDTH, 3)
    np.testing.assert_allclose(np.linalg.norm(g, axis=-1), 1)
    np.testing.assert_allclose(np.arccos(g[:, 0, 2]), np.pi * (2 * np.arange(60) + 1) / 120)
    np.testing.assert_allclose(np.arctan2(g[5, 1:30, 1], g[5, 1:30, 0]), np.pi * np.arange(1, 30) / 30)
    rots = [random_rotation(np.random.default_rng(i)) for i in range(200)]
    for r in rots[:5]:
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(r), 1)
    # uniform on SO(3): the rotated north pole is uniform on the sphere (mean z near 0)
    assert abs(np.mean([r[2, 2] for r in rots])) < 0.15


def test_projection_geometry():
    # A column ramp is linear, so bilinear sampling returns the exact pixel column of each sphere point.
    ramp = np.broadcast_to(np.arange(32, dtype=np.float64), (1, 3, 32, 32))
    row, col, inside = image_coordinates(dh_grid(), 32)
    out = project(ramp, None)
    interior = inside & (col >= 0) & (col <= 31)
    np.testing.assert_allclose(out[0, 0][interior], col[interior], atol=1e-9)
    assert (out[:, :, ~inside] == 0).all()
    z = dh_grid()[..., 2]
    assert inside[z > 0].all() and not inside[z < -1 / 3 - 1e-9].any()  # the square covers the north
    # the north pole sees the image centre
    np.testing.assert_allclose([row[0].mean(), col[0].mean()], [15.5, 15.5], atol=1e-9)
    # A rotation about the polar axis by a multiple of the phi step is a cyclic shift of the columns.
    img = np.random.default_rng(0).integers(0, 256, size=(2, 3, 32, 32)).astype(np.float64)
    a = 7 * np.pi / BANDWIDTH
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    np.testing.assert_allclose(project(img, rz), np.roll(project(img, None), 7, axis=-1), atol=1e-6)


def test_rotation_switch():
    img = np.random.default_rng(0).integers(1, 256, size=(2 * ROTATION_CHUNK, 3, 32, 32)).astype(np.uint8)
    fixed = project_split(img, np.random.default_rng(0), rotate=False)
    rotated = project_split(img, np.random.default_rng(0), rotate=True)
    footprint = (fixed > 0).any(axis=1)
    assert (footprint == footprint[0]).all() and footprint[0, 0].all()  # all at the north pole
    rfoot = (rotated > 0).any(axis=1)
    # one rotation per chunk: footprints agree within a chunk and differ between chunks
    assert (rfoot[:ROTATION_CHUNK] == rfoot[0]).all() and not np.array_equal(rfoot[0], rfoot[ROTATION_CHUNK])


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_is_read_only_verified_and_restricted(embedded, tmp_path):
    src = embedded.raw_dir(TASK)
    trusted = {k: v["sha256"] for k, v in json.loads((src / "raw.json").read_text())["files"].items()}
    shutil.copytree(src, tmp_path / "tampered")
    with open(tmp_path / "tampered" / FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(RawDataError, match="changed since it was verified"):
        get_task(TASK).read_raw(RawFolder(tmp_path / "tampered", trusted))
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    (evil_dir / FILE).write_bytes(gzip.compress(pickle.dumps({"train": _Evil()}, protocol=4)))
    with pytest.raises(UnsafePickleError, match="getcwd"):
        get_task(TASK).read_raw(RawFolder(evil_dir, {FILE: sha256_file(evil_dir / FILE)}))
    bad = {"train": {"images": np.zeros((4, 3, 32, 32), np.uint8), "labels": np.zeros(4)}, "test": {}}
    (evil_dir / FILE).write_bytes(gzip.compress(pickle.dumps(bad, protocol=4)))
    with pytest.raises(RawDataError, match=r"train images must have shape \(N, 3, 60, 60\)"):
        get_task(TASK).read_raw(RawFolder(evil_dir, {FILE: sha256_file(evil_dir / FILE)}))


def test_float_files_are_read_as_float32(tmp_path):
    rng = np.random.default_rng(0)
    body = {
        s: {"images": rng.random((10, 3, 60, 60)), "labels": np.arange(10) % 3} for s in ("train", "test")
    }
    (tmp_path / FILE).write_bytes(gzip.compress(pickle.dumps(body, protocol=4)))
    got = get_task(TASK).read_raw(RawFolder(tmp_path, {FILE: sha256_file(tmp_path / FILE)}))
    assert got["train"].items["x"].dtype == np.float32 and len(got["val"]) == 2
    np.testing.assert_allclose(got["test"].items["x"], body["test"]["images"], rtol=1e-6)


def _shard(manifest, split):
    return open_shards(manifest, [split])[0]


def test_make_batch_casts_without_normalising(embedded):
    manifest = embedded.manifest(TASK)
    assert manifest["normaliser"] == {}
    shard = _shard(manifest, "train")
    idx = np.array([4, 0, 4, 2399])
    for train in (True, False):
        b = get_task(TASK).make_batch(shard, idx, BatchContext(train, {}, np.random.default_rng(0)))
        assert b["x"].dtype == np.float32 and b["x"].shape == (4, 3, 60, 60)
        np.testing.assert_array_equal(b["x"], shard.items("x", idx).astype(np.float32))
        np.testing.assert_array_equal(b["y"], shard.items("y", idx))


def _colour_histograms(x, bins=6):
    """Area-weighted joint colour histogram of the footprint: nearly invariant to rotations on the sphere."""
    n = len(x)
    q = np.minimum(x.astype(np.int64) * bins // 256, bins - 1)
    code = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2] + (np.arange(n) * bins**3)[:, None, None]
    theta = np.pi * (2 * np.arange(60) + 1) / 120
    weight = np.broadcast_to(np.sin(theta)[None, :, None], code.shape) * (x.max(axis=1) > 0)
    h = np.bincount(code.ravel(), weights=weight.ravel(), minlength=n * bins**3).reshape(n, -1)
    return np.sqrt(h / h.sum(axis=1, keepdims=True))


def test_embedded_data_is_learnable(embedded):
    from sklearn.neighbors import KNeighborsClassifier

    manifest = embedded.manifest(TASK)
    tr, te = _shard(manifest, "train"), _shard(manifest, "test")
    y_tr, y_te = tr.items("y"), te.items("y")
    model = KNeighborsClassifier(1).fit(_colour_histograms(tr.items("x")), y_tr)
    model_err = 100.0 * np.mean(model.predict(_colour_histograms(te.items("x"))) != y_te)
    trivial_err = 100.0 * np.mean(np.bincount(y_tr).argmax() != y_te)
    assert trivial_err > 95
    assert model_err < 60, (model_err, trivial_err)


def test_generation_is_deterministic(embedded, tmp_path, pypi_cache):
    first = json.loads(embedded.stamp(TASK).read_text())["files"][FILE]["sha256"]
    stamp = generate_embedded(TASK, tmp_path, seed=0, cache_dir=pypi_cache)
    assert json.loads(stamp.read_text())["files"][FILE]["sha256"] == first
