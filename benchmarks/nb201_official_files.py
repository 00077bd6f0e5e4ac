"""Synthetic full-size official NB201 files, to time ``snakemake nb201_official`` without the real ones.

Writes the four ``NATS-tss-v1_0-*.pickle.pbz2`` files (15,625 cells each; 12 and 200 epochs for NinaPro and
Darcy, about 94 MB each at 200 epochs, the size of the real 84-85 MB files) into ``RAW_DIR/nb201/``, with
smooth made-up learning curves. Then, with ``data.raw_dir: RAW_DIR`` in a config file:

    python benchmarks/nb201_official_files.py RAW_DIR
    /usr/bin/time snakemake nb201_official --cores 2 --configfile that.yaml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nb360.nb201 import plan, space
from nb360.nb201.table import Table


def records(task: str, epochs: int) -> list[dict]:
    rng = np.random.default_rng(epochs + len(task))
    quality = rng.random(space.NUM_ARCHS)
    names = space.arch_strings()
    ramp = 1 - np.exp(-np.arange(1, epochs + 1) / (epochs / 4))
    out = []
    for i, q in enumerate(quality):
        curve = (q * ramp).tolist()
        acc = [100 * c for c in curve] if task == "ninapro" else [0.9 * c for c in curve]
        loss = [1 - c for c in curve]
        out.append({
            "index": i, "arch": names[i], "task": task, "epochs": epochs, "seed": 777,
            "train_loss": loss, "train_acc": acc, "test_loss": loss, "test_acc": acc,
            "train_time": [0.1 + 0.05 * q] * epochs, "eval_time": [float("nan")] * epochs,
            "params": 0.1 + q, "flops": 10 + q,
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", type=Path)
    args = parser.parse_args()
    for (task, hp), name in plan.OFFICIAL_FILES.items():
        t0 = time.perf_counter()
        table = Table.from_records(records(task, int(hp)), task, hp)
        path = table.write_official(args.raw_dir / "nb201" / name)
        print(f"{path}: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
