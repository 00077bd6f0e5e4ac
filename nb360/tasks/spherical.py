"""Spherical CIFAR-100: CIFAR-100 images projected onto the sphere, 3x60x60 grid, 100 classes (0-1 error).

Official file: ``s2_cifar100.gz``, a gzip'd pickle of ``{"train": {"images": (N, 3, 60, 60), "labels": (N,)},
"test": {...}}`` (60,000 images in all), made with S2CNN's ``gendata.py`` modified to project all three
channels (reference 1.3). It is checksum-verified and read with the restricted unpickler
(:meth:`RawFolder.load_pickle`). Splits: train = the first 80% of the file's training set, val = its last 20%
(40,000 / 10,000 on the real data), test = the file's test set (10,000). No normalisation and no
augmentation, as in the benchmark's loader, which casts the images to float32 unscaled. Images are stored
as uint8 when the file holds uint8 (S2CNN's generator writes uint8; 4x smaller shards) and as float32
otherwise; ``make_batch`` casts them to float32 without rescaling either way. Labels are int64, 0..99.

Embedded default (``generate_embedded``): the images of the embedded CIFAR-100 set
(:func:`nb360.tasks.cifar100.embedded_images`, the one home of that generator, same seed: the same 3,000
training-file and 1,000 test-file images, 20 of them real CIFAR-100 test images), projected the way S2CNN's
generator does it:

* the 32x32 image lies on the plane tangent to the sphere at the north pole, centred there, with half-width
  ``PLANE_HALF_WIDTH`` = 2, and is lifted onto the unit sphere by inverse stereographic projection from the
  south pole (the equator maps to radius 2, so the image's inscribed disc covers the northern hemisphere);
* each chunk of ``ROTATION_CHUNK`` consecutive images shares one rotation drawn uniformly from SO(3) (a
  random unit quaternion, seeded per split and chunk); ``ROTATE_TRAIN`` / ``ROTATE_TEST`` switch the rotation
  off, like the original's no-rotation options;
* the signal is sampled on the Driscoll-Healy grid of bandwidth 30 (60x60, rows theta_j = pi(2j+1)/(4b),
  columns phi_k = pi k/b) with bilinear interpolation (``scipy.ndimage.map_coordinates``), zero outside the
  image's footprint; each image is then rescaled to 0..255 by its own minimum and maximum and stored as uint8,
  as S2CNN's generator does.

The original used one rotation per 500 images, i.e. 120 rotations over 60,000 images; the embedded set uses
one per ``ROTATION_CHUNK`` = 50 images, so its 4,000 images still see 80 different rotations. The file is a
protocol-4 pickle, gzip'd with a zero timestamp (deterministic bytes).
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.shards import SplitData
from nb360.lazy import lazy_import
from nb360.tasks.base import S3_BASE, EmbeddedContext, RawFile, RealCounts, TaskSpec, register_task
from nb360.tasks.cifar100 import embedded_images
from nb360.tasks.common import default_make_batch, rng_for

ndimage = lazy_import("scipy.ndimage")

FILE = "s2_cifar100.gz"
BANDWIDTH = 30
GRID = 2 * BANDWIDTH  # 60
NUM_CLASSES = 100
PLANE_HALF_WIDTH = 2.0
ROTATION_CHUNK = 50
ROTATE_TRAIN = True
ROTATE_TEST = True


# ----------------------------------------------------------------------------------------------- reading


def _split(obj: Any, key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        part = obj[key]
        images, labels = np.asarray(part["images"]), np.asarray(part["labels"]).reshape(-1)
    except (KeyError, TypeError, IndexError) as e:
        raise RawDataError(
            f"{where}: expected a dict with {key!r} -> {{'images', 'labels'}} ({e!r}); the file is not "
            f"{FILE}: fetch it again"
        ) from None
    if images.ndim != 4 or images.shape[1:] != (3, GRID, GRID):
        raise RawDataError(
            f"{where}: {key} images must have shape (N, 3, {GRID}, {GRID}), got {images.shape}"
        )
    if len(labels) != len(images):
        raise RawDataError(f"{where}: {key} has {len(images)} images but {len(labels)} labels")
    if not np.issubdtype(labels.dtype, np.integer) and not np.array_equal(labels, np.round(labels)):
        raise RawDataError(f"{where}: {key} labels are not integers")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise RawDataError(f"{where}: {key} labels outside 0..{NUM_CLASSES - 1}")
    # Keep uint8 as it is (the loader's float32 cast happens in make_batch); anything else becomes float32.
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
        if not np.isfinite(images).all():
            raise RawDataError(f"{where}: {key} images contain NaN or infinite values")
    return images, labels


def read_raw(raw: RawFolder) -> dict[str, SplitData]:
    where = str(raw.root / FILE)
    try:
        obj = raw.load_pickle(FILE)
    except UnicodeDecodeError:
        # A Python 2 pickle of numpy arrays carries their bytes as str; latin-1 restores them unchanged.
        obj = raw.load_pickle(FILE, encoding="latin1")
    x_tr, y_tr = _split(obj, "train", where)
    x_te, y_te = _split(obj, "test", where)
    n_val = len(x_tr) // 5  # the last 20% of the training set (10,000 of 50,000)
    return {
        "train": SplitData(items={"x": x_tr[:-n_val], "y": y_tr[:-n_val]}),
        "val": SplitData(items={"x": x_tr[-n_val:], "y": y_tr[-n_val:]}),
        "test": SplitData(items={"x": x_te, "y": y_te}),
    }


# ------------------------------------------------------------------------------------------- projection


def dh_grid(bandwidth: int = BANDWIDTH) -> np.ndarray:
    """Unit vectors of the Driscoll-Healy grid, shape (2b, 2b, 3): rows theta_j, columns phi_k."""
    j = np.arange(2 * bandwidth)
    theta = np.pi * (2 * j + 1) / (4 * bandwidth)
    phi = np.pi * j / bandwidth
    t, p = np.meshgrid(theta, phi, indexing="ij")
    return np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix uniform on SO(3), from a uniformly random unit quaternion."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def image_coordinates(
    points: np.ndarray, size: int, half_width: float = PLANE_HALF_WIDTH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel (row, col) of each sphere point on the tangent plane at the north pole, and the footprint mask.

    Stereographic projection from the south pole: p -> 2 p_xy / (1 + p_z) on the plane z = 1.
    """
    denom = 1.0 + points[..., 2]
    ok = denom > 1e-9
    scale = np.where(ok, 2.0 / np.where(ok, denom, 1.0), 0.0)
    u, v = scale * points[..., 0], scale * points[..., 1]
    inside = ok & (np.abs(u) < half_width) & (np.abs(v) < half_width)
    # pixel centres at (i + 0.5) / size of the plane square
    col = (u / half_width + 1.0) * size / 2 - 0.5
    row = (v / half_width + 1.0) * size / 2 - 0.5
    return np.where(inside, row, 0.0), np.where(inside, col, 0.0), inside


def project(images: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
    """Images (n, C, H, W) on the sphere, sampled on the DH grid after ``rotation``: (n, C, 60, 60)."""
    n, c, h, w = images.shape
    # Rotating the sampling grid by R^T shows the signal rotated by R.
    points = dh_grid() if rotation is None else dh_grid() @ rotation
    row, col, inside = image_coordinates(points, h)
    stack = images.reshape(n * c, h, w).astype(np.float64)
    k = np.broadcast_to(np.arange(n * c, dtype=np.float64)[:, None, None], (n * c, GRID, GRID))
    coords = np.stack([k, np.broadcast_to(row, k.shape), np.broadcast_to(col, k.shape)])
    # order 1 = bilinear within each image (the first coordinate is an exact integer index)
    out = ndimage.map_coordinates(stack, coords, order=1, mode="nearest")
    return out.reshape(n, c, GRID, GRID) * inside


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Per-image min-max rescaling to 0..255 (over all channels), as S2CNN's generator stores its images."""
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    return np.rint((x - lo) / np.maximum(hi - lo, 1e-12) * 255).astype(np.uint8)


def project_split(images: np.ndarray, rng: np.random.Generator, rotate: bool) -> np.ndarray:
    out = np.empty((len(images), images.shape[1], GRID, GRID), dtype=np.uint8)
    for start in range(0, len(images), ROTATION_CHUNK):
        rot = random_rotation(rng) if rotate else None
        out[start : start + ROTATION_CHUNK] = to_uint8(project(images[start : start + ROTATION_CHUNK], rot))
    return out


def generate_embedded(out_dir: Path, ctx: EmbeddedContext) -> None:
    sets = embedded_images(ctx.seed, ctx.cache_dir)
    body = {}
    for split, rotate in (("train", ROTATE_TRAIN), ("test", ROTATE_TEST)):
        x, y = sets[split]
        images = project_split(x, rng_for(ctx.seed, "spherical", split), rotate)
        body[split] = {"images": images, "labels": y.astype(np.int64)}
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        pickle.dump(body, gz, protocol=4)
    (out_dir / FILE).write_bytes(buf.getvalue())


SPEC = register_task(
    TaskSpec(
        name="spherical",
        title="Spherical CIFAR-100",
        dim=2,
        input_shape=(3, GRID, GRID),
        output_kind="single_label",
        num_outputs=NUM_CLASSES,
        loss="cross_entropy",
        metric="error_pct",
        metric_lower_is_better=True,
        paper_metric="error_pct",
        raw_files=(RawFile(FILE, S3_BASE + "spherical/s2_cifar100.gz", 272_000_000, pickled=True),),
        read_raw=read_raw,
        generate_embedded=generate_embedded,
        make_batch=default_make_batch,
        real_counts=RealCounts(
            {"train": 40_000, "val": 10_000, "test": 10_000}, "nb360.md 1.1, 1.3 Spherical CIFAR-100"
        ),
        items_per_shard=50_000,
        license="CC BY-SA (per the benchmark); embedded: projected foolbox sample images (MIT package)",
        reference="nb360.md 1.1, 1.3 Spherical CIFAR-100, 2.1; embedded-data-sources.md 2",
    )
)
