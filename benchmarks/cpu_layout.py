"""CPU training step of the smoke networks in NCHW against channels-last (NHWC), in one run.

For each 2D task, one SGD step (forward, loss, backward, update) of the WRN-16-1 of the smoke budget,
a DARTS evaluation network (a cell drawn with a fixed seed) and a DenseNAS network, on random inputs of the
task's shape and the smoke batch size, single-threaded as the workflow's CPU jobs run. The training loop
uses channels-last for 2D inputs (nb360.train.loop); this shows why. Prints both step times and their ratio.

    python benchmarks/cpu_layout.py [--tasks cifar100 spherical] [--steps 4]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from nb360.methods import darts, densenas, wrn
from nb360.models import create_model
from nb360.search.darts_space import sample_genotype
from nb360.search.densenas_space import sample_arch
from nb360.tasks import get_task

TASKS_2D = ["cifar100", "spherical", "fsd50k", "darcy", "psicov", "cosmic"]


def step_seconds(make: Callable[[], nn.Module], x: torch.Tensor, channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = make()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        out = model(x)
        loss = (out[0] if isinstance(out, tuple) else out).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: oneDNN picks its kernels on the first call
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def networks(task: str) -> dict[str, tuple[Callable[[], nn.Module], int]]:
    spec = get_task(task)
    w = wrn.smoke_config(task)
    e = darts.eval_budget(task, "smoke")
    d = densenas.budget_for(task, "smoke")
    cell = sample_genotype(np.random.default_rng(0), dim=2, dense=spec.output_kind == "dense")
    arch = sample_arch(spec, np.random.default_rng(0), max_params=None, width_mult=d.width_mult)
    return {
        "wrn": (lambda: create_model("wrn", spec, width=wrn.SMOKE[task].width), w.batch_size),
        "darts": (
            lambda: create_model("darts_eval", spec, genotype=cell, layers=e.layers, channels=e.channels),
            e.batch_size,
        ),
        "densenas": (lambda: create_model("densenas_net", spec, arch=arch), d.retrain_batch),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="*", default=TASKS_2D)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'task':<10} {'network':<9} {'batch':>5} {'NCHW s':>8} {'NHWC s':>8} {'NCHW/NHWC':>10}")
    ratios = []
    for task in args.tasks:
        spec = get_task(task)
        for name, (make, batch) in networks(task).items():
            x = torch.randn(batch, *spec.input_shape)
            nchw = step_seconds(make, x, False, args.steps)
            nhwc = step_seconds(make, x, True, args.steps)
            ratios.append(nchw / nhwc)
            row = f"{task:<10} {name:<9} {batch:>5} {nchw:>8.3f} {nhwc:>8.3f} {nchw / nhwc:>10.2f}"
            print(row, flush=True)
    print(f"channels-last speed-up: median {np.median(ratios):.2f}, lowest {min(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
