import hashlib
import json
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.shards import open_shards
from nb360.tasks import BatchContext, EmbeddedContext, get_task
from nb360.tasks.deepsea import (
    BASES,
    EMBEDDED_SIZES,
    JASPAR_IDS,
    LABEL_NAMES,
    NPZ_NAME,
    codes_from_onehot,
    generate_embedded,
    load_jaspar_motifs,
    pwm_match_labels,
)


def _splits(embedded):
    return embedded.read("deepsea")


def mean_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean per-label ROC-AUC (nb360.md 1.2), skipping labels with one class in ``y`` with a warning."""
    aucs = []
    for j in range(y.shape[1]):
        if y[:, j].min() == y[:, j].max():
            warnings.warn(f"label {j} has a single class in the evaluation split; skipped", stacklevel=2)
            continue
        aucs.append(roc_auc_score(y[:, j], scores[:, j].astype(np.float64)))
    return float(np.mean(aucs))


def test_reader_shapes_dtypes_and_labels(embedded):
    splits = _splits(embedded)
    assert {k: len(v) for k, v in splits.items()} == EMBEDDED_SIZES
    for data in splits.values():
        x, y = data.items["x"], data.items["y"]
        assert x.shape[1:] == (4, 1000) and x.dtype == np.uint8
        assert y.shape[1:] == (36,) and y.dtype == np.uint8
        assert set(np.unique(y)) <= {0, 1}
        # one-hot: exactly one channel per position (the embedded DNA has no N)
        assert (x.sum(axis=1) == 1).all()
    y_tr = splits["train"].items["y"]
    # every label has both classes in train and test, with non-trivial prevalence
    assert (y_tr.mean(axis=0) > 0.05).all() and (y_tr.mean(axis=0) < 0.95).all()
    y_te = splits["test"].items["y"]
    assert (y_te.min(axis=0) == 0).all() and (y_te.max(axis=0) == 1).all()
    # experimental labels: the centre is an Oct4 peak or a MafK peak, never both
    assert not (y_tr[:, 34] & y_tr[:, 35]).any()
    assert len(LABEL_NAMES) == 36 and len(set(LABEL_NAMES)) == 36 and LABEL_NAMES[:34] == JASPAR_IDS


def test_official_layout_is_permuted_to_channels_first(embedded):
    raw = RawFolder.from_stamp(embedded.stamp("deepsea"))
    with np.load(raw.path(NPZ_NAME), allow_pickle=False) as z:
        assert sorted(z.files) == sorted(f"{a}_{s}" for a in "xy" for s in ("train", "val", "test"))
        x_val, y_val = z["x_val"], z["y_val"]
    assert x_val.shape == (EMBEDDED_SIZES["val"], 1000, 4) and x_val.dtype == np.uint8
    splits = get_task("deepsea").read_raw(raw)
    np.testing.assert_array_equal(splits["val"].items["x"], x_val.transpose(0, 2, 1))
    np.testing.assert_array_equal(splits["val"].items["y"], y_val)


def _folder(tmp_path, **arrays):
    path = tmp_path / NPZ_NAME
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=True)
    return RawFolder(tmp_path, {NPZ_NAME: hashlib.sha256(path.read_bytes()).hexdigest()})


def _good(n=3, x_dtype=np.uint8):
    x = np.eye(4, dtype=x_dtype)[np.random.default_rng(0).integers(0, 4, (n, 1000))]
    y = np.zeros((n, 36), np.uint8)
    return {f"{a}_{s}": (x if a == "x" else y) for s in ("train", "val", "test") for a in "xy"}


def test_reader_refuses_object_arrays_and_bad_shapes(tmp_path):
    spec = get_task("deepsea")
    arrays = _good()
    obj = np.empty(3, dtype=object)
    obj[:] = [None, None, None]
    (tmp_path / "a").mkdir()
    with pytest.raises(RawDataError, match="unpickling"):
        spec.read_raw(_folder(tmp_path / "a", **{**arrays, "y_test": obj}))
    (tmp_path / "b").mkdir()
    with pytest.raises(RawDataError, match=r"shape \(N, 1000, 4\)"):
        spec.read_raw(_folder(tmp_path / "b", **{**arrays, "x_val": arrays["x_val"].transpose(0, 2, 1)}))
    (tmp_path / "c").mkdir()
    with pytest.raises(RawDataError, match="no array 'x_test'"):
        spec.read_raw(_folder(tmp_path / "c", **{k: v for k, v in arrays.items() if k != "x_test"}))
    (tmp_path / "d").mkdir()
    with pytest.raises(RawDataError, match="multi-hot"):
        spec.read_raw(_folder(tmp_path / "d", **{**arrays, "y_train": arrays["y_train"] + 2}))


def test_reader_dtypes_float_one_hot(tmp_path):
    spec = get_task("deepsea")
    (tmp_path / "a").mkdir()
    out = spec.read_raw(_folder(tmp_path / "a", **_good(x_dtype=np.float32)))
    assert out["train"].items["x"].dtype == np.uint8
    # a non-binary encoding (0.25 for N) is kept as float32 rather than rounded away
    arrays = _good(x_dtype=np.float32)
    arrays["x_test"] = arrays["x_test"].copy()
    arrays["x_test"][0, 5] = 0.25
    (tmp_path / "b").mkdir()
    out = spec.read_raw(_folder(tmp_path / "b", **arrays))
    assert (
        out["test"].items["x"].dtype == np.float32 and out["test"].items["x"][0, :, 5].tolist() == [0.25] * 4
    )


def test_pwm_labels_match_a_rescan_of_the_sequences(embedded, pypi_cache):
    test = _splits(embedded)["test"]
    motifs = load_jaspar_motifs(pypi_cache)
    assert [m.matrix_id for m in motifs] == list(JASPAR_IDS) and BASES == "AGCT"
    labels = pwm_match_labels(codes_from_onehot(test.items["x"]), motifs)
    np.testing.assert_array_equal(labels, test.items["y"][:, :34].astype(bool))


def test_splits_share_no_dna_segment(embedded):
    def slots(x):
        c = codes_from_onehot(x).reshape(-1, 200)
        rc = (3 - c)[:, ::-1]
        return {min(a.tobytes(), b.tobytes()) for a, b in zip(c, rc, strict=True)}

    splits = _splits(embedded)
    train, val, test = (slots(splits[s].items["x"]) for s in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and not (val & test)


def test_generation_is_deterministic(embedded, pypi_cache, tmp_path):
    stamp = json.loads(embedded.stamp("deepsea").read_text())
    generate_embedded(tmp_path, EmbeddedContext(seed=0, cache_dir=pypi_cache))
    assert (
        hashlib.sha256((tmp_path / NPZ_NAME).read_bytes()).hexdigest() == stamp["files"][NPZ_NAME]["sha256"]
    )


def test_make_batch_and_retrain_protocol(embedded):
    spec = get_task("deepsea")
    assert spec.splits.retrain_fit == ("train",) and spec.splits.report == ("test",)
    manifest = embedded.manifest("deepsea")
    shard = open_shards(manifest, ["train"])[0]
    idx = np.array([5, 0, 17, 5])
    ctx = BatchContext(train=True, normaliser=manifest["normaliser"], rng=np.random.default_rng(0))
    batch = spec.make_batch(shard, idx, ctx)
    assert batch["x"].shape == (4, *spec.input_shape) and batch["x"].dtype == np.float32
    assert batch["y"].shape == (4, 36) and batch["y"].dtype == np.float32
    np.testing.assert_array_equal(batch["x"], shard.items("x", idx))
    np.testing.assert_array_equal(batch["y"], shard.items("y", idx))


def _kmer_features(x: np.ndarray, k: int = 5) -> np.ndarray:
    """5-mer counts over the window and over its central 200 bp."""
    c = codes_from_onehot(x).astype(np.int64)
    n, length = c.shape
    idx = np.zeros((n, length - k + 1), dtype=np.int64)
    for i in range(k):
        idx = idx * 4 + c[:, i : length - k + 1 + i]
    rows = np.arange(n)[:, None]
    whole = np.zeros((n, 4**k))
    np.add.at(whole, (np.broadcast_to(rows, idx.shape), idx), 1)
    centre = np.zeros((n, 4**k))
    sub = idx[:, 400 : 600 - k + 1]
    np.add.at(centre, (np.broadcast_to(rows, sub.shape), sub), 1)
    return np.hstack([whole, centre])


def test_learnable_kmer_ridge_beats_label_prior(embedded):
    splits = _splits(embedded)
    x_tr, y_tr = _kmer_features(splits["train"].items["x"]), splits["train"].items["y"].astype(np.float64)
    x_te, y_te = _kmer_features(splits["test"].items["x"]), splits["test"].items["y"]
    mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-6
    scores = Ridge(alpha=3000.0).fit((x_tr - mu) / sd, y_tr).predict((x_te - mu) / sd)
    prior = np.broadcast_to(y_tr.mean(axis=0), y_te.shape)  # the trivial predictor: constant per label
    model_auc, prior_auc = mean_auroc(y_te, scores), mean_auroc(y_te, prior)
    assert prior_auc == pytest.approx(0.5)
    assert model_auc > 0.6, model_auc
    per_label = [roc_auc_score(y_te[:, j], scores[:, j]) for j in range(36)]
    assert np.mean(np.array(per_label) > 0.55) > 0.8, per_label
