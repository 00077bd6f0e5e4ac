import io
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch

from nb360.data.loader import make_loader
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.safe_pickle import UnsafePickleError, safe_load_npy, safe_loads
from nb360.data.shards import MANIFEST_FORMAT, ShardArrays, open_shards, sha256_file, write_split_shards
from nb360.tasks import BatchContext, EmbeddedContext, get_task
from nb360.tasks import psicov as psicov_module
from nb360.tasks.psicov import (
    BLOSUM62,
    CHANNELS,
    CLIP,
    CROP,
    EVAL_CANVAS,
    MAE8_MAX_DISTANCE,
    MAE8_MIN_SEPARATION,
    PAD,
    PAD_TARGET,
    _patch_map,
    protein_block,
    protein_features,
    val_count,
)
from nb360.train.loop import evaluate

TASK = "psicov"


@pytest.fixture(scope="module")
def raw(embedded) -> RawFolder:
    return RawFolder.from_stamp(embedded.stamp(TASK))


@pytest.fixture(scope="module")
def splits(raw):
    return get_task(TASK).read_raw(raw)


@pytest.fixture(scope="module")
def zipped(raw):
    with zipfile.ZipFile(raw.path("protein.zip")) as z:
        yield z


def _shard(embedded, split: str) -> ShardArrays:
    return open_shards(embedded.manifest(TASK), [split])[0]


def _lst(z: zipfile.ZipFile, name: str) -> list[str]:
    return z.read(name).decode().split()


def mae8(pred: np.ndarray, true: np.ndarray) -> float:
    """nb360.md 1.2, one protein: symmetrise once, floor 0.01, j - i >= 24 and true <= 8 Å, mean |P - Y|."""
    p = np.maximum((pred + pred.T) / 2.0, 0.01)
    i, j = np.triu_indices(len(true), MAE8_MIN_SEPARATION)
    keep = true[i, j] <= MAE8_MAX_DISTANCE
    return float(np.abs(p[i, j] - true[i, j])[keep].mean()) if keep.any() else np.nan


def test_blosum62_constant():
    assert BLOSUM62.shape == (20, 20)
    np.testing.assert_array_equal(BLOSUM62, BLOSUM62.T)
    assert BLOSUM62[17, 17] == 11 and BLOSUM62[4, 4] == 9 and np.diagonal(BLOSUM62).min() == 4
    assert len(CHANNELS) == 57 and CHANNELS[:2] == ("ss_H[j]", "ss_H[i]") and CHANNELS[-3] == "ccmpred"


def test_official_archive_layout(zipped):
    names = set(zipped.namelist())
    deepcov, psicov = _lst(zipped, "deepcov.lst"), _lst(zipped, "psicov.lst")
    assert (len(deepcov), len(psicov)) == (40, 10) and not set(deepcov) & set(psicov)
    for subset, ids in (("deepcov", deepcov), ("psicov", psicov)):
        for pdb in ids:
            assert {f"{subset}/features/{pdb}.pkl", f"{subset}/distance/{pdb}-cb.npy"} <= names
    assert {i.date_time for i in zipped.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    feat = safe_loads(zipped.read(f"deepcov/features/{deepcov[0]}.pkl"))
    n = len(feat["seq"])
    assert feat["ss"].shape == (3, n) and feat["pssm"].shape == (n, 22)
    assert feat["sa"].shape == feat["entropy"].shape == (n,) and feat["ccmpred"].shape == (n, n)
    np.testing.assert_array_equal(feat["ss"].sum(0), 1)  # real DSSP, one-hot
    ly, seq, cb = safe_load_npy(io.BytesIO(zipped.read(f"deepcov/distance/{deepcov[0]}-cb.npy")))
    assert ly == n and seq == feat["seq"] and cb.shape == (n, n)
    np.testing.assert_allclose(np.diagonal(cb, 1), np.diagonal(cb, 1).clip(2.5, 8.0))  # real chain geometry


def test_reader_splits_shapes_and_ranges(splits, zipped):
    deepcov, psicov = _lst(zipped, "deepcov.lst"), _lst(zipped, "psicov.lst")
    nv = val_count(len(deepcov))
    assert (
        {k: len(v) for k, v in splits.items()}
        == {"train": 36, "val": 4, "test": 10}
        == {
            "train": len(deepcov) - nv,
            "val": nv,
            "test": len(psicov),
        }
    )
    assert [p.decode() for p in splits["val"].items["pdb"]] == deepcov[:nv]  # validation = head of the list
    assert [p.decode() for p in splits["test"].items["pdb"]] == psicov
    for data in splits.values():
        lengths = data.items["length"]
        assert lengths.dtype == np.int64 and lengths.min() >= 79 and lengths.max() <= 173
        for n, f1, pair, dist in zip(
            lengths, data.ragged["feat1d"], data.ragged["pair"], data.ragged["dist"], strict=True
        ):
            assert f1.shape == (n, 27) and pair.shape == (n * n, 3) and dist.shape == (n * n,)
            assert f1.dtype == pair.dtype == dist.dtype == np.float32
            assert np.isfinite(f1).all() and np.isfinite(pair).all() and np.isfinite(dist).all()
            d = dist.reshape(n, n)
            assert d.min() >= 1.0 and d.max() <= 500.0
            np.testing.assert_allclose(d, d.T, atol=1e-4)
            np.testing.assert_allclose(
                np.diagonal(d)[1:-1], (d[1:-1, :-2].diagonal() + d[1:-1, 2:].diagonal()) / 2
            )
            assert np.abs(pair).max() < 100 and f1[:, 25].min() >= 0 and f1[:, 25].max() <= 1  # sa
    assert val_count(3456) == 100 and val_count(40) == 4 and val_count(5) == 1


def test_patch_map_as_pdnet():
    y = np.array([[0.0, 3.8, 6.0], [3.8, 0.0, 3.6], [6.0, 3.6, 0.2]])
    out = _patch_map(y, "x")
    np.testing.assert_allclose(np.diagonal(out), [3.8, 3.7, 3.6])
    y[1, 0] = y[1, 2] = np.nan
    assert _patch_map(y, "x")[1, 1] == 1.0
    with pytest.raises(RawDataError, match="outside"):
        _patch_map(np.full((3, 3), 600.0), "x")


def test_generation_is_deterministic(embedded, raw, tmp_path, pypi_cache):
    get_task(TASK).generate_embedded(tmp_path, EmbeddedContext(seed=0, cache_dir=pypi_cache))
    assert sha256_file(tmp_path / "protein.zip") == raw.checksums["protein.zip"]


def test_reader_verifies_the_archive_before_unpickling(raw, tmp_path):
    copy = tmp_path / "protein.zip"
    shutil.copy(raw.path("protein.zip"), copy)
    with open(copy, "r+b") as f:  # flip one byte: the recorded checksum no longer matches
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(RawDataError, match="changed since it was verified"):
        get_task(TASK).read_raw(RawFolder(tmp_path, raw.checksums))


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_reader_uses_the_restricted_unpickler(raw, zipped, tmp_path):
    pdb = _lst(zipped, "deepcov.lst")[0]
    out = tmp_path / "protein.zip"
    with zipfile.ZipFile(out, "w") as z:
        for info in zipped.infolist():
            data = zipped.read(info)
            if info.filename == f"deepcov/features/{pdb}.pkl":
                feat = pickle.loads(data)  # our own embedded file
                feat["seq"] = _Evil()
                data = pickle.dumps(feat)
            z.writestr(info.filename, data)  # fresh ZipInfo: writing mutates the reader's one
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle (posix|os)\.getcwd"):
        get_task(TASK).read_raw(RawFolder(tmp_path, {"protein.zip": sha256_file(out)}))


def test_reader_names_a_malformed_member(raw, zipped, tmp_path):
    pdb = _lst(zipped, "psicov.lst")[0]
    out = tmp_path / "protein.zip"
    with zipfile.ZipFile(out, "w") as z:
        for info in zipped.infolist():
            data = zipped.read(info)
            if info.filename == f"psicov/features/{pdb}.pkl":
                feat = pickle.loads(data)
                feat["pssm"] = feat["pssm"][:, :20]
                data = pickle.dumps(feat)
            z.writestr(info.filename, data)  # fresh ZipInfo: writing mutates the reader's one
    with pytest.raises(RawDataError, match=f"psicov/features/{pdb}.pkl: pssm has shape"):
        get_task(TASK).read_raw(RawFolder(tmp_path, {"protein.zip": sha256_file(out)}))


def test_training_batches(embedded, zipped):
    spec = get_task(TASK)
    shard = _shard(embedded, "train")
    lengths = shard.items("length")
    idx = np.array([int(np.argmin(lengths)), int(np.argmax(lengths)), 0])
    batch = spec.make_batch(shard, idx, BatchContext(train=True, normaliser={}, rng=np.random.default_rng(7)))
    x, y, mask = batch["x"], batch["y"], batch["mask"]
    assert x.shape == (3, *spec.input_shape) == (3, 57, CROP, CROP) and x.dtype == np.float32
    assert y.shape == mask.shape == (3, 1, CROP, CROP) and y.dtype == np.float32 and mask.dtype == bool
    assert np.isfinite(x).all() and y.min() >= 1.0 and y.max() == CLIP
    # Short protein: padded by 5, placed top-left; padding zero in x, 100 -> 16 in y, outside the mask.
    n, h = int(lengths[idx[0]]), PAD // 2
    assert n + PAD <= CROP and mask[0].sum() == n * n and mask[0, 0, h : h + n, h : h + n].all()
    assert not x[0, :, :h].any() and not x[0, :, h + n :].any() and (y[0, 0, h + n :] == CLIP).all()
    # Channel order (PDNet get_feature): f[j] tiled along rows, then f[i]; then ccmpred, freecon, potential.
    pdb = shard.items("pdb", idx[:1])[0].decode()
    feat = safe_loads(zipped.read(f"deepcov/features/{pdb}.pkl"))
    blk = x[0, :, h : h + n, h : h + n]
    np.testing.assert_allclose(blk[0], np.tile(feat["ss"][0], (n, 1)))
    np.testing.assert_allclose(blk[7], np.tile(feat["pssm"][:, 0][:, None], (1, n)))
    np.testing.assert_allclose(blk[52], np.tile(feat["entropy"], (n, 1)))
    np.testing.assert_allclose(blk[54], feat["ccmpred"])
    np.testing.assert_allclose(blk[56], feat["potential"])
    # Long protein: a random 128 crop of the padded map, the same window as the evaluation canvas.
    ev = spec.make_batch(
        shard, idx[1:2], BatchContext(train=False, normaliser={}, rng=np.random.default_rng(0))
    )
    rng = np.random.default_rng(7)
    span = int(lengths[idx[1]]) + PAD - CROP + 1
    r0, c0 = int(rng.integers(0, span)), int(rng.integers(0, span))
    np.testing.assert_array_equal(x[1], ev["x"][0, :, r0 : r0 + CROP, c0 : c0 + CROP])
    np.testing.assert_array_equal(y[1, 0], np.minimum(ev["y"][0, 0, r0 : r0 + CROP, c0 : c0 + CROP], CLIP))
    again = spec.make_batch(shard, idx, BatchContext(train=True, normaliser={}, rng=np.random.default_rng(8)))
    assert not np.array_equal(again["x"][1], x[1])  # crops come from ctx.rng


def test_evaluation_batches(embedded, splits):
    spec = get_task(TASK)
    shard = _shard(embedded, "test")
    batch = spec.make_batch(
        shard, np.array([2, 0]), BatchContext(train=False, normaliser={}, rng=np.random.default_rng(0))
    )
    assert batch["x"].shape == (2, 57, EVAL_CANVAS, EVAL_CANVAS) and batch["y"].shape == (
        2,
        1,
        EVAL_CANVAS,
        EVAL_CANVAS,
    )
    lengths = batch["length"]
    np.testing.assert_array_equal(lengths, splits["test"].items["length"][[2, 0]])
    for b, n in enumerate(lengths):
        true = splits["test"].ragged["dist"][[2, 0][b]].reshape(n, n)
        np.testing.assert_array_equal(protein_block(batch["y"][b, 0], n), true)  # unclipped
        assert true.max() > CLIP and batch["mask"][b].sum() == n * n
        assert (batch["y"][b, 0, n + PAD // 2 :] == PAD_TARGET).all()
        x, _ = protein_features(shard, [2, 0][b])
        np.testing.assert_array_equal(protein_block(batch["x"][b], n), x)


def _pixels(x: np.ndarray) -> np.ndarray:
    """Per-pixel inputs of the small model: the 57 channels plus log sequence separation."""
    n = x.shape[-1]
    sep = np.log1p(np.abs(np.subtract.outer(np.arange(n), np.arange(n))))
    return np.concatenate([x, sep[None], sep[None] ** 2]).reshape(59, -1).T.astype(np.float64)


def test_learnable_by_a_per_pixel_ridge_model(embedded):
    """Ridge regression on the 57 channels (per residue pair) beats the trivial predictors clearly on MAE8."""
    train, test = _shard(embedded, "train"), _shard(embedded, "test")
    rng = np.random.default_rng(0)
    feats, targets, sep_sum, sep_cnt = [], [], np.zeros(512), np.zeros(512)
    for i in range(train.n_items):
        x, y = protein_features(train, i)
        n = len(y)
        yc = np.minimum(y, CLIP).ravel()  # training targets as the loader gives them
        sep = np.abs(np.subtract.outer(np.arange(n), np.arange(n))).ravel()
        np.add.at(sep_sum, sep, yc)
        np.add.at(sep_cnt, sep, 1)
        keep = rng.random(n * n) < 0.3
        feats.append(_pixels(x)[keep])
        targets.append(yc[keep])
    a, t = np.concatenate(feats), np.concatenate(targets)
    mu, sd = a.mean(0), a.std(0) + 1e-6
    a = np.c_[(a - mu) / sd, np.ones(len(a))]
    w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ t)
    global_mean = t.mean()
    sep_mean = np.where(sep_cnt > 0, sep_sum / np.maximum(sep_cnt, 1), global_mean)

    scores = {"ridge": [], "global_mean": [], "separation_mean": []}
    mse = {k: [] for k in scores}
    for i in range(test.n_items):  # evaluation batches: full maps on the 512 canvas, cut back to L x L
        batch = get_task(TASK).make_batch(
            test, np.array([i]), BatchContext(False, {}, np.random.default_rng(0))
        )
        n = int(batch["length"][0])
        x, y = protein_block(batch["x"][0], n), protein_block(batch["y"][0, 0], n)
        sep = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
        preds = {
            "ridge": (np.c_[(_pixels(x) - mu) / sd, np.ones(n * n)] @ w).reshape(n, n),
            "global_mean": np.full((n, n), global_mean),
            "separation_mean": sep_mean[sep],
        }
        for k, p in preds.items():
            scores[k].append(mae8(p, y))
            mse[k].append(np.mean((p - np.minimum(y, CLIP)) ** 2))
    mae = {k: float(np.nanmean(v)) for k, v in scores.items()}
    mse = {k: float(np.mean(v)) for k, v in mse.items()}
    print("MAE8", mae, "clipped MSE", mse)
    assert mae["ridge"] < 0.8 * min(mae["global_mean"], mae["separation_mean"])
    assert mse["ridge"] < 0.85 * min(mse["global_mean"], mse["separation_mean"])


def test_evaluation_with_canvases_of_different_sizes_in_different_batches(tmp_path):
    """A protein over 502 residues gets a bigger canvas than the other batches: the evaluation must still
    score every protein (the batches cannot be concatenated into one array)."""
    rng = np.random.default_rng(0)
    lengths = [40, 60, 510, 30]  # batches of 2: [40, 60] on 512, [510, 30] on 640
    proteins, expected = [], []
    for k, n in enumerate(lengths):
        dist = rng.uniform(3.0, 12.0, (n, n))
        dist = (dist + dist.T) / 2
        dist[0, -1] = dist[-1, 0] = np.nan  # an unknown distance is left out
        pair = rng.uniform(0.0, 10.0, (n * n, 3)).astype(np.float32)
        proteins.append(
            {
                "feat1d": rng.uniform(0.0, 1.0, (n, 27)).astype(np.float32),
                "pair": pair,
                "dist": dist.reshape(-1).astype(np.float32),
                "length": n,
                "pdb": f"p{k}",
            }
        )
        # the model below predicts the ccmpred channel: the expected MAE8 per protein, by hand
        expected.append(mae8(pair[:, 0].reshape(n, n).astype(np.float64), dist.astype(np.float32)))
    entry = write_split_shards(tmp_path, TASK, "test", psicov_module._split(proteins), 400)
    manifest = {"format": MANIFEST_FORMAT, "task": TASK, "splits": {"test": entry}, "_dir": str(tmp_path)}
    model = torch.nn.Conv2d(len(CHANNELS), 1, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[0, CHANNELS.index("ccmpred"), 0, 0] = 1.0
    spec = get_task(TASK)
    batches = list(make_loader(manifest, ["test"], 2, train=False))
    assert [b["x"].shape[-1] for b in batches] == [EVAL_CANVAS, EVAL_CANVAS + CROP]
    got = evaluate(model, spec, manifest, ("test",), ("train",), batch_size=2)
    assert got == {"mae8": pytest.approx(np.nanmean(expected), rel=1e-5)}


def test_raw_file_entry():
    (rf,) = get_task(TASK).raw_files
    assert rf.name == "protein.zip" and rf.pickled and rf.url.endswith("/protein.zip")
