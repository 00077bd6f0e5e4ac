"""CUDA checks of the training and search paths, in one run (for a machine with a GPU).

1. WRN-16-4 (the paper's width) on CIFAR-100 shards, float32 against bf16 autocast + channels-last, same seed
   and batches: samples/s of each and the test metric of each.
2. The dense WRN on Darcy under bf16: finite metric, samples/s.
3. GAEA (search, then retraining of the genotype) and DenseNAS (search) on CUDA: the architecture steps run
   under autocast and the results are finite.
4. Two GPU jobs at once: two processes started together, each training on the GPU; both must finish, and
   their wall-clock intervals overlap.
5. GPU slots (nb360.devices, what the workflow's training jobs do): two processes claim a GPU at once; each
   must see exactly one device. With two or more GPUs they get different ones and run together; with one,
   the second waits until the first has released it.
6. Evaluation in float32 (seconds): the paper-width WRN on Darcy with the training accelerator's bf16 autocast
   on; the outputs that metrics see (``predict``) must be float32 and equal a plain float32 forward (autocast
   and TF32 off), while a bf16 forward differs from it.

Usage: ``python benchmarks/cuda_check.py --shards results/shards`` (the shards of cifar100, darcy and
satellite built beforehand); ``--only eval_float32`` (names as in the summary's checks, comma-separated)
runs only those checks. Prints one line per check and a JSON summary; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nb360.data.loader import make_loader
from nb360.data.shards import read_manifest
from nb360.devices import claim_device, visible_gpus
from nb360.methods import RunContext, get_method
from nb360.models import create_model
from nb360.runs import write_arch
from nb360.tasks import get_task
from nb360.train import TrainConfig, fit, predict, seed_everything
from nb360.train.loop import _Accelerator, phase_splits

CHECKS = ("wrn_bf16", "darcy", "search", "two_jobs", "gpu_slots", "eval_float32")


def wrn_fit(shards: Path, task: str, amp: bool, epochs: int, batch: int, width: float = 1.0) -> dict:
    seed_everything(0)
    model = create_model("wrn", get_task(task), width=width)
    cfg = TrainConfig(epochs=epochs, lr=0.1 if task != "darcy" else 0.02, batch_size=batch)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = fit(model, shards / task / "manifest.json", cfg, "retrain", 0, "cuda", amp=amp)
    torch.cuda.synchronize()
    return {
        "task": task,
        "amp_bf16": amp,
        "metrics": result.metrics,
        "samples_per_s": [round(h["samples_per_s"]) for h in result.history],
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20),
    }


def search_and_retrain(shards: Path, task: str, method: str, workdir: Path, device: str = "cuda") -> dict:
    m = get_method(method)
    spec = get_task(task)
    ctx = RunContext(spec, shards / task / "manifest.json", 0, "smoke", device, workdir)
    t0 = time.perf_counter()
    found = m.search(ctx)
    out = {"task": task, "method": method, "search_s": round(time.perf_counter() - t0, 2)}
    out |= {"device": found.device, "summary": found.summary}
    arch = workdir / "arch.json"
    write_arch(found.kind, found.arch, found.summary, arch, {"task": task, "method": method, "seed": 0})
    t0 = time.perf_counter()
    result = m.retrain(RunContext(spec, ctx.manifest, 0, "smoke", device, workdir / "retrain", arch=arch))
    out |= {"retrain_s": round(time.perf_counter() - t0, 2), "metrics": result.metrics}
    return out


def concurrent_jobs(shards: Path) -> dict:
    """Two processes, each a WRN fit on the GPU, started together."""
    cmd = [sys.executable, __file__, "--shards", str(shards), "--job"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*cmd, str(i)], stdout=subprocess.PIPE, text=True) for i in range(2)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    ok = all(p.returncode == 0 for p in procs)
    (a0, a1), (b0, b1) = ((o["start"] - t0, o["end"] - t0) for o in outs)
    return {"ok": ok, "jobs": outs, "overlap_s": round(max(0.0, min(a1, b1) - max(a0, b0)), 2)}


def one_job(shards: Path, index: int) -> None:
    start = time.perf_counter()
    r = wrn_fit(shards, "cifar100", True, epochs=2, batch=128)
    print(json.dumps({"job": index, "start": start, "end": time.perf_counter(), **r}))


def slot_jobs(shards: Path, slots: Path) -> dict:
    """Two processes claiming a GPU through :func:`nb360.devices.claim_device` at the same time."""
    cmd = [sys.executable, __file__, "--shards", str(shards), "--slot-job"]
    env = {**os.environ, "NB360_GPU_SLOTS_DIR": str(slots)}
    procs = [subprocess.Popen([*cmd, str(i)], stdout=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    (a0, a1), (b0, b1) = ((o["start"], o["end"]) for o in outs)
    overlap = max(0.0, min(a1, b1) - max(a0, b0))
    gpus = len(visible_gpus()[0])
    ok = all(p.returncode == 0 for p in procs) and all(o["visible"] == 1 for o in outs)
    if gpus >= 2:
        ok = ok and outs[0]["gpu"] != outs[1]["gpu"] and overlap > 0
    else:
        ok = ok and outs[0]["gpu"] == outs[1]["gpu"] and overlap == 0
    return {"ok": ok, "gpus": gpus, "jobs": outs, "overlap_s": round(overlap, 2)}


def one_slot_job(shards: Path, index: int) -> None:
    with claim_device("auto") as placement:
        start = time.time()
        visible = torch.cuda.device_count()  # after the claim: CUDA sees only the claimed GPU
        r = wrn_fit(shards, "cifar100", True, epochs=1, batch=128)
        end = time.time()
    print(
        json.dumps({"job": index, "gpu": placement.gpu, "visible": visible, "start": start, "end": end, **r})
    )


def eval_float32(shards: Path, batches: int = 2, batch: int = 16, device: str = "cuda") -> dict:
    """Metric inputs with the training accelerator's bf16 on: float32 and equal to a float32 forward."""
    spec = get_task("darcy")
    manifest = read_manifest(shards / "darcy" / "manifest.json")
    fit_splits = phase_splits(spec, "retrain")[0]
    loader = make_loader(manifest, ("test",), batch, train=False, fit_splits=fit_splits)
    data = [b for _, b in zip(range(batches), loader, strict=False)]
    seed_everything(0)
    accel = _Accelerator(torch.device(device), spec.dim, amp=True)
    model = accel.model(create_model("wrn", spec)).eval()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    pred = predict(model, spec, data, manifest["normaliser"], fit_splits, accel)["pred"]
    restored = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == tf32

    def forward(bf16: bool) -> torch.Tensor:
        outs = []
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            for b in data:
                out = model(accel.batch({"x": b["x"]})["x"]).float()
                outs.append(spec.decode_output(out, manifest["normaliser"], fit_splits).cpu())
        return torch.cat(outs)

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        reference = forward(False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    mixed = forward(True)

    def rel(a: torch.Tensor) -> float:
        return float((a - reference).norm() / reference.norm())

    got = torch.from_numpy(pred)
    return {
        "dtype": str(pred.dtype),
        "exact": bool(torch.equal(got, reference)),
        "rel_diff_fp32": rel(got),
        "rel_diff_bf16": rel(mixed),
        "tf32_flags_restored": restored,
    }


def finite(metrics: dict) -> bool:
    return bool(metrics) and all(math.isfinite(v) for v in metrics.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, default=Path("results/shards"))
    ap.add_argument("--job", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--slot-job", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated checks of {', '.join(CHECKS)}")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if only - set(CHECKS):
        ap.error(f"--only: unknown check(s) {', '.join(sorted(only - set(CHECKS)))}; choose from {CHECKS}")
    if args.job is not None:
        one_job(args.shards, args.job)
        return 0
    if args.slot_job is not None:
        one_slot_job(args.shards, args.slot_job)
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    summary: dict = {}
    checks: dict[str, bool] = {}
    if "wrn_bf16" in only:
        fp32 = wrn_fit(args.shards, "cifar100", False, epochs=4, batch=128)
        bf16 = wrn_fit(args.shards, "cifar100", True, epochs=4, batch=128)
        summary["wrn_cifar100"] = {"fp32": fp32, "bf16": bf16}
        speed = bf16["samples_per_s"][-1] / fp32["samples_per_s"][-1]
        print(f"WRN-16-4 CIFAR-100: fp32 {fp32} | bf16 {bf16} | bf16/fp32 speed {speed:.2f}", flush=True)
        checks["wrn_bf16_finite"] = finite(bf16["metrics"]) and finite(fp32["metrics"])
    if "darcy" in only:
        darcy = wrn_fit(args.shards, "darcy", True, epochs=2, batch=8)
        summary["wrn_darcy_bf16"] = darcy
        print(f"dense WRN Darcy bf16: {darcy}", flush=True)
        checks["darcy_finite"] = finite(darcy["metrics"])
    if "search" in only:
        with tempfile.TemporaryDirectory() as tmp:
            for method in ("gaea", "densenas"):
                r = search_and_retrain(args.shards, "satellite", method, Path(tmp) / method)
                summary[f"{method}_satellite"] = r
                print(f"{method} on cuda: {r}", flush=True)
                checks[f"{method}_finite"] = finite(r["metrics"]) and r["device"].startswith("cuda")
    if "two_jobs" in only:
        jobs = concurrent_jobs(args.shards)
        summary["two_jobs"] = jobs
        print(f"two GPU jobs at once: overlap {jobs['overlap_s']} s, {jobs}", flush=True)
        checks["two_jobs"] = jobs["ok"] and jobs["overlap_s"] > 0
    if "gpu_slots" in only:
        with tempfile.TemporaryDirectory() as slots:
            slotted = slot_jobs(args.shards, Path(slots))
        summary["gpu_slots"] = slotted
        print(
            f"GPU slots, two jobs on {slotted['gpus']} GPU(s): overlap {slotted['overlap_s']} s, {slotted}",
            flush=True,
        )
        checks["gpu_slots"] = slotted["ok"]
    if "eval_float32" in only:
        ev = eval_float32(args.shards)
        summary["eval_float32"] = ev
        print(f"evaluation outputs under bf16 training: {ev}", flush=True)
        # Equal up to float32 noise (the same kernels give identical bits); bf16 differs by orders more.
        checks["eval_float32"] = (
            ev["dtype"] == "float32"
            and ev["rel_diff_fp32"] <= 1e-6
            and ev["rel_diff_bf16"] > 100 * max(ev["rel_diff_fp32"], 1e-7)
            and ev["tf32_flags_restored"]
        )
    print(json.dumps({"checks": checks, **summary}))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
