"""DARTS / PC-DARTS supernet search step: the batched cell against the per-op loop, same weights, one run.

A step is forward, loss, backward and an SGD step of the weights, with the architecture parameters requiring
grad (their gradient is computed, as in a search step, but this benchmark does not apply it):

* **loop**: ``Supernet(impl="loop")``, DARTS' mixed edge ``sum(w * op(x) for w, op in zip(weights, ops))``
  for every edge of every cell, with PC-DARTS partial channels (``none`` included, default NCHW memory);
* **batched**: ``Supernet(impl="batched")`` (the default), see :class:`nb360.search.darts_space.SearchCell`.

The loop gets the batched supernet's state dict, so both start from the same weights, and the first step
prints how far apart their outputs are (float rounding only). Timed steps alternate between the two, so a
change in background load hits both alike; the ratio is of median step times (> 1: batched is faster).
Peak memory of a step, above what is resident before it: on CUDA from ``torch.cuda.max_memory_allocated``
(tensors); on CPU the growth of the peak resident set over the first steps, in a fresh process per
implementation (PyTorch keeps no CPU allocator statistics). ``torch.compile`` is not used: it would first
have to compile on every machine (a CUDA-graph compile of the batched supernet is worth trying on a GPU).

    python benchmarks/supernet_step.py                          # cifar100-like 3x32x32, C=16, 8 cells, k=4
    python benchmarks/supernet_step.py --task ecg               # 1D, 1x1000
    python benchmarks/supernet_step.py --device cuda --threads 16
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import nb360.models  # noqa: F401  (before darts_space: see nb360/report/architectures.py)
from nb360.search.darts_space import Supernet
from nb360.tasks import get_task

IMPLS = ("loop", "batched")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="cifar100", help="task spec (input channels, dim, outputs); ecg for 1D")
    p.add_argument("--size", type=int, default=None, help="spatial size per axis (default: the task's)")
    p.add_argument("--C", type=int, default=16, help="initial channels")
    p.add_argument("--layers", type=int, default=8, help="cells")
    p.add_argument("--k", type=int, default=4, help="PC-DARTS partial-channel factor (1: plain DARTS)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation first")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--loop-channels-last",
        action="store_true",
        help="run the loop on channels-last memory too (2D): separates the layout's share of the gain",
    )
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[dict[str, Supernet], torch.Tensor, torch.Tensor]:
    """Both supernets on the same weights, an input batch and a regression target."""
    spec = get_task(args.task)
    spatial = spec.input_shape[1:] if args.size is None else (args.size,) * spec.dim
    torch.manual_seed(args.seed)
    nets = {impl: Supernet(spec, C=args.C, layers=args.layers, k=args.k, impl=impl) for impl in IMPLS}
    nets["loop"].load_state_dict(nets["batched"].state_dict())
    if args.loop_channels_last:
        nets["loop"] = nets["loop"].to(memory_format=torch.channels_last)  # 4D weights only
    device = torch.device(args.device)
    x = torch.randn(args.batch, spec.input_shape[0], *spatial, device=device)
    out_shape = (args.batch, spec.num_outputs, *(spatial if spec.output_kind == "dense" else ()))
    target = torch.randn(out_shape, device=device)
    return {impl: net.to(device) for impl, net in nets.items()}, x, target


def make_step(
    net: Supernet, x: torch.Tensor, target: torch.Tensor, loop_cl: bool
) -> Callable[[], torch.Tensor]:
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9, weight_decay=3e-4)
    if loop_cl and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> torch.Tensor:
        out = net(x)
        loss = F.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        for p in net.arch_parameters():
            p.grad = None
        loss.backward()
        opt.step()
        return out.detach()

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def resident_mib() -> tuple[float, float]:
    """(current, peak) resident set of this process in MiB. Linux: ``/proc/self/status``, whose peak starts
    afresh in a new process (``ru_maxrss`` would carry the parent's over into a spawned child)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return float(fields["VmRSS"].split()[0]) / 1024, float(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError):
        import resource  # Unix only, hence here

        unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
        return 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20


def peak_rss_child(args: argparse.Namespace, impl: str, queue: mp.Queue) -> None:
    """In a fresh process: MiB by which the peak resident set grows, above the built model, over the warm-up
    steps and one more."""
    torch.set_num_threads(args.threads)
    nets, x, target = build(args)
    step = make_step(nets[impl], x, target, args.loop_channels_last and impl == "loop")
    del nets  # the other implementation's copy
    before, _ = resident_mib()
    for _ in range(args.warmup + 1):
        step()
    queue.put(resident_mib()[1] - before)


def peak_memory(args: argparse.Namespace, steps: dict[str, Callable[[], torch.Tensor]]) -> dict[str, float]:
    """MiB a step needs above what is resident before it (weights, optimiser state, the other model)."""
    if args.device == "cuda":
        peaks = {}
        for impl, step in steps.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            peaks[impl] = (torch.cuda.max_memory_allocated() - resident) / 2**20
        return peaks
    ctx = mp.get_context("spawn")
    peaks = {}
    for impl in IMPLS:
        queue = ctx.Queue()
        proc = ctx.Process(target=peak_rss_child, args=(args, impl, queue))
        proc.start()
        peaks[impl] = queue.get(timeout=600)
        proc.join()
        if proc.exitcode:
            raise RuntimeError(f"memory measurement of {impl} failed (exit code {proc.exitcode})")
    return peaks


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    nets, x, target = build(args)
    steps = {
        impl: make_step(nets[impl], x, target, args.loop_channels_last and impl == "loop") for impl in IMPLS
    }
    print(
        f"task {args.task} input {tuple(x.shape)} C={args.C} layers={args.layers} k={args.k} "
        f"device {args.device} threads {torch.get_num_threads()} torch {torch.__version__}"
    )
    outs = {impl: step() for impl, step in steps.items()}  # first step: same weights, same input
    diff = (outs["batched"] - outs["loop"]).abs().max().item()
    print(f"first step: max |out_batched - out_loop| = {diff:.2e} (max |out| {outs['loop'].abs().max():.2e})")
    for _ in range(args.warmup - 1):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for i in range(args.steps):
        for impl in IMPLS if i % 2 == 0 else IMPLS[::-1]:
            sync(args.device)
            t0 = time.perf_counter()
            steps[impl]()
            sync(args.device)
            times[impl].append(time.perf_counter() - t0)
    peaks = peak_memory(args, steps)
    what = "step peak (allocated)" if args.device == "cuda" else "step peak (RSS)"
    for impl in IMPLS:
        med = statistics.median(times[impl])
        fastest = min(times[impl])
        print(
            f"{impl:8s} {1 / med:7.3f} steps/s  (median {med * 1e3:8.1f} ms, min {fastest * 1e3:8.1f} ms)"
            f"  {what} {peaks[impl]:8.1f} MiB"
        )
    ratio = statistics.median(times["loop"]) / statistics.median(times["batched"])
    print(f"ratio batched/loop (steps/s): {ratio:.2f}")


if __name__ == "__main__":
    main()
