"""DASH's search step with the aggregated kernels built from the taps that reach the input only (the default,
``MixedConv.reaching_kernel``) against the full kernels, same weights, one run.

A step is the forward, loss and backward of DASH's search supernet (WRN-16-1 / the 1D ResNet, every searched
convolution a mixture of its space) on random inputs of the task's shape. The full-kernel variant applies the
uncropped kernel with its centred padding, as DASH does. Timed steps alternate between the two, so a change in
background load hits both alike; the ratio is of median step times (> 1: the crop is faster), and the first
step prints how far apart the outputs are (float rounding only).

    python benchmarks/dash_crop.py [--tasks cifar100 satellite] [--batch 16] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import nb360.search.dash_space as dash_space
from nb360.methods import dash
from nb360.tasks import get_task


def _full_kernel(
    self: dash_space.MixedConv, spatial: tuple[int, ...], probs: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``reaching_kernel`` that keeps every tap (DASH's own mixture): the whole kernel, centred padding."""
    return self.kernel(probs), ((self.size - 1) // 2,) * self.dim


def step(model: torch.nn.Module, x: torch.Tensor, full: bool) -> tuple[float, torch.Tensor]:
    saved = dash_space.MixedConv.reaching_kernel
    if full:
        dash_space.MixedConv.reaching_kernel = _full_kernel
    try:
        torch.manual_seed(1)  # the same Gumbel-softmax sample for both variants
        start = time.perf_counter()
        out = model(x)
        out.float().square().mean().backward()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out.detach()
    finally:
        dash_space.MixedConv.reaching_kernel = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["cifar100", "spherical", "ninapro", "satellite"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    print(f"device {args.device}, batch {args.batch}: median seconds per search step")
    print(f"{'task':<10} {'full':>8} {'cropped':>8} {'ratio':>6}  max |difference|")
    for task in args.tasks:
        spec = get_task(task)
        torch.manual_seed(0)
        model = dash.search_supernet(spec).to(args.device)
        x = torch.randn(args.batch, *spec.input_shape, device=args.device)
        _, a = step(model, x, full=True)  # warm-up, and the outputs compared
        _, b = step(model, x, full=False)
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.steps):
            for full in (True, False):
                times[full].append(step(model, x, full)[0])
        full_s, crop_s = statistics.median(times[True]), statistics.median(times[False])
        diff = (a - b).abs().max().item()
        print(f"{task:<10} {full_s:8.3f} {crop_s:8.3f} {full_s / crop_s:6.2f}  {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
