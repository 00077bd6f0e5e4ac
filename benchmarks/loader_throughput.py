"""Random-batch read throughput: our shard loader against the same arrays already in memory.

For each task with built shards (build them first with the workflow, e.g. ``make data``), in one run:

* **memory**: the training split's arrays loaded into RAM beforehand, batches built by the task's own
  ``make_batch`` straight from them, with the same inputs the loader gives it in training (the auxiliary
  splits in RAM, e.g. FSD50K's background noise; a seeded generator), but no loader and no files: the
  ceiling for any loader;
* **loader**: the training loader as training uses it (``make_loader``: in-process loader, seeded batch
  sampler, shards opened from disk and held in memory when they fit);
* **streamed**: the same loader forced to read every batch from the HDF5 files (what tasks too large for
  RAM get), reported in samples/s.

The three are timed in 8 alternating rounds, so that load from other processes on a shared machine falls on
all of them alike; rates are medians over rounds, and ``loader / memory`` is the median of the per-round
ratios. The target is at least 0.9 for tasks that fit in memory.

    python benchmarks/loader_throughput.py [--shard-dir results/shards] [--seconds 2] [--tasks a b]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nb360.data.loader import ShardDataset, make_loader
from nb360.data.shards import open_shards, read_manifest
from nb360.tasks import BatchContext, get_task, list_tasks
from nb360.tasks.common import default_make_batch

# The paper's WRN batch sizes (nb360.md 3.1); dense tasks use 8.
BATCH = {"satellite": 4096, "fsd50k": 256, "ecg": 256, "deepsea": 256, "darcy": 8, "psicov": 8, "cosmic": 8}


def _rates(
    fns: dict[str, Callable[[int], None]], n_batches: int, batch: int, seconds: float, rounds: int = 8
) -> dict[str, list[float]]:
    """Samples per second of each ``fn(i)`` in each of ``rounds`` rounds, in which each function in turn
    runs whole passes over ``n_batches`` batches for at least ``seconds / rounds``."""
    for fn in fns.values():
        fn(0)  # warm-up (page cache, lazy opens)
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            done, t0 = 0, time.perf_counter()
            while (t := time.perf_counter()) - t0 < seconds / rounds or not done:
                for i in range(n_batches):
                    fn(i)
                done += n_batches * batch
            rates[name].append(done / (t - t0))
    return rates


def bench_task(shard_dir: Path, task: str, seconds: float) -> dict[str, float]:
    manifest = read_manifest(shard_dir / task / "manifest.json")
    spec = get_task(task)
    batch = BATCH.get(task, 128)
    make_batch = spec.make_batch or default_make_batch

    # Baseline: the arrays already in memory, batches straight from the task's make_batch.
    shards = open_shards(manifest, ["train"], in_memory=True)
    count = spec.num_samples or (lambda s, train: s.n_items)
    # Index batches within the first shard (the embedded data have one shard per split).
    first = shards[0]
    n = count(first, True)
    # At least 8 batches per epoch, as on the real data, so that epoch start-up is amortised like in training.
    batch = max(1, min(batch, n // 8))
    order = np.random.default_rng(0).permutation(n)
    n_batches = max(1, n // batch)
    batches = [order[i * batch : (i + 1) * batch] for i in range(n_batches)]

    # What make_batch gets in training besides the rows: the auxiliary splits, held in RAM.
    aux = {s: open_shards(manifest, [s], in_memory=True) for s in spec.aux_splits}

    def memory(i: int) -> None:
        ctx = BatchContext(
            train=True, normaliser=manifest["normaliser"], rng=np.random.default_rng(i), aux=aux
        )
        out = make_batch(first, batches[i], ctx)
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}

    loader = make_loader(manifest, ["train"], batch, train=True, seed=0, drop_last=True)
    loader_iter = [iter(loader)]

    def via_loader(i: int) -> None:
        try:
            next(loader_iter[0])
        except StopIteration:
            loader_iter[0] = iter(loader)
            next(loader_iter[0])

    streamed = ShardDataset(manifest, ["train"], train=True, in_memory=False)

    def via_stream(i: int) -> None:
        streamed.batch(batches[i], key=(0, i))

    r = _rates({"memory": memory, "loader": via_loader, "streamed": via_stream}, n_batches, batch, seconds)
    # The ratio pairs the loader with the memory baseline of the same round (timed back to back), and takes
    # the median over rounds: a burst of load from other processes moves one round, not the result.
    ratio = float(np.median(np.array(r["loader"]) / np.array(r["memory"])))
    return {"batch": batch, **{k: float(np.median(v)) for k, v in r.items()}, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shard-dir", type=Path, default=Path("results/shards"))
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per measurement (in 8 rounds)")
    ap.add_argument("--tasks", nargs="*", default=None)
    args = ap.parse_args(argv)
    tasks = args.tasks or [t for t in list_tasks() if (args.shard_dir / t / "manifest.json").exists()]
    if not tasks:
        print(
            f"no shards under {args.shard_dir}: build them first with the workflow (`make data`, or "
            "snakemake with your --configfile, then --shard-dir to where they are)",
            file=sys.stderr,
        )
        return 1
    print(f"{'task':<10} {'batch':>6} {'memory/s':>12} {'loader/s':>12} {'ratio':>7} {'streamed/s':>12}")
    worst = 1e9
    for task in tasks:
        r = bench_task(args.shard_dir, task, args.seconds)
        worst = min(worst, r["ratio"])
        print(
            f"{task:<10} {r['batch']:>6} {r['memory']:>12.0f} {r['loader']:>12.0f} "
            f"{r['ratio']:>7.2f} {r['streamed']:>12.0f}",
            flush=True,
        )
    print(f"lowest loader/memory ratio: {worst:.2f} (target >= 0.90)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
