"""Cosmic: cosmic-ray detection in HST ACS/WFC images (pixelwise binary masks), after deepCR.

Official format (reference 1.3, 1.4, 2.1): two uncompressed tar files, ``deepCR.ACS-WFC.train.tar`` (6.5 GB)
and ``deepCR.ACS-WFC.test.tar`` (2.0 GB), holding
``npy_train/<filter>/<proposal>/<visit>/<prefix>_<k>.npy`` and the same under ``npy_test``. Each image file
is one array stacking image, cosmic-ray (CR) mask and an optional ignore mask along axis 0 (shape
(2 or 3, H, W)); each visit folder may hold a ``sky.npy`` with one sky level per exposure, indexed by the
integer file-name prefix (1-based: ``sky[int(prefix) - 1]``; no ``sky.npy`` means sky 0, as in the
original). Only filter ``f435w`` and only visits whose ``<proposal>_<visit>`` is labelled ``"GAL"`` in a
hard-coded field-type table are used; every image is cut to the fixed 128x128 crop at offset (64, 64).
Splits: the sorted ``npy_train`` paths, first ``int(0.9 n)`` = train, the rest = val (4,347 / 483 on the
real release); test = every selected ``npy_test`` path (420).

The tars are read in place with :mod:`tarfile` (one sequential pass, nothing extracted) and every member goes
through ``np.load(allow_pickle=False)``: these are plain arrays, and an object array is refused.

Stored items per image: ``x`` (N, 1, 128, 128) float32 image (electrons, sky included, not normalised, as
in the original), ``y`` (N, 1, 128, 128) uint8 CR mask, ``ignore`` (N, 1, 128, 128) uint8 (zeros where the
file has no ignore plane) and ``sky`` (N,) float32. ``make_batch`` adds the sky-background augmentation
``sky * U(-0.9, 3)`` per image in training; the loss mask is ``1 - ignore``; the metric (nb360.md 1.2:
raw logit > 0.5, then 1 - AUROC and FNR pixelwise over all test images) uses every pixel.

The field-type table: :data:`FIELD_TYPE`, read from the package data file ``nb360/tasks/data/
cosmic_field_types.csv`` (columns ``proposal_visit``, ``field_type``): the original loader's hard-coded
dictionary, 72 folders (27 ``GAL`` resolved galaxies, 25 ``EX`` extragalactic fields, 20 ``GC`` globular
clusters), identical in every copy of that loader. An ``f435w`` folder missing from it is an error, as in the
original (a ``KeyError`` there): the reader scans both tars first and then stops once, listing every unknown
folder with its tar and how to add it.

Embedded default (our simulation, MIT): ACS/WFC-like 192x192 tiles in the official format and names. Each
tile is sky (20-80 e-, one level per exposure, in ``sky.npy``) + a scene convolved with a Moffat PSF
(FWHM 2 px): Sersic galaxies ("GAL" fields), many point sources ("GC" fields) or one large galaxy ("EX");
Poisson photon noise and 5 e- Gaussian read noise; saturation at 80,000 e- with charge bleeding along
columns, and a few hot pixels: both form the ignore mask (saturation dilated by one pixel). Cosmic rays are
injected with exact masks: isotropic directions, log-normal track lengths clipped to 1-30 px, Landau-like
charge (``scipy.stats.moyal`` around 10^2-10^3.7 e- per track pixel), straight tracks and random-walk
"worms", then 3x3 charge diffusion; a pixel is in the mask where its CR charge exceeds the background noise
(1 sigma), and 0.5-3 % of the pixels of a tile are hit (rate drawn per exposure). Layout: five "GAL" train
visits of 3 exposures x 22 tiles (330 images -> 297 train / 33 val) and two "GAL" test visits of 2 x 15
(60 test), plus f435w "GC"/"EX" visits and f606w/f814w visits that the reader must skip. Every folder
is a real ``proposal_visit`` of the table, simulated as the field type the table gives it, so the reader's
filter is the one that runs on the real release. About 135 MB + 27 MB of tar. No real frame is used: the
HST frames suggested as backgrounds are not on PyPI, and the Gemini GMOS cutout in the astroscrappy wheel is
a 150x200 ground-based long-slit frame, too unlike ACS imaging.

Deviation: no test-time noise. The original adds a random sky background (``sky * U(-0.9, 3)``) to every
image it loads, validation and test included, and re-seeds NumPy's global RNG in the dataset constructor;
here only training batches are augmented (from the loader's seeded generator), so evaluation is
deterministic.
Deviation: the training paths are sorted before the 90/10 split (the original follows ``os.listdir``
order, which depends on the filesystem).
"""

from __future__ import annotations

import csv
import io
import tarfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np

from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.safe_pickle import npy_dtype
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

ndimage = lazy_import("scipy.ndimage")
signal = lazy_import("scipy.signal")
stats = lazy_import("scipy.stats")

TRAIN_TAR = "deepCR.ACS-WFC.train.tar"
TEST_TAR = "deepCR.ACS-WFC.test.tar"
FILTER = "f435w"
CROP = 128
OFFSET = 64  # fixed crop [64:192, 64:192]
VAL_FRACTION = 0.1
SKY_AUG = (-0.9, 3.0)  # training augmentation: add sky * U(-0.9, 3)

FIELD_TYPES_FILE = "data/cosmic_field_types.csv"  # package data of nb360.tasks
FIELD_TYPE_NAMES = ("GAL", "EX", "GC")  # resolved galaxy, extragalactic field, globular cluster


def load_field_types(
    text: str | None = None, where: str = f"nb360/tasks/{FIELD_TYPES_FILE}"
) -> dict[str, str]:
    """The field type of every ``<proposal>_<visit>`` folder under ``f435w``: the original loader's table,
    shipped as package data (``text`` replaces the file's content, for tests). Only ``"GAL"`` fields are used.

    The file is checked row by row: the header, two columns, a known type, no folder listed twice.
    """
    if text is None:
        text = resources.files("nb360.tasks").joinpath(FIELD_TYPES_FILE).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != ["proposal_visit", "field_type"]:
        raise ValueError(f"{where}: the first line must be 'proposal_visit,field_type'; reinstall nb360")
    table: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or row[1] not in FIELD_TYPE_NAMES or not row[0] or row[0] in table:
            raise ValueError(
                f"{where}, line {line}: {','.join(row)!r} is not a '<proposal>_<visit>,<type>' row of a new "
                f"folder with a type among {', '.join(FIELD_TYPE_NAMES)}; fix or remove that row"
            )
        table[row[0]] = row[1]
    return table


# Field type per "<proposal>_<visit>" folder under f435w (72 folders on the real release).
FIELD_TYPE: dict[str, str] = load_field_types()


# ---------------------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------------------


def _load_npy_bytes(data: bytes, where: str) -> np.ndarray:
    """A plain ``.npy`` array from bytes; object arrays (pickles) are refused, not unpickled."""
    try:
        dtype = npy_dtype(io.BytesIO(data))
    except ValueError as e:
        raise RawDataError(
            f"{where} is not a valid .npy file ({e}); the tar is corrupt: fetch it again"
        ) from e
    if dtype.hasobject:
        raise RawDataError(
            f"{where} is an object (pickled) array; the official files hold plain numeric arrays, so this "
            "file is not from the official release: fetch the tar again"
        )
    return np.load(io.BytesIO(data), allow_pickle=False)


def _members(tar: tarfile.TarFile, root: str) -> Iterator[tuple[tarfile.TarInfo, tuple[str, ...]]]:
    """Regular files ``<root>/<filter>/<proposal>/<visit>/<name>`` with the path parts after ``root``.

    The root may sit below a leading folder (or ``./``) in the tar; files at any other depth are skipped, as
    the original only lists the files of visit folders.
    """
    for m in tar:
        if not m.isfile():
            continue
        parts = PurePosixPath(m.name).parts
        if root not in parts:
            continue
        rel = parts[parts.index(root) + 1 :]
        if len(rel) == 4:
            yield m, rel


def _read_tar(raw: RawFolder, name: str, root: str) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    """Sorted paths of the selected images, their crops (image, mask, ignore, sky) and the sorted
    ``f435w`` folders missing from :data:`FIELD_TYPE` (their files are not read)."""
    path = raw.path(name)
    images: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    skies: dict[tuple[str, str], np.ndarray] = {}
    want: dict[str, tuple[str, str, str]] = {}  # image path -> (proposal, visit, prefix)
    unknown: set[str] = set()
    with tarfile.open(path, "r:*") as tar:
        for m, (filt, proposal, visit, fname) in _members(tar, root):
            if filt != FILTER or not fname.endswith(".npy"):
                continue
            where = f"{path}:{m.name}"
            key = f"{proposal}_{visit}"
            if fname != "sky.npy":
                if key not in FIELD_TYPE:
                    unknown.add(f"{root}/{filt}/{proposal}/{visit}")
                    continue
                if FIELD_TYPE[key] != "GAL":
                    continue
            f = tar.extractfile(m)
            if f is None:
                raise RawDataError(f"{where} cannot be read from the tar; fetch it again")
            arr = _load_npy_bytes(f.read(), where)
            if fname == "sky.npy":
                skies[(proposal, visit)] = np.asarray(arr, dtype=np.float64).reshape(-1)
                continue
            if arr.ndim != 3 or arr.shape[0] not in (2, 3) or min(arr.shape[1:]) < OFFSET + CROP:
                raise RawDataError(
                    f"{where}: expected an array of shape (2 or 3, H, W) with H, W >= {OFFSET + CROP} "
                    f"(image, CR mask, optional ignore mask), got {arr.shape}; fetch the tar again"
                )
            crop = arr[:, OFFSET : OFFSET + CROP, OFFSET : OFFSET + CROP]
            image = crop[0].astype(np.float32)
            if not np.isfinite(image).all():
                raise RawDataError(f"{where}: the image holds NaN or infinite values; fetch the tar again")
            ignore = crop[2] != 0 if arr.shape[0] == 3 else np.zeros((CROP, CROP), dtype=bool)
            rel = "/".join((root, filt, proposal, visit, fname))
            images[rel] = (image, (crop[1] != 0).astype(np.uint8), ignore.astype(np.uint8))
            want[rel] = (proposal, visit, fname.split("_")[0])
    paths = sorted(images)
    if unknown:
        return paths, {}, sorted(unknown)
    sky = np.zeros(len(paths), dtype=np.float32)
    for i, rel in enumerate(paths):
        proposal, visit, prefix = want[rel]
        levels = skies.get((proposal, visit))
        if levels is None:
            continue  # no sky.npy: sky 0 (no augmentation), as in the original
        if not prefix.isdigit() or not 1 <= int(prefix) <= len(levels):
            raise RawDataError(
                f"{path}:{rel}: the file-name prefix {prefix!r} must be an exposure number 1..{len(levels)} "
                f"indexing {root}/{FILTER}/{proposal}/{visit}/sky.npy; fetch the tar again"
            )
        sky[i] = levels[int(prefix) - 1]
    if not paths:
        raise RawDataError(f"{path} holds no {root}/{FILTER} image of a 'GAL' field; is it the right tar?")
    out = {
        "x": np.stack([images[p][0] for p in paths])[:, None],
        "y": np.stack([images[p][1] for p in paths])[:, None],
        "ignore": np.stack([images[p][2] for p in paths])[:, None],
        "sky": sky,
    }
    return paths, out, []


def read_raw(raw: RawFolder) -> dict[str, SplitData]:
    _, train, unknown_train = _read_tar(raw, TRAIN_TAR, "npy_train")
    _, test, unknown_test = _read_tar(raw, TEST_TAR, "npy_test")
    unknown = [(TRAIN_TAR, f) for f in unknown_train] + [(TEST_TAR, f) for f in unknown_test]
    if unknown:  # one error listing every unknown folder of both tars
        listing = "\n".join(f"  {raw.root / tar}: {folder}" for tar, folder in unknown)
        rows = "\n".join(f"  {'_'.join(folder.split('/')[2:4])},GAL" for _, folder in unknown)
        raise RawDataError(
            f"{len(unknown)} {FILTER} folder(s) have no field type in nb360/tasks/{FIELD_TYPES_FILE} (the "
            f"original loader's table of {len(FIELD_TYPE)} folders; the original stops on them with a "
            f"KeyError too):\n{listing}\nThese tars are not the benchmark's release. To read them anyway, "
            "add one row per folder to that file: GAL to use the folder, or GC / EX to skip it, e.g.\n" + rows
        )
    n = len(train["x"])
    if n < 2:
        raise RawDataError(f"{raw.root / TRAIN_TAR}: need at least 2 training images to split off validation")
    n_train = int(n * (1 - VAL_FRACTION))  # the original's arithmetic: 4,830 -> 4,347 / 483
    return {
        "train": SplitData(items={k: v[:n_train] for k, v in train.items()}),
        "val": SplitData(items={k: v[n_train:] for k, v in train.items()}),
        "test": SplitData(items=test),
    }


def make_batch(shard: ShardArrays, idx: np.ndarray, ctx: BatchContext) -> dict[str, np.ndarray]:
    """``x`` image (+ sky augmentation in training), ``y`` CR mask, ``mask`` loss weights.

    ``y`` and ``mask`` are float32 of shape (B, 1, 128, 128); ``mask`` is 1 where the pixel counts in the
    loss and 0 where the ignore mask is set (the original multiplies logits and targets by it).
    """
    x = shard.items("x", idx).astype(np.float32, copy=True)
    if ctx.train:
        sky = shard.items("sky", idx).astype(np.float64)
        shift = sky * ctx.rng.uniform(SKY_AUG[0], SKY_AUG[1], size=len(sky))
        x += shift.astype(np.float32)[:, None, None, None]
    y = shard.items("y", idx).astype(np.float32)
    mask = 1.0 - shard.items("ignore", idx).astype(np.float32)
    return {"x": x, "y": y, "mask": mask}


# ---------------------------------------------------------------------------------------------------------
# Embedded generator
# ---------------------------------------------------------------------------------------------------------

TILE = 192
READ_NOISE = 5.0  # e-, ACS/WFC-like
FULL_WELL = 80_000.0  # e-
PSF_FWHM = 2.0  # px (0.1" at 0.05"/px)
PSF_BETA = 2.5
CR_FRACTION = (0.005, 0.03)  # fraction of pixels hit, log-uniform per exposure
CR_PIXELS_PER_TRACK = 18.8  # mean mask pixels per CR track (measured on the generator), sets the rate
CR_MASK_SIGMA = 1.0  # a pixel is in the CR mask where the CR charge exceeds this many background sigmas
CR_STEP = 0.3  # px between charge deposits along a track
DIFFUSION = np.array([[0.02, 0.07, 0.02], [0.07, 0.64, 0.07], [0.02, 0.07, 0.02]])

# (root, filter, proposal, visit, exposures, tiles per exposure): folders of the real table, each simulated
# as the field type the table gives it (the other filters' folders are GAL ones).
EMBEDDED_LAYOUT: tuple[tuple[str, str, str, str, int, int], ...] = (
    ("npy_train", "f435w", "10760", "2", 3, 22),
    ("npy_train", "f435w", "10760", "4", 3, 22),
    ("npy_train", "f435w", "9490", "a3", 3, 22),
    ("npy_train", "f435w", "13737", "2", 3, 22),
    ("npy_train", "f435w", "10182", "pb", 3, 22),
    ("npy_train", "f435w", "10595", "2", 1, 4),  # GC: skipped
    ("npy_train", "f435w", "10631", "3", 1, 4),  # EX: skipped
    ("npy_train", "f606w", "10760", "2", 1, 4),  # other filter: skipped
    ("npy_train", "f814w", "13737", "2", 1, 4),  # other filter: skipped
    ("npy_test", "f435w", "12513", "2", 2, 15),
    ("npy_test", "f435w", "10182", "pd", 2, 15),
    ("npy_test", "f435w", "14164", "9", 1, 4),  # EX: skipped
    ("npy_test", "f606w", "12513", "2", 1, 4),  # other filter: skipped
)


def _psf() -> np.ndarray:
    alpha = PSF_FWHM / (2 * np.sqrt(2 ** (1 / PSF_BETA) - 1))
    r = np.arange(-20, 21, dtype=np.float64)  # wide enough that saturated stars show no box edges
    rr2 = r[:, None] ** 2 + r[None, :] ** 2
    k = (1 + rr2 / alpha**2) ** (-PSF_BETA)
    return k / k.sum()


def _sersic(img: np.ndarray, rng: np.random.Generator, flux: float, re: float, n: float, big: bool) -> None:
    """Add an elliptical Sersic profile of total ``flux`` at a random position (stamp-limited)."""
    x0, y0 = rng.uniform(-8, TILE + 8, size=2)
    q, pa = rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
    half = TILE if big else int(min(max(6 * re, 6), 40))
    xs = np.arange(int(x0) - half, int(x0) + half + 1)
    ys = np.arange(int(y0) - half, int(y0) + half + 1)
    dx, dy = xs[None, :] - x0, ys[:, None] - y0
    u = dx * np.cos(pa) + dy * np.sin(pa)
    v = (-dx * np.sin(pa) + dy * np.cos(pa)) / q
    b = 2 * n - 1 / 3 + 0.009876 / n
    prof = np.exp(-b * ((np.hypot(u, v) + 0.1) / re) ** (1 / n))
    prof *= flux / prof.sum()
    inx, iny = (xs >= 0) & (xs < TILE), (ys >= 0) & (ys < TILE)
    if inx.any() and iny.any():
        img[np.ix_(ys[iny], xs[inx])] += prof[np.ix_(iny, inx)]


def _scene(rng: np.random.Generator, field: str, psf: np.ndarray) -> np.ndarray:
    """Noise-free source flux (e-) of one tile: galaxies and stars, convolved with the PSF."""
    img = np.zeros((TILE, TILE))
    n_gal = rng.poisson({"GAL": 30, "GC": 6, "EX": 10}[field])
    for _ in range(n_gal):
        re = float(np.clip(np.exp(rng.normal(np.log(3.0), 0.6)), 0.8, 20))
        _sersic(img, rng, 10 ** rng.uniform(2.5, 5.0), re, rng.uniform(0.5, 4.0), big=False)
    if field == "EX":  # one large, bright galaxy filling the tile
        _sersic(img, rng, 10 ** rng.uniform(6.5, 7.3), rng.uniform(40, 90), rng.uniform(1, 4), big=True)
    n_star = rng.poisson({"GAL": 3, "GC": 80, "EX": 3}[field])
    xs, ys = rng.uniform(0, TILE - 1, size=(2, n_star))
    flux = 10 ** rng.uniform(2.5, 6.3, size=n_star)
    ix, iy = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - ix, ys - iy
    # point sources split bilinearly over the four nearest pixels (sub-pixel positions)
    for ddx, ddy, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(img, (np.minimum(iy + ddy, TILE - 1), np.minimum(ix + ddx, TILE - 1)), flux * w)
    return np.clip(signal.fftconvolve(img, psf, mode="same"), 0, None)


def _cosmic_rays(
    rng: np.random.Generator, fraction: float, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """CR charge (e-) after diffusion and its exact mask (charge > threshold)."""
    n = int(rng.poisson(fraction * TILE * TILE / CR_PIXELS_PER_TRACK))
    charge = np.zeros((TILE, TILE))
    if n == 0:
        return charge, np.zeros((TILE, TILE), dtype=bool)
    length = np.clip(np.exp(rng.normal(np.log(2.5), 0.9, size=n)), 1.0, 30.0)
    worm = rng.random(n) < 0.2
    per_px = 10 ** rng.uniform(2.0, 3.7, size=n)  # mean deposit per pixel of track, e-
    x0, y0 = rng.uniform(-3, TILE + 3, size=(2, n))
    theta = rng.uniform(0, 2 * np.pi, size=n)  # isotropic in the detector plane
    steps = np.ceil(length / CR_STEP).astype(int) + 1
    track = np.repeat(np.arange(n), steps)
    first = np.concatenate([[0], np.cumsum(steps)[:-1]])
    # direction changes: zero for straight tracks, a random walk for worms
    turn = rng.normal(0, 0.5, size=len(track)) * worm[track]
    turn[first] = 0
    ang = theta[track] + _segment_cumsum(turn, first, track)
    dx, dy = CR_STEP * np.cos(ang), CR_STEP * np.sin(ang)
    dx[first], dy[first] = 0, 0
    px = x0[track] + _segment_cumsum(dx, first, track)
    py = y0[track] + _segment_cumsum(dy, first, track)
    # Landau-like fluctuations of the deposited charge (moyal has the Landau's long high tail)
    dep = (
        per_px[track]
        * CR_STEP
        * np.clip(stats.moyal.rvs(loc=1.0, scale=0.3, size=len(track), random_state=rng), 0.05, None)
    )
    ix, iy = np.floor(px).astype(int), np.floor(py).astype(int)
    inside = (ix >= 0) & (ix < TILE) & (iy >= 0) & (iy < TILE)
    np.add.at(charge, (iy[inside], ix[inside]), dep[inside])
    charge = ndimage.convolve(charge, DIFFUSION, mode="constant")
    return charge, charge > threshold


def _segment_cumsum(v: np.ndarray, first: np.ndarray, track: np.ndarray) -> np.ndarray:
    c = np.cumsum(v)
    return c - (c[first] - v[first])[track]


def _bleed(counts: np.ndarray) -> np.ndarray:
    """Clip at full well and bleed the excess charge up and down the columns; returns the saturated mask."""
    sat = counts >= FULL_WELL
    for col in np.flatnonzero(sat.any(axis=0)):
        rows = np.flatnonzero(sat[:, col])
        excess = float((counts[rows, col] - FULL_WELL).sum())
        extra = int(np.ceil(excess / FULL_WELL))
        lo, hi = max(0, rows.min() - extra // 2), min(TILE, rows.max() + 1 + extra - extra // 2)
        sat[lo:hi, col] = True
    counts[sat] = FULL_WELL
    return sat


def _tile(
    rng: np.random.Generator, field: str, sky: float, cr_fraction: float, psf: np.ndarray
) -> np.ndarray:
    """One (2 or 3, TILE, TILE) float32 array: image (e-), CR mask, ignore mask (only when non-empty)."""
    expected = sky + _scene(rng, field, psf)
    sigma_bg = np.sqrt(sky + READ_NOISE**2)
    cr, cr_mask = _cosmic_rays(rng, cr_fraction, CR_MASK_SIGMA * sigma_bg)
    counts = rng.poisson(expected).astype(np.float64) + cr + rng.normal(0, READ_NOISE, size=expected.shape)
    hot = np.zeros((TILE, TILE), dtype=bool)
    n_hot = rng.poisson(1.0)  # flagged hot pixels: part of the ignore mask
    hy, hx = rng.integers(0, TILE, size=(2, n_hot))
    counts[hy, hx] += 10 ** rng.uniform(2, 4, size=n_hot)
    hot[hy, hx] = True
    ignore = ndimage.binary_dilation(_bleed(counts)) | hot
    planes = [counts, cr_mask]
    if ignore.any():
        planes.append(ignore)
    return np.stack(planes).astype(np.float32)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _tarinfo(name: str, size: int | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if size is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = size, 0o644
    return info


def generate_embedded(out_dir: Path, ctx: EmbeddedContext) -> None:
    psf = _psf()
    # member name -> (layout row, exposure, tile) of an image, or None for a folder or sky.npy; members are
    # written in sorted order with fixed metadata, so the tars are byte-identical for a seed
    members: dict[str, tuple[int, int, int] | None] = {}
    skies: dict[str, np.ndarray] = {}
    for v, (root, filt, proposal, visit, n_exp, n_tiles) in enumerate(EMBEDDED_LAYOUT):
        folder = f"{root}/{filt}/{proposal}/{visit}"
        parts = folder.split("/")
        for k in range(1, len(parts) + 1):
            members["/".join(parts[:k])] = None
        rng = rng_for(ctx.seed, "cosmic", v)
        skies[f"{folder}/sky.npy"] = rng.uniform(20.0, 80.0, size=n_exp)  # float64, as in reference 1.4
        members[f"{folder}/sky.npy"] = None
        for e in range(n_exp):
            for t in range(n_tiles):
                members[f"{folder}/{e + 1}_{t}.npy"] = (v, e, t)
    for tar_name, root in ((TRAIN_TAR, "npy_train"), (TEST_TAR, "npy_test")):
        with tarfile.open(out_dir / tar_name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(m for m in members if m.split("/")[0] == root):
                spec = members[name]
                if name in skies:
                    data = _npy_bytes(skies[name])
                elif spec is None:
                    tar.addfile(_tarinfo(name, None))
                    continue
                else:
                    v, e, t = spec
                    _, _, proposal, visit, _, _ = EMBEDDED_LAYOUT[v]
                    field = FIELD_TYPE[f"{proposal}_{visit}"]
                    sky = float(skies[name.rsplit("/", 1)[0] + "/sky.npy"][e])
                    exp_rng = rng_for(ctx.seed, "cosmic", v, e)
                    cr_fraction = float(np.exp(exp_rng.uniform(*np.log(CR_FRACTION))))
                    data = _npy_bytes(
                        _tile(rng_for(ctx.seed, "cosmic", v, e, t), field, sky, cr_fraction, psf)
                    )
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))


SPEC = register_task(
    TaskSpec(
        name="cosmic",
        title="Cosmic",
        dim=2,
        input_shape=(1, CROP, CROP),
        output_kind="dense",
        num_outputs=1,
        loss="masked_bce_with_logits",
        metric="auroc",
        metric_lower_is_better=False,
        paper_metric="one_minus_auroc",
        raw_files=(
            RawFile(TRAIN_TAR, S3_BASE + "cosmic/" + TRAIN_TAR, 6_500_000_000),
            RawFile(TEST_TAR, S3_BASE + "cosmic/" + TEST_TAR, 2_000_000_000),
        ),
        read_raw=read_raw,
        generate_embedded=generate_embedded,
        make_batch=make_batch,
        real_counts=RealCounts({"train": 4_347, "val": 483, "test": 420}, "nb360.md 1.1, 1.3 Cosmic"),
        items_per_shard=2_000,  # about 200 MB per shard on the real data
        license="Open Data (HST archive via deepCR)",
        reference="nb360.md 1.2 Cosmic, 1.3 Cosmic, 1.4",
        notes="1 - AUROC and FNR are computed on binarised predictions (raw logit > 0.5), pixelwise over all "
        "test images; the ignore mask enters the loss only.",
    )
)
