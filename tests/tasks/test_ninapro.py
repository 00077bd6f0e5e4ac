import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.shards import open_shards, sha256_file
from nb360.tasks import BatchContext, EmbeddedContext, get_task
from nb360.tasks import ninapro as nina


@pytest.fixture(scope="module")
def splits(embedded):
    return embedded.read("ninapro")


def test_reader_shapes_splits_and_labels(splits, embedded):
    assert {k: len(v) for k, v in splits.items()} == nina.EMBEDDED_SIZES
    raw = embedded.raw_dir("ninapro")
    for name, data in splits.items():
        x, y = data.items["x"], data.items["y"]
        assert x.shape[1:] == (1, 16, 52) and x.dtype == np.float32
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 17
        assert np.isfinite(x).all()
        # stored (N, 52, 16): the reader transposes and adds a channel axis, nothing else (no normalisation)
        stored = np.load(raw / f"ninapro_{name}.npy")
        assert stored.shape == (len(x), 52, 16)
        np.testing.assert_array_equal(x[:, 0], stored.transpose(0, 2, 1))
        np.testing.assert_array_equal(y, np.load(raw / f"label_{name}.npy"))
    assert len(np.unique(splits["train"].items["y"])) == 18
    # Myo int8 stream: integer values in -128..127
    x = splits["train"].items["x"]
    assert np.array_equal(x, np.rint(x)) and x.min() >= -128 and x.max() <= 127


def test_files_are_pickled_and_read_through_the_verified_path(embedded, tmp_path):
    spec = get_task("ninapro")
    assert all(f.pickled for f in spec.raw_files)
    # The official files may be object arrays (allow_pickle): those are verified, then safely unpickled.
    src = embedded.raw_dir("ninapro")
    digests = {}
    for f in spec.raw_files:
        arr = np.load(src / f.name)
        obj = np.empty(len(arr), dtype=object)
        obj[:] = list(arr)
        np.save(tmp_path / f.name, obj, allow_pickle=True)
        digests[f.name] = sha256_file(tmp_path / f.name)
    via_objects = spec.read_raw(RawFolder(tmp_path, digests))
    direct = embedded.read("ninapro")
    for name in ("train", "test"):
        np.testing.assert_array_equal(via_objects[name].items["x"], direct[name].items["x"])
        np.testing.assert_array_equal(via_objects[name].items["y"], direct[name].items["y"])
    bad = dict(digests, **{"ninapro_val.npy": "0" * 64})
    with pytest.raises(RawDataError, match="changed since it was verified"):
        spec.read_raw(RawFolder(tmp_path, bad))


def test_make_batch_from_shards(embedded, splits):
    spec = get_task("ninapro")
    manifest = embedded.manifest("ninapro")
    shard = open_shards(manifest, ["train"])[0]
    idx = np.array([5, 0, 17, 5])
    ctx = BatchContext(train=True, normaliser=manifest["normaliser"], rng=np.random.default_rng(0))
    batch = spec.make_batch(shard, idx, ctx)
    assert batch["x"].shape == (4, *spec.input_shape) and batch["x"].dtype == np.float32
    np.testing.assert_array_equal(batch["x"], splits["train"].items["x"][idx])
    np.testing.assert_array_equal(batch["y"], splits["train"].items["y"][idx])


def test_generator_is_deterministic_and_calibrated(pypi_cache, embedded, tmp_path, splits):
    nina.generate_embedded(tmp_path, EmbeddedContext(seed=0, cache_dir=pypi_cache))
    for f in get_task("ninapro").raw_files:
        assert sha256_file(tmp_path / f.name) == sha256_file(embedded.raw_dir("ninapro") / f.name)
    # Spectrum and levels resemble the real Myo recordings the generator is calibrated on.
    myo = nina.load_myo(pypi_cache)
    real_active = np.concatenate([nina.windows(myo[r, c]) for r in range(4) for c in (0, 1, 3, 4)])
    real_rest = np.concatenate([nina.windows(myo[r, 2]) for r in range(4)])
    x = np.concatenate([d.items["x"][:, 0].transpose(0, 2, 1) for d in splits.values()])
    y = np.concatenate([d.items["y"] for d in splits.values()])
    mf_real, mf_syn = nina.median_frequency(real_active), nina.median_frequency(x[y != 0])
    assert abs(mf_syn - mf_real) < 0.15 * mf_real
    rest_real, rest_syn = np.median(nina.window_rms(real_rest)), np.median(nina.window_rms(x[y == 0]))
    assert abs(rest_syn - rest_real) < 0.2 * rest_real
    q_real = np.percentile(nina.window_rms(real_active), [25, 50, 75])
    q_syn = np.percentile(nina.window_rms(x[y != 0]), [25, 50, 75])
    np.testing.assert_allclose(q_syn, q_real, rtol=0.35)


def test_learnable_rms_features_beat_majority(splits):
    def features(data):
        return np.log1p(nina.window_rms(data.items["x"][:, 0].transpose(0, 2, 1)))

    train, test = splits["train"], splits["test"]
    model = LogisticRegression(max_iter=2000).fit(features(train), train.items["y"])
    error = 100 * np.mean(model.predict(features(test)) != test.items["y"])
    majority = np.bincount(train.items["y"]).argmax()
    trivial = 100 * np.mean(test.items["y"] != majority)
    assert trivial > 85
    assert error < 30, f"error {error:.1f}% vs majority {trivial:.1f}%"
