import io
import tarfile

import numpy as np
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.shards import open_shards
from nb360.tasks import BatchContext, get_task
from nb360.tasks import cosmic as C


def _gal_layout(root):
    return [
        r
        for r in C.EMBEDDED_LAYOUT
        if r[0] == root and r[1] == "f435w" and C.FIELD_TYPE[f"{r[2]}_{r[3]}"] == "GAL"
    ]


def _one_minus_auroc(y, logits):
    """nb360.md 1.2: binarise raw logits at > 0.5, then ROC-AUC pixelwise over all test images."""
    return 1.0 - roc_auc_score(y.reshape(-1), (logits.reshape(-1) > 0.5).astype(np.float64))


@pytest.fixture(scope="module")
def splits(embedded):
    return embedded.read("cosmic")


def test_reader_shapes_splits_and_label_ranges(splits):
    n_trainval = sum(e * t for *_, e, t in _gal_layout("npy_train"))
    n_train = int(n_trainval * 0.9)
    assert {k: len(v) for k, v in splits.items()} == {
        "train": n_train,
        "val": n_trainval - n_train,
        "test": sum(e * t for *_, e, t in _gal_layout("npy_test")),
    }
    for data in splits.values():
        it = data.items
        assert it["x"].shape[1:] == (1, 128, 128) and it["x"].dtype == np.float32
        for k in ("y", "ignore"):
            assert it[k].shape == it["x"].shape and it[k].dtype == np.uint8
            assert set(np.unique(it[k])) <= {0, 1}
        assert it["sky"].shape == (len(data),) and it["sky"].dtype == np.float32
        assert np.isfinite(it["x"]).all() and (it["sky"] >= 20).all() and (it["sky"] <= 80).all()
        # no normalisation: images in electrons, sky included (the median pixel sits near the sky level)
        assert abs(np.median(it["x"]) - np.median(it["sky"])) < 15
        assert 0.003 < it["y"].mean() < 0.04  # 0.5-3 % of pixels hit, per exposure rate
    assert splits["train"].items["ignore"].any()  # saturated stars / hot pixels


def test_crops_paths_split_and_sky_follow_the_official_layout(embedded, splits):
    raw_dir = embedded.raw_dir("cosmic")
    with tarfile.open(raw_dir / C.TRAIN_TAR) as tar:
        names = tar.getnames()
        gal = sorted(
            n
            for n in names
            if n.endswith(".npy")
            and not n.endswith("sky.npy")
            and n.split("/")[1] == "f435w"
            and C.FIELD_TYPE[f"{n.split('/')[2]}_{n.split('/')[3]}"] == "GAL"
        )
        # the tar also holds folders the reader must skip: other filters and non-GAL f435w fields
        assert any(n.split("/")[1] != "f435w" for n in names if n.endswith(".npy"))
        assert any(
            C.FIELD_TYPE.get("_".join(n.split("/")[2:4])) in ("GC", "EX") for n in names if n.count("/") == 4
        )
        n_train = len(splits["train"])
        for split, i, name in (
            ("train", 0, gal[0]),
            ("train", n_train - 1, gal[n_train - 1]),
            ("val", 0, gal[n_train]),
        ):
            arr = np.load(io.BytesIO(tar.extractfile(name).read()), allow_pickle=False)
            it = splits[split].items
            np.testing.assert_array_equal(it["x"][i, 0], arr[0, 64:192, 64:192])
            np.testing.assert_array_equal(it["y"][i, 0], arr[1, 64:192, 64:192])
            want_ignore = arr[2, 64:192, 64:192] if len(arr) == 3 else 0
            np.testing.assert_array_equal(it["ignore"][i, 0], want_ignore)
            folder, fname = name.rsplit("/", 1)
            sky = np.load(io.BytesIO(tar.extractfile(folder + "/sky.npy").read()), allow_pickle=False)
            assert it["sky"][i] == np.float32(sky[int(fname.split("_")[0]) - 1])


def test_tars_are_deterministic_and_tiles_repeat(embedded):
    with tarfile.open(embedded.raw_dir("cosmic") / C.TEST_TAR) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    psf = C._psf()
    a = C._tile(np.random.default_rng(3), "GAL", 40.0, 0.01, psf)
    b = C._tile(np.random.default_rng(3), "GAL", 40.0, 0.01, psf)
    assert a.dtype == np.float32 and a.shape[0] in (2, 3) and a.shape[1:] == (C.TILE, C.TILE)
    np.testing.assert_array_equal(a, b)


def _write_tar(path, files):
    with tarfile.open(path, "w") as tar:
        for name, arr in files.items():
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=arr.dtype.hasobject)
            info = tarfile.TarInfo(name)
            info.size = buf.getbuffer().nbytes
            buf.seek(0)
            tar.addfile(info, buf)


def test_field_type_table_is_the_original_one():
    table = C.FIELD_TYPE
    assert len(table) == 72
    assert sorted(table.values()).count("GAL") == 27
    assert sorted(table.values()).count("EX") == 25
    assert sorted(table.values()).count("GC") == 20
    assert (table["9490_a3"], table["10182_pb"], table["10595_2"], table["13375_4"]) == (
        "GAL",
        "GAL",
        "GC",
        "EX",
    )
    assert C.load_field_types() == table  # read from the package data, not a copy in the module
    # the embedded tars use real folders of the table, GAL and not
    f435w = {C.FIELD_TYPE[f"{p}_{v}"] for _, filt, p, v, *_ in C.EMBEDDED_LAYOUT if filt == "f435w"}
    assert f435w == {"GAL", "GC", "EX"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("proposal,type\n1_1,GAL\n", "first line"),
        ("proposal_visit,field_type\n1_1,GAL\n1_1,EX\n", "line 3: '1_1,EX'"),
        ("proposal_visit,field_type\n1_1,gal\n", "line 2"),
        ("proposal_visit,field_type\n1_1,GAL,x\n", "line 2"),
    ],
)
def test_malformed_field_type_table_is_refused(text, match):
    assert C.load_field_types("proposal_visit,field_type\n1_1,GAL\n\n2_b,GC\n") == {"1_1": "GAL", "2_b": "GC"}
    with pytest.raises(ValueError, match=match):
        C.load_field_types(text, where="table.csv")


def test_unknown_folders_are_listed_in_one_error(tmp_path):
    good = np.zeros((2, 256, 256), np.float32)
    _write_tar(
        tmp_path / C.TRAIN_TAR,
        {
            "npy_train/f435w/12345/7/1_0.npy": good,
            "npy_train/f435w/12345/7/1_1.npy": good,
            "npy_train/f435w/10760/2/1_0.npy": good,
            "npy_train/f435w/99999/x1/1_0.npy": good,
        },
    )
    _write_tar(tmp_path / C.TEST_TAR, {"npy_test/f435w/55555/3/1_0.npy": good})
    with pytest.raises(RawDataError) as err:
        C.read_raw(RawFolder(tmp_path, {}))
    msg = str(err.value)
    assert msg.startswith("3 f435w folder(s) have no field type in nb360/tasks/data/cosmic_field_types.csv")
    for tar, folder, row in (
        (C.TRAIN_TAR, "npy_train/f435w/12345/7", "12345_7,GAL"),
        (C.TRAIN_TAR, "npy_train/f435w/99999/x1", "99999_x1,GAL"),
        (C.TEST_TAR, "npy_test/f435w/55555/3", "55555_3,GAL"),
    ):
        assert f"{tmp_path / tar}: {folder}\n" in msg and f"  {row}" in msg
    assert msg.count("12345/7") == 1 and "10760" not in msg  # a known folder is not listed


def test_pickled_members_and_other_filters(tmp_path):
    good = np.zeros((2, 256, 256), np.float32)
    _write_tar(tmp_path / C.TEST_TAR, {"npy_test/f435w/12513/2/1_0.npy": good})
    obj = np.empty((), dtype=object)
    obj[()] = {"a": 1}
    _write_tar(tmp_path / C.TRAIN_TAR, {"npy_train/f435w/10760/2/1_0.npy": obj})
    with pytest.raises(RawDataError, match=r"object \(pickled\) array"):
        C.read_raw(RawFolder(tmp_path, {}))
    # an unknown visit under another filter is not looked up, as in the original; non-GAL fields are skipped
    files = {f"npy_train/f435w/10760/2/2_{k}.npy": good for k in range(2)}
    files["npy_train/f435w/10595/2/1_0.npy"] = good  # GC
    _write_tar(tmp_path / C.TRAIN_TAR, {"npy_train/f606w/12345/7/1_0.npy": good, **files})
    out = C.read_raw(RawFolder(tmp_path, {}))
    assert {k: len(v) for k, v in out.items()} == {"train": 1, "val": 1, "test": 1}
    assert (out["train"].items["sky"] == 0).all()  # no sky.npy: sky 0, as in the original


def test_make_batch_through_shards(embedded):
    spec = get_task("cosmic")
    manifest = embedded.manifest("cosmic")
    shard = open_shards(manifest, ["train"])[0]
    idx = np.array([5, 0, 7, 5])
    x0, sky = shard.items("x", idx), shard.items("sky", idx)
    train = spec.make_batch(shard, idx, BatchContext(train=True, normaliser={}, rng=np.random.default_rng(0)))
    assert train["x"].shape == (4, *spec.input_shape) and train["x"].dtype == np.float32
    shift = (train["x"] - x0).reshape(4, -1)
    np.testing.assert_allclose(shift, shift[:, :1] * np.ones_like(shift), atol=0.02)  # one offset per image
    factor = shift[:, 0] / sky
    assert (factor >= -0.9 - 1e-4).all() and (factor <= 3 + 1e-4).all() and np.ptp(factor) > 0
    ev = spec.make_batch(shard, idx, BatchContext(train=False, normaliser={}, rng=np.random.default_rng(0)))
    np.testing.assert_array_equal(ev["x"], x0)  # no test-time noise
    for b in (train, ev):
        assert b["y"].dtype == np.float32 and b["mask"].dtype == np.float32
        np.testing.assert_array_equal(b["y"], shard.items("y", idx))
        np.testing.assert_array_equal(b["mask"], 1 - shard.items("ignore", idx))


def _features(x):
    """Per-pixel features of classic CR finders: significance above a median background, fine structure."""
    x = x[:, 0].astype(np.float64)
    med5 = ndimage.median_filter(x, size=(1, 5, 5))
    noise = np.sqrt(np.clip(med5, 1, None) + 25)
    sig = (x - med5) / noise
    med3 = ndimage.median_filter(x, size=(1, 3, 3))
    fine = (med3 - ndimage.median_filter(med3, size=(1, 7, 7))) / noise
    local_max = ndimage.maximum_filter(sig, size=(1, 3, 3))
    return np.arcsinh(np.stack([sig, fine, local_max], -1)).reshape(-1, 3)


def test_learnable_pixel_classifier_beats_trivial(splits):
    tr, te = splits["train"].items, splits["test"].items
    x_tr, y_tr = _features(tr["x"][::2]), tr["y"][::2].reshape(-1)
    keep = np.random.default_rng(0).choice(len(y_tr), 150_000, replace=False)
    clf = LogisticRegression(class_weight="balanced", max_iter=300).fit(x_tr[keep], y_tr[keep])
    logits = clf.decision_function(_features(te["x"]))
    trivial = _one_minus_auroc(te["y"], np.zeros(te["y"].size))
    model = _one_minus_auroc(te["y"], logits)
    assert trivial == pytest.approx(0.5)
    assert model < 0.15, model
