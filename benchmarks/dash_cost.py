"""DASH's cost against the WRN's training, per task, measured in one run on one device and projected to the
paper budget: ``make bench-dash``.

For each task, the time per training sample of one step (forward, loss, backward, update) of

* DASH's search supernet (WRN-16-1, or the 1D ResNet at DASH's width, every searched convolution a mixture of
  its space; the weight step and the single-level architecture step),
* DASH's retraining network (WRN-16-4 / the 1D ResNet with the kernels and dilations of a search's
  ``arch.json`` where ``--archs`` names one for the task, else drawn from the space with a fixed seed; the
  hyper-parameter stage trains the same network),
* the WRN baseline (WRN-16-4 / the 1D ResNet with its own kernels),

on random inputs of the task's shape, then the paper budget's samples of each stage from the real dataset's
training size: search 100 epochs x 20 % of the batches; hyper-parameter stage 24 configurations (3 on PSICOV,
Cosmic and FSD50K; the full grid, an upper bound: DASH stops a learning-rate group early) x 80 epochs x DASH's
fraction of the batches; retraining and WRN 200 epochs of the whole training set. Prints each stage's
projected hours and the ratio (search + selection + retraining) / WRN training.

    python benchmarks/dash_cost.py [--tasks ninapro satellite] [--batch 8] [--steps 3] [--device cpu] \
        [--archs results/search/{task}/dash/seed0/arch.json]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nb360.methods import dash
from nb360.methods.wrn import PAPER_BATCH
from nb360.models import create_model
from nb360.runs import read_arch
from nb360.tasks import get_task, list_tasks


def seconds_per_sample(
    make: Callable[[], nn.Module], shape: tuple[int, ...], batch: int, steps: int, device: str
) -> float:
    torch.manual_seed(0)
    model = make().to(device)
    x = torch.randn(batch, *shape, device=device)
    arch = list(model.arch_parameters()) if hasattr(model, "arch_parameters") else []
    weights = [p for p in model.parameters() if all(p is not a for a in arch)]
    opt = torch.optim.SGD(weights, lr=0.01, momentum=0.9)
    arch_opt = torch.optim.SGD(arch, lr=0.005, momentum=0.9) if arch else None

    def step() -> None:
        out = model(x)
        loss = out.float().square().mean()
        opt.zero_grad(set_to_none=True)
        if arch_opt:
            arch_opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if arch_opt:
            arch_opt.step()

    step()  # warm-up (kernel selection, FFT plans)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (steps * batch)


# Training samples where the task registry documents no item count (its real_counts leave them unchecked):
# FSD50K trains on one chunk per clip (36,796 clips), ECG on windows (261,740 in search mode, nb360.md 1.1;
# not its 8,528 recordings). Every stage scales with it alike; it only picks DASH's fraction of the batches
# for the hyper-parameter stage.
TRAIN_FALLBACK = {"fsd50k": 36_796, "ecg": 261_740}


def hp_fraction(batches: int) -> float:
    """DASH's fraction of the batches per hyper-parameter epoch (task_configs.py)."""
    return 0.2 if batches < 50 else 0.1 if batches < 100 else 0.05 if batches < 500 else 0.01


def retrain_convs(task: str, archs: str | None) -> tuple[list[tuple[int, int]], str]:
    """The retraining network's (kernel, dilation) per searched convolution, and where they come from: the
    ``arch.json`` that ``archs`` (a path with ``{task}``) names for ``task``, else a fixed-seed draw."""
    if archs:
        path = Path(archs.format(task=task))
        if path.exists():
            return [(int(k), int(d)) for k, d in read_arch(path, dash.KIND)["arch"]["convs"]], str(path)
    spec = get_task(task)
    kernels, dilations = dash.space_for(spec)
    rng = np.random.default_rng(0)
    n_convs = 13 if spec.dim == 2 else 9
    return [(int(rng.choice(kernels)), int(rng.choice(dilations))) for _ in range(n_convs)], "random"


def measure(
    task: str, batch: int | None, steps: int, device: str, convs: list[tuple[int, int]]
) -> dict[str, float]:
    spec = get_task(task)
    shape = tuple(spec.input_shape)

    dash_batch = batch or dash.DASH_BATCH[task]
    wrn_batch = batch or PAPER_BATCH[task]
    t_search = seconds_per_sample(lambda: dash.search_supernet(spec), shape, dash_batch, steps, device)
    t_retrain = seconds_per_sample(
        lambda: create_model("wrn", spec, convs=convs), shape, dash_batch, steps, device
    )
    t_wrn = seconds_per_sample(lambda: create_model("wrn", spec), shape, wrn_batch, steps, device)
    n_train = spec.real_counts.splits.get("train") or TRAIN_FALLBACK[task]
    batches = math.ceil(n_train / dash.DASH_BATCH[task])
    configs = len(dash.hp_grid(task, dash.PAPER))
    samples = {
        "search": 100 * 0.2 * n_train,
        "selection": configs * 80 * hp_fraction(batches) * n_train,
        "retrain": 200 * n_train,
        "wrn": 200 * n_train,
    }
    hours = {
        "search": samples["search"] * t_search / 3600,
        "selection": samples["selection"] * t_retrain / 3600,
        "retrain": samples["retrain"] * t_retrain / 3600,
        "wrn": samples["wrn"] * t_wrn / 3600,
    }
    hours["ratio"] = (hours["search"] + hours["selection"] + hours["retrain"]) / hours["wrn"]
    return hours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list_tasks())
    parser.add_argument(
        "--batch", type=int, default=None, help="one batch size for every network (CPU: small)"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--archs",
        default=None,
        help="searched architectures, a path with {task} (e.g. results/search/{task}/dash/seed0/arch.json); "
        "tasks without one get kernels drawn from the space",
    )
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    print(f"device {args.device}; hours at the paper budget, projected from the time per sample of one step")
    print(f"{'task':<10} {'search':>8} {'select':>8} {'retrain':>8} {'WRN':>8} {'ratio':>6}  kernels from")
    for task in args.tasks:
        convs, source = retrain_convs(task, args.archs)
        h = measure(task, args.batch, args.steps, args.device, convs)
        print(
            f"{task:<10} {h['search']:8.2f} {h['selection']:8.2f} {h['retrain']:8.2f} {h['wrn']:8.2f} "
            f"{h['ratio']:6.2f}  {source}"
        )


if __name__ == "__main__":
    main()
