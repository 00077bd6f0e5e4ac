"""CIFAR-100: 32x32 colour images, 100 fine classes (point task, 0-1 error).

Official file: ``cifar-100-python.tar.gz`` (Krizhevsky; the file torchvision downloads). Its members
``cifar-100-python/train``, ``cifar-100-python/test`` and ``cifar-100-python/meta`` are Python pickles
(written by Python 2) of dicts with byte keys: ``b'data'`` (N, 3072) uint8 in RGB plane order (1024 red,
1024 green, 1024 blue values, rows first), ``b'fine_labels'``, ``b'coarse_labels'``, ``b'filenames'``,
``b'batch_label'``; ``meta`` holds ``b'fine_label_names'`` and ``b'coarse_label_names'``. The tarball is
checksum-verified before any member is unpickled, and members are unpickled with the restricted unpickler
(:func:`nb360.data.safe_pickle.safe_loads`, ``encoding="bytes"``).

Splits (reference 1.3): train = the first four fifths of the official training file, val = its last fifth
(index split; 40,000 / 10,000 on the real data), test = the official test file (10,000). Images are stored
as uint8 (N, 3, 32, 32), labels int64 (fine labels 0..99). ``make_batch`` normalises with the fixed
CIFAR-100 mean (0.5071, 0.4867, 0.4408) and std (0.2675, 0.2565, 0.2761) (stored as the manifest's
normaliser) and, in training mode, applies the training loader's augmentation: random crop 32 with zero
padding 4, horizontal flip, Cutout 16 (after normalisation, so the hole is 0), all drawn from ``ctx.rng``
and vectorised over the batch.

Embedded default (``generate_embedded``): 100 learnable classes from real pixels of the pinned ``foolbox``
3.3.4 wheel (MIT; its sample images are CIFAR-100 and ImageNet test images shipped with the package):

* 18 classes are real CIFAR-100 classes: the 20 real CIFAR-100 test images in foolbox
  (``cifar100_<i>_<label>.png``, the fine label in the file name; labels 71 and 92 have two images each)
  are the prototypes of their own fine labels;
* the other 82 labels are fixed regions of foolbox's 20 real ImageNet photos (each centre-cropped and
  reduced to 128x128, cut into a 3x3 grid; per photo its 4 most textured cells, plus the 2 next most
  textured cells overall), assigned to the unused labels in a fixed order.

A sample is a jittered view of its class prototype: random shift (up to 25% of the region), scale
(0.7-1.3), horizontal flip, per-channel gain (0.75-1.25), brightness (+-20), Gaussian pixel noise (sd 6),
resampled bilinearly to 32x32. The training file holds ``EMBEDDED_TRAIN`` = 3,000 images (the reader makes
2,400 train / 600 val of them, each part class-balanced), the test file ``EMBEDDED_TEST`` = 1,000 images:
first the 20 unmodified real CIFAR-100 images with their true labels (an extra check that real CIFAR pixels
pass through writer and reader unchanged), then 980 generated ones (class-balanced). The class names in
``meta`` say where each class comes from; the embedded coarse labels are nominal (fine // 5). Files are
written deterministically (pickle protocol 2; tar members and gzip header with fixed times and owners).
Pixel values of the ImageNet-based classes depend on the JPEG decoder bundled with Pillow (the same Pillow
version gives identical bytes). :func:`embedded_images` is the one home of this image generator; the
Spherical task projects its images.

Deviation: validation images are not augmented (the original's validation subset inherited the training
transform, so its validation accuracy was measured on augmented images).
"""

from __future__ import annotations

import gzip
import io
import pickle
import re
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nb360.data.pypi import PypiArtifact, fetch, list_members, read_member
from nb360.data.rawfolder import RawDataError, RawFolder
from nb360.data.safe_pickle import safe_loads
from nb360.data.shards import ShardArrays, SplitData
from nb360.lazy import lazy_import
from nb360.tasks.base import BatchContext, EmbeddedContext, RawFile, RealCounts, TaskSpec, register_task
from nb360.tasks.common import rng_for

Image = lazy_import("PIL.Image")

TARBALL = "cifar-100-python.tar.gz"
MEMBER_DIR = "cifar-100-python"
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)
NUM_CLASSES = 100
IMAGE_SIZE = 32
CROP_PADDING = 4
CUTOUT = 16

FOOLBOX_WHEEL = PypiArtifact(
    "foolbox",
    "3.3.4",
    "foolbox-3.3.4-py3-none-any.whl",
    "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
    license="MIT (package); sample images from the CIFAR-100 and ImageNet test sets",
)
# Embedded sizes: 30 training-file and 10 test-file images per class (minutes of CPU training).
EMBEDDED_TRAIN = 3000
EMBEDDED_TEST = 1000
PHOTO_SIZE = 128  # ImageNet photos are reduced to this size before regions are cut
PHOTO_GRID = 3  # regions per side of a photo
# Jitter of one sample relative to its prototype region.
# Strong enough that 1-NN on pooled pixels errs on about a third of the test images (not trivially easy).
JITTER_SHIFT = 0.25  # fraction of the region side
JITTER_SCALE = (0.7, 1.3)
JITTER_GAIN = (0.75, 1.25)  # per channel
JITTER_OFFSET = 20.0  # brightness, grey levels
JITTER_NOISE = 6.0  # Gaussian noise sd, grey levels

_REAL_PNG = re.compile(r"foolbox/data/cifar100_(\d+)_(\d+)\.png$")
_PHOTO_JPG = re.compile(r"foolbox/data/imagenet_(\d+)_(\d+)\.jpg$")


# ----------------------------------------------------------------------------------------------- reading


def _field(d: dict, key: str, where: str) -> Any:
    # Python 2 pickles read with encoding="bytes" have byte keys; accept str keys from Python 3 writers too.
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise RawDataError(
        f"{where} has no {key!r} entry (keys: {sorted(map(str, d))}); the file is not CIFAR-100"
    )


def _read_batch(d: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(d, dict):
        raise RawDataError(f"{where} is not a pickled dict; re-download {TARBALL}")
    data = np.asarray(_field(d, "data", where))
    labels = np.asarray(_field(d, "fine_labels", where), dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise RawDataError(f"{where}: expected data uint8 (N, 3072), got {data.dtype} {data.shape}")
    if len(labels) != len(data):
        raise RawDataError(f"{where}: {len(data)} images but {len(labels)} fine labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise RawDataError(f"{where}: fine labels outside 0..{NUM_CLASSES - 1}")
    # RGB plane order, rows first: (N, 3072) -> (N, 3, 32, 32) is a plain reshape.
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE), labels


def read_raw(raw: RawFolder) -> dict[str, SplitData]:
    path = raw.verify(TARBALL)  # the pickles inside are only read from a verified tarball
    out = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for split in ("train", "test"):
                member = f"{MEMBER_DIR}/{split}"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise RawDataError(f"{path} has no file member {member}; re-download {TARBALL}")
                out[split] = _read_batch(safe_loads(f.read(), encoding="bytes"), f"{path}:{member}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise RawDataError(f"{path} is not a readable tar.gz ({e}); delete it and fetch it again") from e
    x_tr, y_tr = out["train"]
    x_te, y_te = out["test"]
    n_val = len(x_tr) // 5  # the last fifth of the official training file (10,000 of 50,000)
    return {
        "train": SplitData(items={"x": x_tr[:-n_val], "y": y_tr[:-n_val]}),
        "val": SplitData(items={"x": x_tr[-n_val:], "y": y_tr[-n_val:]}),
        "test": SplitData(items={"x": x_te, "y": y_te}),
    }


def fit_normaliser(splits: dict[str, SplitData]) -> dict[str, Any]:
    # The benchmark uses the published CIFAR-100 statistics, not ones fitted on the split.
    return {"mean": list(MEAN), "std": list(STD)}


# ------------------------------------------------------------------------------------------------- batches


def augment(x: np.ndarray, mean: np.ndarray, std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop (zero padding 4), horizontal flip, normalisation and Cutout 16 for a uint8 batch."""
    n, c, h, w = x.shape
    p = CROP_PADDING
    padded = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=np.uint8)
    padded[:, :, p : p + h, p : p + w] = x
    oy = rng.integers(0, 2 * p + 1, size=n)
    ox = rng.integers(0, 2 * p + 1, size=n)
    flip = rng.random(n) < 0.5
    rows = oy[:, None] + np.arange(h)
    cols = ox[:, None] + np.where(flip[:, None], np.arange(w)[::-1], np.arange(w))
    # (n, h, w, c) gather of each sample's window, read right-to-left where flipped.
    win = padded.transpose(0, 2, 3, 1)[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    out = (win.astype(np.float32) / 255.0 - mean) / std
    out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    # Cutout: a 16x16 square (clipped at the border) centred anywhere in the image is set to 0.
    cy = rng.integers(0, h, size=n)
    cx = rng.integers(0, w, size=n)
    half = CUTOUT // 2
    in_y = np.abs(np.arange(h)[None, :] - cy[:, None] + 0.5) < half  # rows cy-8 .. cy+7
    in_x = np.abs(np.arange(w)[None, :] - cx[:, None] + 0.5) < half
    out[(in_y[:, :, None] & in_x[:, None, :])[:, None].repeat(c, axis=1)] = 0.0
    return out


def make_batch(shard: ShardArrays, idx: np.ndarray, ctx: BatchContext) -> dict[str, np.ndarray]:
    x = shard.items("x", idx)
    mean = np.asarray(ctx.normaliser.get("mean", MEAN), dtype=np.float32)
    std = np.asarray(ctx.normaliser.get("std", STD), dtype=np.float32)
    if ctx.train:
        xb = augment(x, mean, std, ctx.rng)
    else:
        xb = (x.astype(np.float32) / 255.0 - mean[:, None, None]) / std[:, None, None]
    return {"x": xb.astype(np.float32, copy=False), "y": shard.items("y", idx)}


# ------------------------------------------------------------------------------------ embedded generator


def _load_sources(cache_dir: Path) -> dict[str, Any]:
    """Real images from the foolbox wheel and the fixed table of class prototypes."""
    wheel = fetch(FOOLBOX_WHEEL, cache_dir)
    reals, real_labels, real_names, photos = [], [], [], []
    for name in sorted(list_members(wheel)):
        if m := _REAL_PNG.search(name):
            img = Image.open(io.BytesIO(read_member(wheel, name))).convert("RGB")
            reals.append(np.asarray(img, dtype=np.uint8))
            real_labels.append(int(m.group(2)))
            real_names.append(Path(name).name)
        elif _PHOTO_JPG.search(name):
            img = Image.open(io.BytesIO(read_member(wheel, name))).convert("RGB")
            s = min(img.size)  # centre square, then box-filter down to PHOTO_SIZE
            left, top = (img.size[0] - s) // 2, (img.size[1] - s) // 2
            img = img.crop((left, top, left + s, top + s)).resize((PHOTO_SIZE, PHOTO_SIZE), Image.BOX)
            photos.append(np.asarray(img, dtype=np.uint8))
    if len(reals) != 20 or len(photos) != 20:
        raise RuntimeError(f"{wheel}: expected 20 CIFAR-100 PNGs and 20 ImageNet JPEGs")
    images = [r.astype(np.float32) for r in reals] + [p.astype(np.float32) for p in photos]
    # One prototype per class: (image index, centre row, centre col, side), in pixels of that image.
    protos: dict[int, list[tuple[int, float, float, float]]] = {}
    for i, label in enumerate(real_labels):
        protos.setdefault(label, []).append((i, IMAGE_SIZE / 2, IMAGE_SIZE / 2, float(IMAGE_SIZE)))
    cell = PHOTO_SIZE / PHOTO_GRID
    scored = []  # (score, photo, row, col): texture = mean per-channel std of the cell
    for j, ph in enumerate(photos):
        for r in range(PHOTO_GRID):
            for c in range(PHOTO_GRID):
                block = ph[round(r * cell) : round((r + 1) * cell), round(c * cell) : round((c + 1) * cell)]
                scored.append((float(block.reshape(-1, 3).std(axis=0).mean()), j, r, c))
    free = [k for k in range(NUM_CLASSES) if k not in protos]
    per_photo = (len(free)) // len(photos)
    chosen, rest = [], []
    for j in range(len(photos)):
        cells = sorted((s for s in scored if s[1] == j), key=lambda s: (-s[0], s[2], s[3]))
        chosen += cells[:per_photo]
        rest += cells[per_photo:]
    chosen += sorted(rest, key=lambda s: (-s[0], s[1], s[2], s[3]))[: len(free) - len(chosen)]
    chosen.sort(key=lambda s: (s[1], s[2], s[3]))
    names = {}
    for label, (_, j, r, c) in zip(free, chosen, strict=True):
        protos[label] = [(len(reals) + j, (r + 0.5) * cell, (c + 0.5) * cell, cell)]
        names[label] = f"imagenet_photo{j:02d}_r{r}c{c}"
    for label in set(real_labels):
        names[label] = f"cifar100_real_{label}"
    return {
        "images": images,
        "protos": protos,
        "names": [names[k] for k in range(NUM_CLASSES)],
        "reals": np.stack(reals).transpose(0, 3, 1, 2).copy(),
        "real_labels": np.asarray(real_labels, dtype=np.int64),
        "real_names": real_names,
    }


def _render(
    img: np.ndarray, cy: np.ndarray, cx: np.ndarray, side: np.ndarray, flip: np.ndarray
) -> np.ndarray:
    """Bilinear 32x32 views of ``img`` (H, W, 3) centred at (cy, cx) with the given sides; (n, 32, 32, 3)."""
    h, w = img.shape[:2]
    t = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE - 0.5
    rows = cy[:, None] + t[None, :] * side[:, None] - 0.5
    cols = cx[:, None] + np.where(flip[:, None], -t[None, :], t[None, :]) * side[:, None] - 0.5
    r0 = np.floor(rows)
    c0 = np.floor(cols)
    fr = (rows - r0)[:, :, None, None]
    fc = (cols - c0)[:, None, :, None]
    r0i, r1i = np.clip(r0, 0, h - 1).astype(int), np.clip(r0 + 1, 0, h - 1).astype(int)
    c0i, c1i = np.clip(c0, 0, w - 1).astype(int), np.clip(c0 + 1, 0, w - 1).astype(int)

    def at(ri: np.ndarray, ci: np.ndarray) -> np.ndarray:
        return img[ri[:, :, None], ci[:, None, :]]

    top = at(r0i, c0i) * (1 - fc) + at(r0i, c1i) * fc
    bottom = at(r1i, c0i) * (1 - fc) + at(r1i, c1i) * fc
    return top * (1 - fr) + bottom * fr


def sample_class_images(sources: dict[str, Any], labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jittered views of the class prototypes for ``labels``: uint8 (N, 3, 32, 32)."""
    n = len(labels)
    out = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    # Draw every random number up front, in item order, so the images do not depend on the loop order below.
    pick = rng.random(n)
    shift = rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, size=(n, 2))
    scale = rng.uniform(*JITTER_SCALE, size=n)
    flip = rng.random(n) < 0.5
    gain = rng.uniform(*JITTER_GAIN, size=(n, 3))
    offset = rng.uniform(-JITTER_OFFSET, JITTER_OFFSET, size=n)
    noise = rng.normal(0.0, JITTER_NOISE, size=out.shape)
    src = np.empty(n, dtype=np.int64)
    geom = np.empty((n, 3))
    for label in np.unique(labels):
        sel = np.flatnonzero(labels == label)
        options = sources["protos"][int(label)]
        k = np.minimum((pick[sel] * len(options)).astype(int), len(options) - 1)
        for i, opt in zip(sel, k, strict=True):
            src[i] = options[opt][0]
            geom[i] = options[opt][1:]
    for s in np.unique(src):
        sel = np.flatnonzero(src == s)
        side = geom[sel, 2] * scale[sel]
        cy = geom[sel, 0] + shift[sel, 0] * geom[sel, 2]
        cx = geom[sel, 1] + shift[sel, 1] * geom[sel, 2]
        out[sel] = _render(sources["images"][s], cy, cx, side, flip[sel])
    out = out * gain[:, None, None, :] + offset[:, None, None, None] + noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2).copy()


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)


def embedded_images(seed: int, cache_dir: Path) -> dict[str, Any]:
    """The embedded image sets: ``{"train": (x, y), "test": (x, y), "names": ..., ...}``.

    x uint8 (N, 3, 32, 32), y int64. The test set starts with the 20 real CIFAR-100 images.
    """
    sources = _load_sources(Path(cache_dir))
    rng_tr = rng_for(seed, "cifar100", "train")
    # Balanced within the reader's train part and within its validation tail (the last fifth).
    n_val = EMBEDDED_TRAIN // 5
    y_tr = np.concatenate([_balanced_labels(EMBEDDED_TRAIN - n_val, rng_tr), _balanced_labels(n_val, rng_tr)])
    x_tr = sample_class_images(sources, y_tr, rng_tr)
    rng_te = rng_for(seed, "cifar100", "test")
    n_real = len(sources["reals"])
    y_gen = _balanced_labels(EMBEDDED_TEST - n_real, rng_te)
    x_te = np.concatenate([sources["reals"], sample_class_images(sources, y_gen, rng_te)])
    y_te = np.concatenate([sources["real_labels"], y_gen])
    return {
        "train": (x_tr, y_tr),
        "test": (x_te, y_te),
        "names": sources["names"],
        "real_names": sources["real_names"],
    }


def _tar_add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


def generate_embedded(out_dir: Path, ctx: EmbeddedContext) -> None:
    sets = embedded_images(ctx.seed, ctx.cache_dir)
    n_real = len(sets["real_names"])

    def batch(split: str, label: bytes) -> bytes:
        x, y = sets[split]
        files = [
            (
                f"foolbox_{sets['real_names'][i]}"
                if split == "test" and i < n_real
                else f"embedded_{split}_{i:05d}.png"
            )
            for i in range(len(y))
        ]
        d = {
            b"filenames": [f.encode() for f in files],
            b"batch_label": label,
            b"fine_labels": [int(v) for v in y],
            b"coarse_labels": [int(v) // 5 for v in y],
            b"data": np.ascontiguousarray(x.reshape(len(x), -1)),
        }
        return pickle.dumps(d, protocol=2)

    meta = {
        b"fine_label_names": [n.encode() for n in sets["names"]],
        b"coarse_label_names": [f"embedded_group_{k:02d}".encode() for k in range(NUM_CLASSES // 5)],
    }
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        _tar_add(tar, f"{MEMBER_DIR}/meta", pickle.dumps(meta, protocol=2))
        _tar_add(tar, f"{MEMBER_DIR}/test", batch("test", b"testing batch 1 of 1"))
        _tar_add(tar, f"{MEMBER_DIR}/train", batch("train", b"training batch 1 of 1"))
    (out_dir / TARBALL).write_bytes(buf.getvalue())


SPEC = register_task(
    TaskSpec(
        name="cifar100",
        title="CIFAR-100",
        dim=2,
        input_shape=(3, IMAGE_SIZE, IMAGE_SIZE),
        output_kind="single_label",
        num_outputs=NUM_CLASSES,
        loss="cross_entropy",
        metric="error_pct",
        metric_lower_is_better=True,
        paper_metric="error_pct",
        raw_files=(
            RawFile(
                TARBALL,
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                169_001_437,
                pickled=True,
                note="the file torchvision downloads",
            ),
        ),
        read_raw=read_raw,
        generate_embedded=generate_embedded,
        fit_normaliser=fit_normaliser,
        make_batch=make_batch,
        real_counts=RealCounts(
            {"train": 40_000, "val": 10_000, "test": 10_000}, "nb360.md 1.1, 1.3 CIFAR-100"
        ),
        items_per_shard=50_000,
        license="CC BY 4.0 (per the benchmark); embedded: foolbox sample images (MIT package)",
        reference="nb360.md 1.1, 1.3 CIFAR-100, 1.4, 2.1",
    )
)
