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

from nb360.data.shards import ShardError, iter_split_shards, open_shards, read_manifest
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
        if in_memory is None:
            size = sum(e["bytes"] for _, e in iter_split_shards(self.manifest, self.splits))
            in_memory = size <= memory_budget
        self.in_memory = in_memory
        self.shards = open_shards(self.manifest, self.splits, in_memory=in_memory)
        count = self.task.num_samples or (lambda shard, train: shard.n_items)
        sizes = np.array([count(s, train) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.normaliser = self.manifest.get("normaliser", {})
        self.fit_splits = tuple(fit_splits)
        self._make_batch = self.task.make_batch or default_make_batch
        self.aux = {s: open_shards(self.manifest, [s]) for s in self.task.aux_splits} if train else {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key_and_indices: tuple[tuple[int, int], np.ndarray]) -> dict[str, torch.Tensor]:
        key, indices = key_and_indices  # from EpochBatchSampler: valid int64 indices
        return self._assemble(indices, key)

    def batch(self, indices: np.ndarray, key: tuple[int, int] = (0, 0)) -> dict[str, torch.Tensor]:
        """The batch of global sample ``indices`` (any order), as tensors."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"sample index out of range 0..{len(self) - 1}")
        return self._assemble(indices, key)

    def _assemble(self, indices: np.ndarray, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        ctx = BatchContext(
            train=self.train,
            normaliser=self.normaliser,
            rng=_LazyRng((self.seed, *key)),
            fit_splits=self.fit_splits,
            aux=self.aux,
        )
        if len(self.shards) == 1:  # the common case: no grouping by shard
            out = self._make_batch(self.shards[0], indices, ctx)
            return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
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


class _LazyRng:
    """A ``numpy.random.Generator`` seeded by ``key``, created only when a batch first draws from it.

    Each attribute is looked up on the generator once and then kept on the instance, so repeated draws
    (FSD50K makes dozens per sample) cost what they cost on a plain generator, not a ``__getattr__`` call.
    """

    def __init__(self, key: tuple[int, ...]):
        self._key = key

    def __getattr__(self, name: str) -> Any:  # only for names not yet in the instance's __dict__
        if name.startswith("__"):  # copy/pickle probes: not generator attributes
            raise AttributeError(name)
        gen = self.__dict__.get("_gen")
        if gen is None:
            gen = self.__dict__["_gen"] = np.random.default_rng(list(self._key))
        value = self.__dict__[name] = getattr(gen, name)
        return value


class EpochBatchSampler(Sampler):
    """Yields ``((epoch, batch_number), indices)``; shuffles with a generator seeded by (seed, epoch).

    The epoch advances at every pass; :meth:`set_epoch` sets it (e.g. when resuming from a checkpoint).
    ``pool``: the sample indices to draw from (default all ``n``), e.g. one half of the training data in a
    bilevel architecture search.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        pool: np.ndarray | None = None,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.pool = np.arange(n, dtype=np.int64) if pool is None else np.asarray(pool, dtype=np.int64)
        self._all = pool is None
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            len(self.pool),
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
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            order = perm if self._all else self.pool[perm]  # the same order; skips a gather of n indices
        else:
            order = self.pool
        for b in range(len(self)):
            yield (epoch, b), order[b * self.batch_size : (b + 1) * self.batch_size]


class ShardLoader:
    """The in-process loader: batches straight from the dataset, without DataLoader's per-batch machinery
    (which costs more than building a batch of small in-memory samples)."""

    def __init__(self, dataset: ShardDataset, sampler: EpochBatchSampler):
        self.dataset, self.sampler = dataset, sampler
        self.pin_memory = torch.cuda.is_available()

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # No local name for the batch: a suspended generator would keep the batch it handed out alive while
        # it builds the next one, so every batch would land in freshly mapped (page-faulting) memory.
        for item in self.sampler:
            if self.pin_memory:
                yield {k: v.pin_memory() for k, v in self.dataset[item].items()}
            else:
                yield self.dataset[item]


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
    subset: tuple[float, float] | None = None,
) -> ShardLoader | DataLoader:
    """Batches of ``splits`` of a task's shards: shuffled for training, in order otherwise.

    ``subset=(a, b)``: only the samples from fraction ``a`` to ``b`` of the data, in storage order (the
    DARTS papers split the training set into a first half for weights and a second for the architecture).
    With ``num_workers`` > 0 a ``torch.utils.data.DataLoader`` builds batches in worker processes (for tasks
    whose batches are expensive to assemble); both loaders expose ``.dataset`` and ``.sampler``.
    """
    ds = ShardDataset(manifest, splits, train=train, seed=seed, in_memory=in_memory, fit_splits=fit_splits)
    if len(ds) == 0:
        raise ShardError(f"splits {list(splits)} of task {ds.task.name} hold no samples")
    pool = None
    if subset is not None:
        a, b = subset
        if not 0.0 <= a < b <= 1.0:
            raise ValueError(f"subset must be (a, b) with 0 <= a < b <= 1, got {subset}")
        pool = np.arange(round(a * len(ds)), round(b * len(ds)), dtype=np.int64)
        if len(pool) == 0:
            raise ShardError(f"subset {subset} of splits {list(splits)} of {ds.task.name} holds no samples")
    sampler = EpochBatchSampler(
        len(ds), batch_size, shuffle=train, seed=seed, drop_last=bool(drop_last), pool=pool
    )
    if num_workers == 0:
        return ShardLoader(ds, sampler)
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
