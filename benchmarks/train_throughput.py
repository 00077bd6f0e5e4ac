"""Training throughput of our loop against a bare PyTorch loop, same model, same data, in one run.

* **bare**: the training split's batches built once and kept in memory as tensors, then
  ``forward / loss / backward / SGD step`` and nothing else;
* **ours**: :func:`nb360.train.fit` (loader over the shards, the task's batch function, loss dispatch,
  finiteness check, progress bookkeeping), timed over its training epoch only (``samples_per_s`` of its
  history, which excludes evaluation).

Both start from the same initial weights and see the same number of batches. The target is an overhead of at
most 10 % (ratio ours / bare >= 0.90). Tasks default to the cheap ones, where overhead shows most.

    python benchmarks/train_throughput.py [--tasks ninapro satellite] [--batches 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nb360.data.loader import ShardDataset
from nb360.models import create_model
from nb360.tasks import get_task
from nb360.train import TrainConfig, fit, seed_everything

BATCH = {"ninapro": 64, "satellite": 256, "ecg": 64, "cifar100": 64}


def bare_loop(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], lr: float) -> float:
    """Samples per second of the plainest loop on pre-built in-memory batches."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    t0 = time.perf_counter()
    for b in batches:
        loss = F.cross_entropy(model(b["x"]), b["y"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return sum(len(b["x"]) for b in batches) / (time.perf_counter() - t0)


def bench(task: str, n_batches: int, shard_dir: Path) -> tuple[float, float]:
    spec = get_task(task)
    if spec.loss != "cross_entropy":
        raise SystemExit(f"{task}: pick a classification task (the bare loop uses cross-entropy)")
    manifest = shard_dir / task / "manifest.json"
    bs = BATCH.get(task, 64)
    seed_everything(0)
    model = create_model("wrn", spec, width=0.25)
    ds = ShardDataset(manifest, spec.splits.retrain_fit, train=True)
    order = np.random.default_rng(0).permutation(len(ds))
    n_batches = min(n_batches, len(ds) // bs)
    batches = [ds.batch(order[i * bs : (i + 1) * bs], key=(0, i)) for i in range(n_batches)]
    bare = bare_loop(copy.deepcopy(model), batches, lr=0.1)
    cfg = TrainConfig(epochs=1, lr=0.1, batch_size=bs, max_batches_per_epoch=n_batches)
    ours = fit(copy.deepcopy(model), manifest, cfg, device="cpu").history[0]["samples_per_s"]
    return bare, ours


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shard-dir", type=Path, default=Path("results/shards"))
    ap.add_argument("--tasks", nargs="*", default=["ninapro", "satellite"])
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs; the median ratio is reported")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'task':<10} {'bare/s':>10} {'ours/s':>10} {'ours/bare':>10}")
    worst = float("inf")
    for task in args.tasks:
        runs = [bench(task, args.batches, args.shard_dir) for _ in range(args.repeats)]
        bare = float(np.median([b for b, _ in runs]))
        ours = float(np.median([o for _, o in runs]))
        ratio = float(np.median([o / b for b, o in runs]))
        worst = min(worst, ratio)
        print(f"{task:<10} {bare:>10.0f} {ours:>10.0f} {ratio:>10.2f}", flush=True)
    print(f"lowest ours/bare ratio: {worst:.2f} (target >= 0.90, i.e. at most 10 % overhead)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
