"""Small helpers shared by task modules (one home each)."""

from __future__ import annotations

import numpy as np

from nb360.data.shards import ShardArrays
from nb360.tasks.base import BatchContext


def default_make_batch(shard: ShardArrays, idx: np.ndarray, ctx: BatchContext) -> dict[str, np.ndarray]:
    """Items ``x`` and ``y`` as stored (``x`` cast to float32)."""
    return {"x": shard.items("x", idx).astype(np.float32, copy=False), "y": shard.items("y", idx)}


def zscore_rows(x: np.ndarray, axis: int = -1, eps: float = 1e-8) -> np.ndarray:
    """Per-sample standardisation along ``axis`` (as the 1D loaders do, one series at a time)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=axis, keepdims=True)
    sd = x.std(axis=axis, keepdims=True)
    return ((x - mu) / np.maximum(sd, eps)).astype(np.float32)


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator determined by a seed and any number of keys (task names, split names, indices)."""
    words = [seed] + [
        k if isinstance(k, int) else int.from_bytes(k.encode()[:8].ljust(8, b"\0"), "little") for k in keys
    ]
    return np.random.default_rng(words)
