import h5py
import numpy as np
import pytest

from nb360.data.shards import SplitData, open_shards
from nb360.tasks import BatchContext, darcy, get_task


@pytest.fixture(scope="module")
def splits(embedded):
    return embedded.read("darcy")


def rel_l2(pred: np.ndarray, y: np.ndarray) -> float:
    """nb360.md 1.2: per-sample ||pred - y|| / ||y|| over the flattened field, mean over samples."""
    p, t = pred.reshape(len(pred), -1), y.reshape(len(y), -1)
    return float(np.mean(np.linalg.norm(p - t, axis=1) / np.linalg.norm(t, axis=1)))


def test_split_sizes_rule():
    assert darcy.split_sizes(1024, 1024) == (900, 100, 100)
    assert darcy.split_sizes(1000, 100) == (900, 100, 100)
    assert darcy.split_sizes(darcy.EMBEDDED_N_TRAINVAL, darcy.EMBEDDED_N_TEST) == (90, 10, 30)
    assert darcy.split_sizes(5, 3) == (4, 1, 3)
    assert darcy.split_sizes(3, 1) == (2, 1, 1)
    with pytest.raises(ValueError, match="too small"):
        darcy.split_sizes(2, 5)  # one training sample has no unbiased std


def test_reader_shapes_splits_and_values(splits):
    n_train, n_val, n_test = darcy.split_sizes(darcy.EMBEDDED_N_TRAINVAL, darcy.EMBEDDED_N_TEST)
    assert {k: len(v) for k, v in splits.items()} == {"train": n_train, "val": n_val, "test": n_test}
    for data in splits.values():
        coeff, sol = data.items["coeff"], data.items["sol"]
        assert coeff.shape[1:] == sol.shape[1:] == (1, 85, 85)
        assert coeff.dtype == sol.dtype == np.float32
        assert np.isfinite(coeff).all() and np.isfinite(sol).all()
        assert set(np.unique(coeff)) <= {3.0, 12.0}
        # u = 0 on the boundary, positive inside, magnitude as in FNO's data (u_max ~ 0.013)
        assert np.all(sol[:, :, 0] == 0) and np.all(sol[:, :, :, -1] == 0)
        assert sol.min() >= 0 and 0.005 < sol.max() < 0.03
    # about half of the domain has the high permeability
    assert 0.3 < (splits["train"].items["coeff"] == 12).mean() < 0.7


def test_embedded_file_format_and_subsampling(embedded, splits):
    import scipy.io

    raw = embedded.raw_dir("darcy")
    path = raw / darcy.TEST_FILE
    assert path.read_bytes()[:116].startswith(b"MATLAB 5.0 MAT-file, written by nb360")  # no timestamp
    mat = scipy.io.loadmat(path)
    assert mat["coeff"].shape == mat["sol"].shape == (darcy.EMBEDDED_N_TEST, 421, 421)
    np.testing.assert_array_equal(splits["test"].items["sol"][:, 0], mat["sol"][:, ::5, ::5])
    # the points between kept nodes are the bilinear fill of the 85-grid solution
    np.testing.assert_allclose(
        mat["sol"][0, 2, 5], 0.6 * mat["sol"][0, 0, 5] + 0.4 * mat["sol"][0, 5, 5], rtol=1e-5
    )


def test_hdf5_v73_fallback_reads_transposed_arrays(tmp_path, splits):
    """MATLAB v7.3 files are HDF5 with a 512-byte header block and column-major (transposed) arrays."""
    rng = np.random.default_rng(0)
    fields = {k: rng.random((2, 421, 421)).astype(np.float32) for k in ("coeff", "sol")}
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in fields.items():
            f.create_dataset(k, data=v.transpose(2, 1, 0))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116, b" ")
    header += bytes(8) + np.uint16(0x0200).tobytes() + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header)
    out = darcy._read_field_mat(path, ("coeff", "sol"))
    for k, v in fields.items():
        np.testing.assert_array_equal(out[k], v[:, ::5, ::5])


def test_normaliser_in_manifest(embedded, splits):
    norm = embedded.manifest("darcy")["normaliser"]
    assert norm["eps"] == 1e-5
    for key, names in (("train", ("train",)), ("train+val", ("train", "val"))):
        for field, prefix in (("coeff", "x"), ("sol", "y")):
            v = np.concatenate([splits[n].items[field][:, 0] for n in names]).astype(np.float64)
            np.testing.assert_allclose(norm[key][f"{prefix}_mean"], v.mean(axis=0), rtol=1e-5, atol=1e-7)
            # torch.std's default, the unbiased std, for x and for y
            np.testing.assert_allclose(
                norm[key][f"{prefix}_std"], v.std(axis=0, ddof=1), rtol=1e-4, atol=1e-7
            )
    assert not np.allclose(norm["train"]["x_mean"], norm["train+val"]["x_mean"])
    assert norm["ddof"] == 1


def test_normaliser_std_is_unbiased_by_hand():
    """Two samples, constant fields 1 and 3 (x) and 0 and 4 (y): mean 2, std sqrt(2) resp. 2 * sqrt(2)
    (ddof = 1, as torch.std; the population std would be 1 resp. 2)."""

    def part(values):
        return SplitData(
            items={
                k: np.stack([np.full((1, 85, 85), v, np.float32) for v in vs])
                for k, vs in zip(("coeff", "sol"), values, strict=True)
            }
        )

    norm = darcy.fit_normaliser({"train": part(([1.0, 3.0], [0.0, 4.0])), "val": part(([2.0], [2.0]))})
    t = norm["train"]
    np.testing.assert_allclose(t["x_mean"], 2.0)
    np.testing.assert_allclose(t["x_std"], np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(t["y_std"], 2 * np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(norm["train+val"]["x_std"], 1.0, rtol=1e-6)  # 1, 3, 2: variance 2 / 2
    x = darcy.encode_x(np.full((1, 1, 85, 85), 3.0, np.float32), norm, ("train",))
    np.testing.assert_allclose(x, 1 / (np.sqrt(2.0) + 1e-5), rtol=1e-6)
    old = {k: v for k, v in norm.items() if k != "ddof"}  # shards of an older nb360
    with pytest.raises(KeyError, match="rebuild"):
        darcy.encode_x(np.zeros((1, 1, 85, 85), np.float32), old, ("train",))


def test_grid_channels_in_the_original_order():
    """The original: create_grid = np.meshgrid(t, t) ("xy") stacked channels last, coefficient first,
    then the backbone's permute(0, 3, 1, 2). Input channel 1 = t[j] (columns), channel 2 = t[i] (rows)."""
    g = darcy.grid()
    assert g.shape == (2, 85, 85) and g.dtype == np.float32
    # by hand: t = k / 84
    assert g[0, 0, 84] == 1.0 and g[0, 84, 0] == 0.0 and g[0, 17, 42] == np.float32(0.5)
    assert g[1, 84, 0] == 1.0 and g[1, 0, 84] == 0.0 and g[1, 42, 17] == np.float32(0.5)
    np.testing.assert_allclose(g[0, 5, 21], 21 / 84, rtol=1e-6)
    np.testing.assert_allclose(g[1, 5, 21], 5 / 84, rtol=1e-6)
    # the original's steps, channels last (N, s, s, 3) then permuted to channels first
    t = np.linspace(0, 1, 85)
    original = np.vstack([xx.ravel() for xx in np.meshgrid(t, t)]).T.reshape(1, 85, 85, 2)
    coeff = np.zeros((1, 85, 85, 1))
    x = np.concatenate([coeff, original], axis=3).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x[0, 1:], g, atol=1e-7)


@pytest.mark.parametrize("fit", [("train",), ("train", "val")])
def test_make_batch_from_shards(embedded, splits, fit):
    spec = get_task("darcy")
    manifest = embedded.manifest("darcy")
    norm = manifest["normaliser"]
    shard = open_shards(manifest, ["train"])[0]
    idx = np.arange(len(splits["train"]))
    ctx = BatchContext(train=True, normaliser=norm, rng=np.random.default_rng(0), fit_splits=fit)
    batch = spec.make_batch(shard, idx, ctx)
    x, y = batch["x"], batch["y"]
    assert x.shape == (len(idx), *spec.input_shape) and x.dtype == np.float32
    assert y.shape == (len(idx), 1, 85, 85) and y.dtype == np.float32
    np.testing.assert_array_equal(y, splits["train"].items["sol"])  # raw solution
    stats = norm["+".join(fit)]
    expected = (splits["train"].items["coeff"][:, 0] - np.float32(stats["x_mean"])) / (
        np.float32(stats["x_std"]) + np.float32(1e-5)
    )
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-5, atol=1e-5)
    if fit == ("train",):  # pointwise normalised on its own fit data
        np.testing.assert_allclose(x[:, 0].mean(axis=0), 0, atol=1e-4)
    grid = np.linspace(0, 1, 85, dtype=np.float32)
    np.testing.assert_allclose(x[3, 1], np.broadcast_to(grid[None, :], (85, 85)))  # varies along columns
    np.testing.assert_allclose(x[3, 2], np.broadcast_to(grid[:, None], (85, 85)))  # varies along rows
    # decoding the encoded target gives the raw solution back (what the loss does with the output)
    enc = darcy.encode_y(y, norm, fit)
    np.testing.assert_allclose(darcy.decode_y(enc, norm, fit), y, rtol=1e-4, atol=1e-8)


def test_solver_matches_poisson_and_fine_grid():
    # -Δu = 1 on the unit square, u = 0 on the boundary: u(1/2, 1/2) = 0.0736713...
    ones = np.ones((84, 85))
    u = darcy.solve_darcy(ones, ones.T)
    assert abs(u[42, 42] - 0.0736713) < 2e-4
    # the upscaled 85-grid solve agrees with the 421-grid solve at the kept nodes
    a = np.where(darcy.gaussian_rf(np.random.default_rng(3)) >= 0, 12.0, 3.0)
    fine = darcy.solve_darcy(darcy._harmonic(a[1:], a[:-1]), darcy._harmonic(a[:, 1:], a[:, :-1]))[::5, ::5]
    coarse = darcy.solve_darcy(*darcy.upscaled_faces(a))
    assert np.linalg.norm(coarse - fine) / np.linalg.norm(fine) < 0.01


def test_learnable_ridge_beats_mean_field(splits, embedded):
    norm = embedded.manifest("darcy")["normaliser"]
    fit = ("train",)

    def features(data):
        a = darcy.encode_x(data.items["coeff"][:, 0], norm, fit)
        return a.reshape(len(a), 17, 5, 17, 5).mean(axis=(2, 4)).reshape(len(a), -1)

    train, test = splits["train"], splits["test"]
    x_tr, x_te = features(train), features(test)
    y_tr = darcy.encode_y(train.items["sol"], norm, fit).reshape(len(train), -1)
    w = np.linalg.solve(x_tr.T @ x_tr + 10.0 * np.eye(x_tr.shape[1]), x_tr.T @ y_tr)
    pred = darcy.decode_y((x_te @ w).reshape(-1, 1, 85, 85), norm, fit)
    trivial = rel_l2(np.broadcast_to(np.asarray(norm["train"]["y_mean"]), pred.shape), test.items["sol"])
    score = rel_l2(pred, test.items["sol"])
    assert score < 0.6 * trivial, f"ridge {score:.3f} vs mean field {trivial:.3f}"
