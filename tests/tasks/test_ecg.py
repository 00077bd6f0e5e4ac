import hashlib
import itertools
import json
import math
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import signal
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nb360.data.pipeline import generate_embedded
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.safe_pickle import _ALLOWED, SafeUnpickler, UnsafePickleError
from nb360.data.shards import ShardArrays, SplitData, open_shards, write_shard
from nb360.metrics import record_macro_f1, vote_records
from nb360.tasks import BatchContext, get_task
from nb360.tasks.ecg import (
    CLASS_CODES,
    EMBEDDED_COUNTS,
    RAW_NAME,
    STRIDES,
    WINDOW,
    window_starts,
)

TASK = "ecg"


def _raw(embedded) -> RawFolder:
    return RawFolder.from_stamp(embedded.stamp(TASK))


def _load_windows(manifest: dict, split: str, train: bool = False) -> dict[str, np.ndarray]:
    spec = get_task(TASK)
    parts = []
    for shard in open_shards(manifest, [split]):
        idx = np.arange(spec.num_samples(shard, train))
        parts.append(
            spec.make_batch(
                shard, idx, BatchContext(train=train, normaliser={}, rng=np.random.default_rng(0))
            )
        )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_raw_file_is_the_official_pickle_format(embedded):
    raw = _raw(embedded)
    path = raw.path(RAW_NAME)
    # The file needs nothing beyond numpy arrays, dtypes and builtins (what the restricted unpickler admits).
    seen = set()

    class Recording(SafeUnpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    with open(path, "rb") as f:
        Recording(f).load()
    assert seen and seen <= _ALLOWED, seen
    obj = raw.load_pickle(RAW_NAME)
    assert set(obj) == {"data", "label"}
    data, label = obj["data"], obj["label"]
    assert data.dtype == object and data.ndim == 1 and label.dtype == object and len(label) == len(data)
    assert all(isinstance(r, np.ndarray) and r.dtype == np.int16 and r.ndim == 1 for r in data)
    lengths = np.array([len(r) for r in data])
    assert lengths.min() >= 9 * 300 and lengths.max() <= 60 * 300  # 9-60 s at 300 Hz, like the release
    assert np.mean(lengths == 9000) > 0.4  # most CinC 2017 recordings are exactly 30 s
    assert all(isinstance(s, str) for s in label)
    assert Counter(label) == dict(zip(CLASS_CODES, EMBEDDED_COUNTS, strict=True))


def test_reader_splits_by_record_with_the_retrain_test_set(embedded):
    raw = _raw(embedded)
    obj = raw.load_pickle(RAW_NAME)
    n = len(obj["data"])
    splits = get_task(TASK).read_raw(raw)
    ids = {k: v.items["record"] for k, v in splits.items()}
    n_test = math.ceil(0.1 * n)
    assert {k: len(v) for k, v in ids.items()} == {
        "train": n - n_test - math.ceil((n - n_test) / 9),
        "val": math.ceil((n - n_test) / 9),
        "test": n_test,
    }
    # The original retrain split (90/10, random_state=0, no stratification): its test set is ours, and its
    # training set is exactly train + val.
    retrain_fit, retrain_test = train_test_split(np.arange(n), test_size=0.1, random_state=0)
    np.testing.assert_array_equal(ids["test"], np.sort(retrain_test))
    np.testing.assert_array_equal(np.sort(np.concatenate([ids["train"], ids["val"]])), np.sort(retrain_fit))
    assert len(np.intersect1d(ids["train"], ids["val"])) == 0
    codes = np.array([CLASS_CODES.index(s) for s in obj["label"]])
    for data in splits.values():
        np.testing.assert_array_equal(data.items["y"], codes[data.items["record"]])
        assert data.items["y"].dtype == np.int64 and data.items["record"].dtype == np.int64
    assert len(np.unique(splits["train"].items["y"])) == 4


def test_reader_zscores_each_recording_and_windows_with_class_strides(embedded):
    raw = _raw(embedded)
    obj = raw.load_pickle(RAW_NAME)
    splits = get_task(TASK).read_raw(raw)
    for data in splits.values():
        win = data.tables["windows"]
        assert win.dtype == np.int64 and win.shape[1] == 2
        for k, (sig, rec, y) in enumerate(
            zip(data.ragged["signal"], data.items["record"], data.items["y"], strict=True)
        ):
            assert sig.dtype == np.float32 and sig.ndim == 1 and np.isfinite(sig).all()
            raw_rec = obj["data"][rec].astype(np.float64)
            assert len(sig) == len(raw_rec)
            assert abs(float(sig.mean())) < 1e-4 and abs(float(sig.std()) - 1) < 1e-3
            if k < 5:
                np.testing.assert_allclose(
                    sig, (raw_rec - raw_rec.mean()) / raw_rec.std(), rtol=1e-5, atol=1e-5
                )
            starts = win[win[:, 0] == k, 1]
            # The original's range(0, len - 1000, stride) with N 500, AF 83, Other 250, Noisy 25.
            np.testing.assert_array_equal(starts, np.arange(0, len(sig) - WINDOW, STRIDES[y]))
    assert STRIDES == (500, 83, 250, 25)


def test_short_recordings_get_one_zero_padded_window(tmp_path):
    assert list(window_starts(800, 500)) == [0]
    assert list(window_starts(1000, 25)) == [0]
    assert list(window_starts(1001, 25)) == [0]
    assert list(window_starts(1251, 250)) == [0, 250]
    assert list(window_starts(1250, 250)) == [0]  # exclusive end, as the original
    short = np.linspace(-1, 1, 800, dtype=np.float32)
    longer = np.arange(1600, dtype=np.float32)
    data = SplitData(
        items={"y": np.array([3, 0]), "record": np.array([7, 9])},
        ragged={"signal": [short, longer]},
        tables={"windows": np.array([[0, 0], [1, 0], [1, 500]])},
    )
    write_shard(tmp_path / "s.h5", data, {"task": TASK})
    for in_memory in (True, False):
        shard = ShardArrays(tmp_path / "s.h5", in_memory=in_memory)
        spec = get_task(TASK)
        assert spec.num_samples(shard, True) == 3
        b = spec.make_batch(
            shard, np.array([2, 0]), BatchContext(train=True, normaliser={}, rng=np.random.default_rng(0))
        )
        assert b["x"].shape == (2, 1, WINDOW) and b["x"].dtype == np.float32
        np.testing.assert_array_equal(b["x"][0, 0], longer[500:1500])
        np.testing.assert_array_equal(b["x"][1, 0, :800], short)
        assert not b["x"][1, 0, 800:].any()
        np.testing.assert_array_equal(b["y"], [0, 3])
        np.testing.assert_array_equal(b["group"], [9, 7])


def test_shards_give_window_batches(embedded):
    spec = get_task(TASK)
    manifest = embedded.manifest(TASK)
    splits = spec.read_raw(_raw(embedded))
    rng = np.random.default_rng(1)
    for split, data in splits.items():
        total = 0
        for shard in open_shards(manifest, [split]):
            n = spec.num_samples(shard, True)
            assert n == spec.num_samples(shard, False) == len(shard.table("windows"))
            total += n
            idx = rng.integers(0, n, 64)
            b = spec.make_batch(shard, idx, BatchContext(train=True, normaliser={}, rng=rng))
            assert set(b) == {"x", "y", "group"}
            assert b["x"].shape == (64, *spec.input_shape) and b["x"].dtype == np.float32
            assert np.isfinite(b["x"]).all()
            assert b["y"].dtype == np.int64 and b["y"].min() >= 0 and b["y"].max() <= 3
            win = shard.table("windows")[idx]
            np.testing.assert_array_equal(b["group"], shard.items("record", win[:, 0]))
            np.testing.assert_array_equal(b["y"], shard.items("y", win[:, 0]))
            for k in range(3):
                item, start = win[k]
                np.testing.assert_array_equal(
                    b["x"][k, 0], shard.ragged("signal", int(item))[start : start + WINDOW]
                )
        assert total == len(data.tables["windows"])
    n_train = sum(len(d.tables["windows"]) for d in (splits["train"],))
    assert 10_000 <= n_train <= 15_000


def test_reader_refuses_unsafe_tampered_and_malformed_pickles(embedded, tmp_path):
    def folder(obj_bytes: bytes) -> RawFolder:
        (tmp_path / RAW_NAME).write_bytes(obj_bytes)
        return RawFolder(tmp_path, {RAW_NAME: hashlib.sha256(obj_bytes).hexdigest()})

    spec = get_task(TASK)

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    with pytest.raises(UnsafePickleError):
        spec.read_raw(folder(pickle.dumps({"data": Evil(), "label": []})))
    bad_label = np.empty(2, dtype=object)
    bad_label[:] = ["N", "X"]
    recs = np.empty(2, dtype=object)
    recs[0], recs[1] = np.zeros(3000, np.int16), np.ones(2900, np.int16)
    with pytest.raises(RawDataError, match=RAW_NAME):
        spec.read_raw(folder(pickle.dumps({"data": recs, "label": bad_label})))
    with pytest.raises(RawDataError, match="'data' and 'label'"):
        spec.read_raw(folder(pickle.dumps({"x": recs})))
    good = (embedded.raw_dir(TASK) / RAW_NAME).read_bytes()
    tampered = RawFolder(tmp_path, {RAW_NAME: hashlib.sha256(good).hexdigest()})
    (tmp_path / RAW_NAME).write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(RawDataError, match="changed since it was verified"):
        spec.read_raw(tampered)


def test_reader_reads_a_protocol_2_pickle_written_by_numpy_1(embedded, tmp_path):
    # The release predates numpy 2: its pickle names numpy.core.multiarray, which the restricted path admits.
    raw = _raw(embedded)
    obj = raw.load_pickle(RAW_NAME)
    old = pickle.dumps(obj, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in old
    (tmp_path / RAW_NAME).write_bytes(old)
    spec = get_task(TASK)
    got = spec.read_raw(RawFolder(tmp_path, {RAW_NAME: hashlib.sha256(old).hexdigest()}))
    ref = spec.read_raw(raw)
    for split in ref:
        np.testing.assert_array_equal(got[split].tables["windows"], ref[split].tables["windows"])
        np.testing.assert_array_equal(got[split].ragged["signal"][0], ref[split].ragged["signal"][0])


def _features(x: np.ndarray) -> np.ndarray:
    """Hand-crafted window features: relative band powers, RR regularity from an R-peak detector, shape."""
    power = np.abs(np.fft.rfft(x, axis=1)) ** 2
    freq = np.fft.rfftfreq(x.shape[1], 1 / 300)
    edges = [0, 0.5, 2, 4, 9, 15, 25, 40, 70, 150]
    bands = np.stack([power[:, (freq >= a) & (freq < b)].sum(1) for a, b in itertools.pairwise(edges)], 1)
    bands = np.log(bands / bands.sum(1, keepdims=True) + 1e-9)
    energy = signal.sosfiltfilt(signal.butter(2, [5, 20], "bandpass", fs=300, output="sos"), x, axis=1) ** 2
    rr = np.zeros((len(x), 5))
    for i, e in enumerate(energy):
        peaks, _ = signal.find_peaks(e, distance=75, height=0.25 * e.max())
        d = np.diff(peaks) / 300
        rr[i, 0] = len(peaks)
        if len(d) >= 2:
            rr[i, 1:] = [
                d.mean(),
                d.std() / d.mean(),
                np.abs(np.diff(d)).mean() / d.mean(),
                d.min() / d.max(),
            ]
    xs = x / np.maximum(x.std(1, keepdims=True), 1e-6)
    shape = np.stack(
        [np.mean(xs**3, 1), np.mean(xs**4, 1), np.abs(np.diff(xs, axis=1)).mean(1), (np.abs(xs) > 3).mean(1)],
        1,
    )
    return np.concatenate([bands, rr, shape], 1)


def test_learnable_record_level_f1_beats_the_majority_class(embedded):
    manifest = embedded.manifest(TASK)
    train, test = _load_windows(manifest, "train", train=True), _load_windows(manifest, "test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    model.fit(_features(train["x"][:, 0]), train["y"])
    f1 = record_macro_f1(model.predict(_features(test["x"][:, 0])), test["y"], test["group"])
    # Trivial predictors: the majority class of the training windows or of the training records.
    _, rec_y = vote_records(train["y"], train["group"])
    trivial = max(
        record_macro_f1(np.full_like(test["y"], c), test["y"], test["group"])
        for c in (np.bincount(train["y"]).argmax(), np.bincount(rec_y).argmax())
    )
    assert trivial < 0.3
    assert f1 > 0.65 and f1 > trivial + 0.35, (f1, trivial)


def test_generator_is_deterministic(embedded, tmp_path, pypi_cache):
    stamp = generate_embedded(TASK, tmp_path, seed=0, cache_dir=pypi_cache)
    first = json.loads(Path(embedded.stamp(TASK)).read_text())["files"][RAW_NAME]["sha256"]
    assert json.loads(stamp.read_text())["files"][RAW_NAME]["sha256"] == first
    other = generate_embedded(TASK, tmp_path / "seed1", seed=1, cache_dir=pypi_cache)
    assert json.loads(other.read_text())["files"][RAW_NAME]["sha256"] != first
