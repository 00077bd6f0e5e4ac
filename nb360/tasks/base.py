"""The task registry: one :class:`TaskSpec` per NAS-Bench-360 task.

Everything the pipeline knows about a task lives in its spec: shapes, output kind, loss, metric, split
semantics, the official raw files (with their download locations), the raw reader, the embedded generator
and the function that turns stored shard rows into model inputs. A new task is one module that builds a
``TaskSpec`` and calls :func:`register_task`, plus one import line in ``nb360/tasks/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from nb360.data.rawfolder import RawFolder
    from nb360.data.shards import ShardArrays, SplitData

OutputKind = Literal["single_label", "multi_label", "dense"]

# Where the original S3 bucket served the files; kept as the default mirror (section 2.1 of the reference).
# Since Oct 2022 the canonical copy is a Google Drive folder that scripts cannot download from.
S3_BASE = "https://pde-xd.s3.amazonaws.com/"
DRIVE_FOLDER = "https://drive.google.com/drive/folders/1OOp6UrCiP79mTIkCrUdjjHWDo8K0bJUw"


@dataclass(frozen=True)
class RawFile:
    """One official raw file of a task.

    ``name`` is the path inside the task's raw folder (as the official loader expects it), ``url`` where a
    script can fetch it (``None``: manual download only), ``size`` the size stated by the benchmark (bytes,
    approximate, for messages), ``pickled`` whether reading it unpickles data (then it is read only through
    :class:`RawFolder`'s verified reads, with the restricted unpickler).
    """

    name: str
    url: str | None
    size: int | None = None
    pickled: bool = False
    note: str = ""


@dataclass(frozen=True)
class Splits:
    """Which stored splits each phase uses. The test split never chooses anything.

    * ``search``: fit on ``search_fit``, select on ``search_select``.
    * ``retrain``: fit on ``retrain_fit``, report on ``report``.
    """

    search_fit: tuple[str, ...] = ("train",)
    search_select: tuple[str, ...] = ("val",)
    retrain_fit: tuple[str, ...] = ("train", "val")
    report: tuple[str, ...] = ("test",)
    description: str = ""

    def for_phase(self, phase: str, role: str) -> tuple[str, ...]:
        table = {
            ("search", "fit"): self.search_fit,
            ("search", "select"): self.search_select,
            ("retrain", "fit"): self.retrain_fit,
            ("retrain", "report"): self.report,
        }
        try:
            return table[(phase, role)]
        except KeyError:
            raise ValueError(
                f"unknown phase/role {phase!r}/{role!r}; use search/fit, search/select, "
                "retrain/fit or retrain/report"
            ) from None


@dataclass(frozen=True)
class RealCounts:
    """Items per split of the complete official release, checked when shards are built from real data.

    A file cut short can still read without error (a tar cut at a member boundary), so the counts are the
    one check that catches it. Splits missing from ``splits`` are not checked; ``unchecked`` says why.
    """

    splits: Mapping[str, int] = field(default_factory=dict)
    source: str = ""  # where the numbers are documented
    unchecked: str = ""


@dataclass(frozen=True)
class EmbeddedContext:
    """Inputs of an embedded generator: its seed and where pinned PyPI artefacts are cached."""

    seed: int
    cache_dir: Path


@dataclass
class BatchContext:
    """What :attr:`TaskSpec.make_batch` may use besides the shard rows.

    ``train`` selects training-time behaviour (random crops, augmentation); ``normaliser`` holds the
    statistics stored in the manifest; ``rng`` is the loader's seeded generator (the only source of
    randomness, so runs repeat).
    """

    train: bool
    normaliser: Mapping[str, Any]
    rng: np.random.Generator
    fit_splits: tuple[str, ...] = ("train",)
    # Training only: the shards of the task's auxiliary splits (FSD50K: background noise), by split name.
    aux: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """Everything about one task. Shapes are per sample, **channels first**."""

    name: str
    title: str
    dim: int  # 1 or 2: spatial dimensionality of the input
    input_shape: tuple[int, ...]  # what the loader yields per sample (C, ...) for training
    output_kind: OutputKind
    num_outputs: int
    loss: str  # cross_entropy | bce_with_logits | relative_l2 | mse | masked_bce_with_logits
    metric: str  # column name in score tables, e.g. error_pct, map, rel_l2, mae8, auroc, f1
    metric_lower_is_better: bool
    paper_metric: str  # the metric as the paper's table reports it (lower is better)
    raw_files: tuple[RawFile, ...]
    read_raw: Callable[[RawFolder], dict[str, SplitData]]
    generate_embedded: Callable[[Path, EmbeddedContext], None]
    splits: Splits = field(default_factory=Splits)
    # Normaliser statistics computed from the fit splits at preprocessing time, stored in the manifest.
    fit_normaliser: Callable[[dict[str, SplitData]], dict[str, Any]] | None = None
    # Shard rows -> batch dict {"x": float32 array, "y": array, optional "group": ids}.
    make_batch: Callable[[ShardArrays, np.ndarray, BatchContext], dict[str, np.ndarray]] | None = None
    # Splits that training batches draw from besides the fit splits (FSD50K: "noise" for background mixing).
    aux_splits: tuple[str, ...] = ()
    # Number of loader samples held by one shard (default: its number of items); the flag is ctx.train,
    # since some tasks sample differently in training (FSD50K: one random chunk per clip).
    num_samples: Callable[[ShardArrays, bool], int] | None = None
    # Model output -> target units for the loss and the metric (Darcy decodes with the training normaliser):
    # (output tensor, normaliser, fit splits) -> tensor. None: the output is already in target units.
    decode_output: Callable[[Any, Mapping[str, Any], tuple[str, ...]], Any] | None = None
    # Its inverse on numpy targets (target units -> model output units), e.g. for the trivial baseline.
    encode_target: Callable[[Any, Mapping[str, Any], tuple[str, ...]], Any] | None = None
    # How evaluation applies a model to one batch's x (PSICOV: 128 x 128 windows over the full canvas).
    eval_forward: Callable[[Any, Any], Any] | None = None
    # Items per split of the complete official release (checked for real data; embedded data is exempt).
    real_counts: RealCounts = field(default_factory=RealCounts)
    # Shard sizes: items per shard file (keeps files around a few hundred MB on the real data).
    items_per_shard: int = 50_000
    license: str = ""
    reference: str = ""
    notes: str = ""

    def raw_file(self, name: str) -> RawFile:
        for f in self.raw_files:
            if f.name == name:
                return f
        raise KeyError(f"task {self.name!r} has no raw file {name!r}")


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    if spec.dim not in (1, 2):
        raise ValueError(f"task {spec.name!r}: dim must be 1 or 2, got {spec.dim}")
    if len(spec.input_shape) != spec.dim + 1:
        raise ValueError(f"task {spec.name!r}: input_shape {spec.input_shape} does not match dim {spec.dim}")
    _TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(_TASKS))}") from None


def list_tasks() -> list[str]:
    return list(_TASKS)
