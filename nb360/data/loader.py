"""One dataset and loader over shards, for every task; the one that training uses.

:class:`ShardDataset` opens the shards of one or more splits (in memory when they fit the budget, else
streamed from HDF5) and serves whole batches: the task's ``make_batch`` turns shard rows into model inputs.
:func:`make_loader` wraps it in a ``torch.utils.data.DataLoader`` whose sampler yields ``(key, indices)``
pairs, so each batch's randomness (crops, augmentation) is fixed by the seed, the epoch and the batch number
alone: the same on any number of workers, and after resuming from a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nb360.data.shards import ShardArrays, ShardError, iter_split_shards, read_manifest
from nb360.tasks import BatchContext, TaskSpec, get_task
from nb360.tasks.common import default_make_batch

DEFAULT_MEMORY_BUDGET = 4 * 1024**3  # bytes of shards held in RAM before the loader streams instead


class ShardDataset(Dataset):
    """Samples of ``splits`` of a task's shards, served a batch at a time.

    ``dataset[(key, indices)]`` returns the batch of those sample indices as a dict of tensors;
    ``key`` (epoch, batch number) seeds the batch's randomness.
    """

    def __init__(
        self,
        manifest: str | os.PathLike | Mapping[str, Any],
        splits: Sequence[str],
        train: bool,
        seed: int = 0,
        in_memory: bool | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        fit_splits: Sequence[str] = ("train",),
    ):
        self.manifest = manifest if isinstance(manifest, Mapping) else read_manifest(manifest)
        self.task: TaskSpec = get_task(self.manifest["task"])
        self.splits = tuple(splits)
        self.train = train
        self.seed = seed
        entries = list(iter_split_shards(self.manifest, self.splits))
        if in_memory is None:
            in_memory = sum(e["bytes"] for _, e in entries) <= memory_budget
        self.in_memory = in_memory
        self.shards = [ShardArrays(path, entry, in_memory=in_memory) for path, entry in entries]
        count = self.task.num_samples or (lambda shard, train: shard.n_items)
        sizes = np.array([count(s, train) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.normaliser = self.manifest.get("normaliser", {})
        self.fit_splits = tuple(fit_splits)
        self._make_batch = self.task.make_batch or default_make_batch

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key_and_indices: tuple[tuple[int, int], np.ndarray]) -> dict[str, torch.Tensor]:
        key, indices = key_and_indices
        return self.batch(np.asarray(indices, dtype=np.int64), key)

    def batch(self, indices: np.ndarray, key: tuple[int, int] = (0, 0)) -> dict[str, torch.Tensor]:
        """The batch of global sample ``indices`` (any order), as tensors."""
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"sample index out of range 0..{len(self) - 1}")
        rng = np.random.default_rng([self.seed, *key])
        ctx = BatchContext(train=self.train, normaliser=self.normaliser, rng=rng, fit_splits=self.fit_splits)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        parts, order = [], []
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            parts.append(self._make_batch(self.shards[s], indices[sel] - self.offsets[s], ctx))
            order.append(sel)
        if len(parts) == 1:
            out = parts[0]
        else:
            inverse = np.argsort(np.concatenate(order))
            out = {k: np.concatenate([p[k] for p in parts])[inverse] for k in parts[0]}
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


class EpochBatchSampler(Sampler):
    """Yields ``((epoch, batch_number), indices)``; shuffles with a generator seeded by (seed, epoch).

    The epoch advances at every pass; :meth:`set_epoch` sets it (e.g. when resuming from a checkpoint).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            n,
            batch_size,
            shuffle,
            seed,
            drop_last,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        epoch = self.epoch
        self.epoch += 1
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        for b in range(len(self)):
            yield (epoch, b), order[b * self.batch_size : (b + 1) * self.batch_size]


def make_loader(
    manifest: str | os.PathLike | Mapping[str, Any],
    splits: Sequence[str],
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    in_memory: bool | None = None,
    drop_last: bool | None = None,
    fit_splits: Sequence[str] = ("train",),
) -> DataLoader:
    """A DataLoader over ``splits`` of a task's shards: shuffled batches for training, in order otherwise."""
    ds = ShardDataset(manifest, splits, train=train, seed=seed, in_memory=in_memory, fit_splits=fit_splits)
    if len(ds) == 0:
        raise ShardError(f"splits {list(splits)} of task {ds.task.name} hold no samples")
    sampler = EpochBatchSampler(len(ds), batch_size, shuffle=train, seed=seed, drop_last=bool(drop_last))
    return DataLoader(
        ds,
        sampler=sampler,
        batch_size=None,  # the dataset builds whole batches
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def manifest_path(shard_dir: str | os.PathLike, task: str) -> Path:
    return Path(shard_dir) / task / "manifest.json"
