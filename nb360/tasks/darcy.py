"""Darcy Flow (FNO benchmark): piecewise-constant permeability on [0,1]² -> pressure field, 85×85.

Official files (bucket root): ``piececonst_r421_N1024_smooth1.mat`` (train/val) and
``piececonst_r421_N1024_smooth2.mat`` (test), MATLAB files with fields ``coeff`` (permeability a) and ``sol``
(solution u), each of shape (N, 421, 421). They are read with ``scipy.io.loadmat``, falling back to ``h5py``
for MATLAB v7.3 files (HDF5, arrays stored transposed), and subsampled ``[::5, ::5]`` -> 85×85
(reference 1.3). Splits: train = the first 900 samples of file 1, val = samples 900-999, test = the first 100
of file 2. Files with fewer than 1000 (resp. 100) samples are split by :func:`split_sizes` (90 % / 10 % of
file 1, up to 100 of file 2), since the official loader's fixed counts fail on them (reference 1.4).

Stored items (channels first): ``coeff`` and ``sol``, raw float32 of shape (N, 1, 85, 85).
Normaliser (manifest): the official pointwise ``UnitGaussianNormalizer`` (per-pixel mean and std over the fit
samples, ``encode(v) = (v - mean) / (std + eps)``, eps 1e-5) for the coefficient (``x_*``) and the solution
(``y_*``), fitted on ``train`` (search) and on ``train+val`` (retrain), stored under those keys. The std is
``torch.std``'s default, the **unbiased** one (ddof = 1), for both; the manifest records ``"ddof": 1`` and
shards without it are refused (rebuild them).
Batches: ``x`` = normalised coefficient + the grid on [0,1]² -> (3, 85, 85); ``y`` = the **raw** solution
(1, 85, 85). The grid channels are the original's (:func:`grid`): its ``create_grid`` stacks
``np.meshgrid(t, t)`` (default ``"xy"`` indexing) channels last and the backbone permutes
``(0, 3, 1, 2)``, so channel 1 is ``t[j]`` (varies along the last axis, the columns) and channel 2 is
``t[i]`` (varies along the rows); FNO's own ``get_grid`` has the opposite order, the benchmark's loader does
not use it. The model's output lives in normalised units: the loss and the metric decode it with the
y normaliser of the same fit (:func:`decode_y`) and compare it with the raw ``y`` (relative L2 per sample,
averaged over samples; nb360.md 1.2).

Embedded default: a physical solver, as FNO generated the real data. The coefficient is a = ψ(g) with
g ~ N(0, (-Δ + τ²)^-α), τ = 3, α = 2, sampled like FNO's ``GaussianRF`` through DCT coefficients on the
421 grid (``scipy.fft.idctn``, orthonormal), ψ = 12 where g ≥ 0 and 3 where g < 0; then -∇·(a∇u) = 1 with
u = 0 on the boundary, 5-point finite differences with harmonic-mean face coefficients and a sparse direct
solve. Solving at 421×421 costs ~1.5 s per sample, so the equation is solved on the 85 grid, whose nodes
are exactly the 421-grid nodes the reader keeps (421 = 5·84 + 1): each coarse face coefficient is the
block-upscaled 421 coefficient (harmonic mean of the 5 fine faces in series along the flux, arithmetic mean
over the 5 fine lines across it). On checked samples this matches the 421 solve subsampled at the kept nodes
to 0.07-0.34 % relative L2 (sampling the coefficient at the nodes instead: 0.4-1.2 %); u_max ≈ 0.013 as in
FNO's data. The other 421-grid points of ``sol`` (which the reader discards) are filled by bilinear
interpolation; ``coeff`` is the exact ψ(g) on the 421 grid. Files are written float32 with
``scipy.io.savemat(do_compression=True)`` behind a fixed header text (scipy's header carries a timestamp).
Sizes: file 1 :data:`EMBEDDED_N_TRAINVAL` = 100 samples (90 train / 10 val), file 2 :data:`EMBEDDED_N_TEST`
= 30 (test), ~81 MB in all (the fill does not compress). Ridge regression from 17×17-pooled normalised
coefficients reaches rel. L2 ≈ 0.08 on test, the training-mean field 0.25. Licence: generated here (the
benchmark data is MIT).

Deviation: the official loader yields channels-last (N, 85, 85, 3); here x is channels first (3, 85, 85).
Deviation: ``y`` in a batch is the raw solution, not the encoded one; the loss decodes the output instead
(the official code decodes both the output and the encoded target, which is the same up to rounding).
Deviation: the official evaluation averages per-batch means (nb360.md 1.2b); the documented protocol, a mean
over samples, is the reference.
Deviation: the fields are stored as float32 whatever the file's precision (FNO's files are double).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.shards import ShardArrays, SplitData
from nb360.lazy import lazy_import
from nb360.tasks.base import (
    S3_BASE,
    BatchContext,
    EmbeddedContext,
    RawFile,
    RealCounts,
    TaskSpec,
    register_task,
)
from nb360.tasks.common import rng_for

sio = lazy_import("scipy.io")
sfft = lazy_import("scipy.fft")
sp = lazy_import("scipy.sparse")
spl = lazy_import("scipy.sparse.linalg")

TRAINVAL_FILE = "piececonst_r421_N1024_smooth1.mat"
TEST_FILE = "piececonst_r421_N1024_smooth2.mat"
FINE = 421  # resolution of the official files
SUB = 5  # official subsampling step
S = (FINE - 1) // SUB + 1  # 85
# Official split sizes (reference 1.3); smaller files fall back to split_sizes' proportional rule.
N_TRAIN, N_VAL, N_TEST = 900, 100, 100
EPS = 1e-5  # UnitGaussianNormalizer eps
DDOF = 1  # UnitGaussianNormalizer's torch.std is the unbiased std
# Embedded generator: GRF and coefficient as in FNO's data (tau 3, alpha 2, psi 12 / 3).
TAU, ALPHA = 3.0, 2.0
A_HIGH, A_LOW = 12.0, 3.0
EMBEDDED_N_TRAINVAL = 100  # -> 90 train / 10 val
EMBEDDED_N_TEST = 30


# ----------------------------------------------------------------------------------------------- reading


def split_sizes(n_file1: int, n_file2: int) -> tuple[int, int, int]:
    """(train, val, test) sample counts: the official 900/100/100 when the files are large enough, else
    90 % / 10 % of file 1 (at least one validation and two training samples) and up to 100 of file 2."""
    if n_file1 >= N_TRAIN + N_VAL:
        n_train, n_val = N_TRAIN, N_VAL
    else:
        n_val = max(1, round(0.1 * n_file1))
        n_train = n_file1 - n_val
    if n_train < 2 or n_file2 < 1:  # the unbiased std of the normaliser needs two training samples
        raise ValueError(
            f"Darcy files too small: {n_file1} train/val and {n_file2} test samples (need at least 3 in the "
            "first file and 1 in the second)"
        )
    return n_train, n_val, min(N_TEST, n_file2)


def _read_field_mat(path: Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Fields of a MATLAB file subsampled to 85×85, as (N, 85, 85) float32 (v5 via scipy, v7.3 via h5py)."""
    try:
        mat = sio.loadmat(path, variable_names=list(fields))
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        return _read_field_h5(path, fields)
    except ValueError as e:
        raise ValueError(f"{path} is not a readable MATLAB file ({e}); fetch it again") from e
    out = {}
    for name in fields:
        if name not in mat:
            raise ValueError(f"{path} has no field {name!r} (has: {sorted(k for k in mat if k[0] != '_')})")
        out[name] = _subsample(np.asarray(mat[name]), path, name)
    return out


def _read_field_h5(path: Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for name in fields:
            if name not in f:
                raise ValueError(f"{path} (MATLAB v7.3) has no field {name!r} (has: {sorted(f)})")
            ds = f[name]
            if ds.ndim != 3:
                raise ValueError(f"{path}: field {name!r} has shape {ds.shape}, expected 3 dimensions")
            # MATLAB is column-major, so HDF5 holds (421, 421, N): subsample while reading, then reverse axes.
            arr = np.transpose(ds[::SUB, ::SUB, :], (2, 1, 0))
            out[name] = _subsample(arr, path, name, step=1)
    return out


def _subsample(arr: np.ndarray, path: Path, name: str, step: int = SUB) -> np.ndarray:
    if arr.ndim != 3 or (step > 1 and min(arr.shape[1:]) < FINE) or (step == 1 and min(arr.shape[1:]) < S):
        raise ValueError(
            f"{path}: field {name!r} has shape {arr.shape}, expected (N, {FINE}, {FINE}); "
            "is this the official piececonst_r421 file?"
        )
    out = np.ascontiguousarray(arr[:, ::step, ::step][:, :S, :S], dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{path}: field {name!r} contains NaN or inf; the file is corrupt, fetch it again")
    return out


def read_raw(raw: RawFolder) -> dict[str, SplitData]:
    fields = ("coeff", "sol")
    f1 = _read_field_mat(raw.path(TRAINVAL_FILE), fields)
    f2 = _read_field_mat(raw.path(TEST_FILE), fields)
    for f, name in ((f1, TRAINVAL_FILE), (f2, TEST_FILE)):
        if len(f["coeff"]) != len(f["sol"]):
            raise RawDataError(
                f"{raw.root / name}: coeff and sol have different sample counts; fetch it again"
            )
    n_train, n_val, n_test = split_sizes(len(f1["coeff"]), len(f2["coeff"]))

    def part(f: dict[str, np.ndarray], lo: int, hi: int) -> SplitData:
        return SplitData(items={k: f[k][lo:hi, None] for k in fields})

    return {
        "train": part(f1, 0, n_train),
        "val": part(f1, n_train, n_train + n_val),
        "test": part(f2, 0, n_test),
    }


# ------------------------------------------------------------------------------------ normaliser, batch


def _pointwise(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and unbiased std (ddof = 1, ``torch.std``'s default, as the original) over samples."""
    v = v.reshape(len(v), S, S).astype(np.float64)
    return v.mean(axis=0).astype(np.float32), v.std(axis=0, ddof=DDOF).astype(np.float32)


def fit_normaliser(splits: dict[str, SplitData]) -> dict[str, Any]:
    """Per-pixel mean/std of coefficient (x_*) and solution (y_*), fitted on train and on train+val."""
    out: dict[str, Any] = {"eps": EPS, "kind": "pointwise_gaussian", "ddof": DDOF}
    for key, names in (("train", ("train",)), ("train+val", ("train", "val"))):
        stats = {}
        for field, prefix in (("coeff", "x"), ("sol", "y")):
            mean, std = _pointwise(np.concatenate([splits[n].items[field] for n in names]))
            stats[f"{prefix}_mean"], stats[f"{prefix}_std"] = mean, std
        out[key] = stats
    return out


def _stats(
    normaliser: dict[str, Any], fit_splits: tuple[str, ...], name: str
) -> tuple[np.ndarray, np.ndarray]:
    key = "+".join(fit_splits)
    if key not in normaliser or normaliser.get("ddof") != DDOF:
        raise KeyError(
            f"darcy normaliser has no fit {key!r} with the unbiased std (ddof {DDOF}); the shards were built "
            "by an older nb360: rebuild them with this version"
        )
    s = normaliser[key]
    return np.asarray(s[f"{name}_mean"], np.float32), np.asarray(s[f"{name}_std"], np.float32)


def grid() -> np.ndarray:
    """The original's grid on [0,1]², channels first (2, 85, 85): ``grid()[0, i, j] = t[j]`` (varies along
    the columns) and ``grid()[1, i, j] = t[i]`` (along the rows), ``t = linspace(0, 1, 85)``: its
    ``create_grid`` stacks ``np.meshgrid(t, t)`` ("xy" indexing) channels last, then the backbone permutes
    channels last -> first, which keeps that order."""
    g = np.linspace(0.0, 1.0, S, dtype=np.float32)
    return np.stack(np.meshgrid(g, g, indexing="xy"))


def encode_x(coeff: np.ndarray, normaliser: dict[str, Any], fit_splits: tuple[str, ...]) -> np.ndarray:
    mean, std = _stats(normaliser, fit_splits, "x")
    return (coeff - mean) / (std + normaliser.get("eps", EPS))


def decode_y(out: np.ndarray, normaliser: dict[str, Any], fit_splits: tuple[str, ...]) -> np.ndarray:
    """Network output (normalised units) -> solution units, as the loss and metric need it."""
    mean, std = _stats(normaliser, fit_splits, "y")
    return out * (std + normaliser.get("eps", EPS)) + mean


def encode_y(sol: np.ndarray, normaliser: dict[str, Any], fit_splits: tuple[str, ...]) -> np.ndarray:
    mean, std = _stats(normaliser, fit_splits, "y")
    return (sol - mean) / (std + normaliser.get("eps", EPS))


def decode_output(out: Any, normaliser: dict[str, Any], fit_splits: tuple[str, ...]) -> Any:
    """:func:`decode_y` for torch tensors (keeps the graph, device and dtype of ``out``)."""
    import torch

    mean, std = _stats(normaliser, fit_splits, "y")
    scale = torch.as_tensor(std + normaliser.get("eps", EPS), device=out.device, dtype=out.dtype)
    return out * scale + torch.as_tensor(mean, device=out.device, dtype=out.dtype)


def make_batch(shard: ShardArrays, idx: np.ndarray, ctx: BatchContext) -> dict[str, np.ndarray]:
    """x: normalised coefficient + grid (B, 3, 85, 85); y: raw solution (B, 1, 85, 85)."""
    coeff = shard.items("coeff", idx).astype(np.float32, copy=False)
    a = encode_x(coeff, dict(ctx.normaliser), tuple(ctx.fit_splits))
    g = np.broadcast_to(grid(), (len(a), 2, S, S))
    x = np.concatenate([a, g], axis=1).astype(np.float32)
    return {"x": x, "y": shard.items("sol", idx).astype(np.float32, copy=False)}


# ---------------------------------------------------------------------------------------- embedded data


def gaussian_rf(
    rng: np.random.Generator, s: int = FINE, alpha: float = ALPHA, tau: float = TAU
) -> np.ndarray:
    """g ~ N(0, (-Δ + τ²)^-α) on an s×s grid, via DCT coefficients (as FNO's GaussianRF)."""
    k = np.arange(s, dtype=np.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    coef = tau ** (alpha - 1) * (np.pi**2 * k2 + tau**2) ** (-alpha / 2)
    spec = s * coef * rng.standard_normal((s, s))
    spec[0, 0] = 0.0  # zero mean
    return sfft.idctn(spec, norm="ortho")


def _harmonic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 2.0 * a * b / (a + b)


def _across(faces: np.ndarray) -> np.ndarray:
    """Mean over the 5 fine lines centred on each coarse line (axis 1, clipped at the boundary)."""
    c = np.concatenate([np.zeros((faces.shape[0], 1)), np.cumsum(faces, axis=1)], axis=1)
    centre = np.arange(S) * SUB
    lo, hi = np.clip(centre - SUB // 2, 0, FINE), np.clip(centre + SUB // 2 + 1, 0, FINE)
    return (c[:, hi] - c[:, lo]) / (hi - lo)


def upscaled_faces(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coarse (85-grid) face coefficients from the 421-grid coefficient: fine faces (harmonic mean of the
    two nodes) in series along the flux (harmonic), the 5 lines across it in parallel (arithmetic).
    Returns faces along axis 0, (84, 85), and along axis 1, (85, 84)."""
    f0 = _harmonic(a[1:, :], a[:-1, :])  # (420, 421)
    series0 = SUB / (1.0 / f0).reshape(S - 1, SUB, FINE).sum(axis=1)  # (84, 421)
    f1 = _harmonic(a[:, 1:], a[:, :-1])  # (421, 420)
    series1 = SUB / (1.0 / f1).reshape(FINE, S - 1, SUB).sum(axis=2)  # (421, 84)
    return _across(series0), _across(series1.T).T


def solve_darcy(face0: np.ndarray, face1: np.ndarray, f: float = 1.0) -> np.ndarray:
    """-∇·(a∇u) = f on [0,1]², u = 0 on the boundary; 5-point stencil on an n×n node grid whose face
    coefficients between neighbours along axis 0 / axis 1 are ``face0`` (n-1, n) / ``face1`` (n, n-1)."""
    n = face0.shape[1]
    h = 1.0 / (n - 1)
    m = n - 2  # interior nodes per axis
    w, e = face0[:-1, 1:-1], face0[1:, 1:-1]  # faces to the node before / after along axis 0
    s_, nn = face1[1:-1, :-1], face1[1:-1, 1:]
    idx = np.arange(m * m).reshape(m, m)
    rows = [idx.ravel(), idx[1:, :].ravel(), idx[:-1, :].ravel(), idx[:, 1:].ravel(), idx[:, :-1].ravel()]
    cols = [idx.ravel(), idx[:-1, :].ravel(), idx[1:, :].ravel(), idx[:, :-1].ravel(), idx[:, 1:].ravel()]
    vals = [
        (w + e + s_ + nn).ravel(),
        -w[1:, :].ravel(),
        -e[:-1, :].ravel(),
        -s_[:, 1:].ravel(),
        -nn[:, :-1].ravel(),
    ]
    mat = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m)
    )
    u = np.zeros((n, n))
    u[1:-1, 1:-1] = spl.spsolve(mat, np.full(m * m, f * h * h)).reshape(m, m)
    return u


def _bilinear_weights() -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation from the 85 grid to the 421 grid along one axis: left node and weight of the
    right node per fine point (exact at the kept nodes)."""
    pos = np.arange(FINE) / SUB
    left = np.minimum(np.floor(pos).astype(int), S - 2)
    return left, pos - left


def bilinear_fill(u: np.ndarray) -> np.ndarray:
    """(85, 85) -> (421, 421) by bilinear interpolation (separable: one linear pass per axis)."""
    left, w = _bilinear_weights()
    rows = u[left] * (1 - w)[:, None] + u[left + 1] * w[:, None]  # (421, 85)
    return rows[:, left] * (1 - w)[None, :] + rows[:, left + 1] * w[None, :]


def sample_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (coeff, sol) pair on the 421 grid, float32."""
    g = gaussian_rf(rng)
    a = np.where(g >= 0, A_HIGH, A_LOW)
    u = solve_darcy(*upscaled_faces(a))
    return a.astype(np.float32), bilinear_fill(u).astype(np.float32)


def _savemat(path: Path, fields: dict[str, np.ndarray]) -> None:
    """``savemat`` with a fixed header: scipy's header text holds the creation time."""
    text = b"MATLAB 5.0 MAT-file, written by nb360 (embedded Darcy Flow)".ljust(116, b" ")
    header = text + bytes(8) + np.uint16(0x0100).tobytes() + np.uint16(0x4D49).tobytes()
    with open(path, "wb") as fh:
        fh.write(header)  # savemat sees a non-empty stream and writes no header of its own
        sio.savemat(fh, fields, do_compression=True)


def generate_embedded(out_dir: Path, ctx: EmbeddedContext) -> None:
    for name, n, key in (
        (TRAINVAL_FILE, EMBEDDED_N_TRAINVAL, "file1"),
        (TEST_FILE, EMBEDDED_N_TEST, "file2"),
    ):
        rng = rng_for(ctx.seed, "darcy", key)
        coeff = np.empty((n, FINE, FINE), np.float32)
        sol = np.empty((n, FINE, FINE), np.float32)
        for i in range(n):
            coeff[i], sol[i] = sample_pair(rng)
        _savemat(out_dir / name, {"coeff": coeff, "sol": sol})


SPEC = register_task(
    TaskSpec(
        name="darcy",
        title="Darcy Flow",
        dim=2,
        input_shape=(3, S, S),
        output_kind="dense",
        num_outputs=1,
        loss="relative_l2",
        metric="rel_l2",
        metric_lower_is_better=True,
        paper_metric="rel_l2",
        raw_files=(
            RawFile(TRAINVAL_FILE, S3_BASE + TRAINVAL_FILE, 1_600_000_000),
            RawFile(TEST_FILE, S3_BASE + TEST_FILE, 1_600_000_000),
        ),
        read_raw=read_raw,
        generate_embedded=generate_embedded,
        fit_normaliser=fit_normaliser,
        make_batch=make_batch,
        decode_output=decode_output,
        encode_target=encode_y,
        real_counts=RealCounts({"train": 900, "val": 100, "test": 100}, "nb360.md 1.1, 1.4 Darcy"),
        items_per_shard=1_000,
        license="MIT",
        reference="nb360.md 1.2 Darcy, 1.2b, 1.3 Darcy Flow, 1.4",
    )
)
