"""Train NB201 cells on NinaPro or Darcy as the precomputed benchmark did (nb201.md 6.2) and store records.

Protocol: train on train + val (our tasks' retrain-fit splits), evaluate on test after every epoch; SGD with
Nesterov momentum 0.9, learning rate 0.1, weight decay 5e-4, cosine to 0 updated per iteration, no warm-up;
batch 256 (NinaPro) or 16 (Darcy); NinaPro cross-entropy, Darcy relative L2 of the decoded output. One
seed for every cell (the 12-epoch run used 777). Training goes through the one loop,
:func:`nb360.train.loop.fit` (retrain phase, per-step cosine); a hook counts the training accuracy on the
training batches and evaluates the test split after each epoch, as xautodl's procedure did.

A cell's result is a RECORD, a plain JSON dict (the contract the tables read)::

    index, arch, task, epochs, seed,
    train_loss, train_acc, test_loss, test_acc, train_time, eval_time   (one float per epoch)
    params (millions), flops (millions, one forward of one sample; networks.count_flops)

Accuracy: NinaPro top-1 in percent; Darcy 1 - relative L2 (a fraction) and test loss = relative L2, as the
originals stored them; Darcy's train accuracy is 1 - the epoch's mean training loss. Times are measured
seconds (train: the epoch's weight steps; eval: the test pass), not the originals' rescaled pseudo-times.

:func:`run_chunk` trains a list of cells and writes ``cell-<index>.json`` atomically as each finishes; a
rerun skips finished cells, and with ``checkpoint`` a cell killed mid-training resumes from its last
epoch. :func:`chunks` cuts the 15,625 cells into Snakemake jobs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nb360 import metrics
from nb360.data.loader import make_loader
from nb360.data.shards import atomic_write_text, read_manifest
from nb360.nb201 import networks, space
from nb360.train.loop import FitHook, FitState, TrainConfig, fit, phase_splits, predict, seed_everything

log = logging.getLogger(__name__)

TASKS = networks.TASKS
BATCH_SIZE = {"ninapro": 256, "darcy": 16}
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
SEED = 777  # the 12-epoch run's seed (nb201.md 6.2)
CHUNK_SIZE = 64  # 245 jobs for the 15,625 cells
PER_EPOCH = ("train_loss", "train_acc", "test_loss", "test_acc", "train_time", "eval_time")
RECORD_KEYS = ("index", "arch", "task", "epochs", "seed", *PER_EPOCH, "params", "flops")


def protocol(
    task: str, epochs: int, batch_size: int | None = None, max_batches: int | None = None
) -> TrainConfig:
    """The benchmark's training configuration of ``task`` (``batch_size``/``max_batches`` override it for
    tiny runs)."""
    _check_task(task)
    return TrainConfig(
        epochs=epochs,
        lr=LR,
        batch_size=batch_size or BATCH_SIZE[task],
        momentum=MOMENTUM,
        nesterov=True,
        weight_decay=WEIGHT_DECAY,
        schedule="cosine",
        lr_min=0.0,
        per_step_schedule=True,
        max_batches_per_epoch=max_batches,
    )


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise KeyError(f"the NB201 benchmark covers {TASKS}, not {task!r}")


def eval_scores(task: str, outputs: Mapping[str, Any]) -> tuple[float, float]:
    """(test loss, test accuracy) of evaluation outputs (:func:`nb360.train.loop.predict`): NinaPro
    cross-entropy and top-1 %, Darcy relative L2 and 1 - relative L2."""
    pred, y = outputs["pred"], outputs["y"]
    if task == "ninapro":
        logits = torch.as_tensor(pred, dtype=torch.float64)
        loss = F.cross_entropy(logits, torch.as_tensor(y, dtype=torch.long).reshape(-1)).item()
        return loss, 100.0 - metrics.zero_one_error_pct(pred, y)
    if task == "darcy":
        rel = metrics.relative_l2(pred, y)
        return rel, 1.0 - rel
    raise KeyError(f"the NB201 benchmark covers {TASKS}, not {task!r}")


class CellRecorder(FitHook):
    """Adds ``train_acc``, ``test_loss``, ``test_acc`` and ``eval_seconds`` to every epoch's record: the
    training accuracy counted on the training batches (NinaPro) and a full test pass after the epoch."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.correct = 0
        self.seen = 0

    def setup(self, state: FitState) -> None:
        self.state = state
        _, eval_splits = phase_splits(state.spec, "retrain")
        batch = state.cfg.eval_batch_size or state.cfg.batch_size
        self.loader = make_loader(
            state.manifest, eval_splits, batch, train=False, fit_splits=state.fit_splits
        )

    def epoch_start(self, epoch: int) -> None:
        self.correct = self.seen = 0

    def after_step(
        self, epoch: int, step: int, batch: Mapping[str, torch.Tensor], out: torch.Tensor, loss: torch.Tensor
    ) -> None:
        if self.task == "ninapro":
            with torch.no_grad():
                self.correct += int((out.argmax(dim=1) == batch["y"]).sum().item())
            self.seen += len(batch["y"])

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        s = self.state
        t0 = time.perf_counter()
        outputs = predict(
            s.model, s.spec, self.loader, s.manifest.get("normaliser", {}), s.fit_splits, s.accel
        )
        if s.accel.cuda:
            torch.cuda.synchronize()
        record["eval_seconds"] = time.perf_counter() - t0
        record["test_loss"], record["test_acc"] = eval_scores(self.task, outputs)
        if self.task == "ninapro":
            record["train_acc"] = 100.0 * self.correct / max(self.seen, 1)
        else:
            record["train_acc"] = 1.0 - record["train_loss"]


@contextmanager
def _deterministic_cudnn() -> Iterator[None]:
    """cuDNN deterministic and without autotuning (the original ran with ``cudnn.deterministic``)."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def train_cell(
    task: str,
    index: int,
    manifest: str | os.PathLike | Mapping[str, Any],
    epochs: int,
    seed: int = SEED,
    device: str = "auto",
    C: int = 16,
    N: int = 5,
    batch_size: int | None = None,
    max_batches: int | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    hooks: Sequence[FitHook] = (),
    amp: bool = False,
) -> dict[str, Any]:
    """Train cell ``index`` on ``task``'s shards for ``epochs`` epochs and return its RECORD.

    ``batch_size`` defaults to the benchmark's (256 / 16); ``max_batches`` caps an epoch's batches (tiny
    runs). ``checkpoint``: a file to resume a killed run from (:func:`fit`). ``hooks`` run after the
    recorder (e.g. to stop a test run). ``amp``: bf16 autocast on CUDA (off: float32, as the original).
    """
    _check_task(task)
    manifest = manifest if isinstance(manifest, Mapping) else read_manifest(manifest)
    if manifest.get("task") != task:
        raise ValueError(f"manifest is of task {manifest.get('task')!r}, not {task!r}")
    arch = space.to_str(space.arch_of(index))  # an index outside the space raises here
    seed_everything(seed)  # the same initial weights for a cell on every run
    model = networks.build_network(task, arch, C, N)
    cfg = protocol(task, epochs, batch_size, max_batches)
    recorder = CellRecorder(task)
    with _deterministic_cudnn():
        result = fit(
            model, manifest, cfg, phase="retrain", seed=seed, device=device, checkpoint=checkpoint,
            hooks=[recorder, *hooks], amp=amp,
        )  # fmt: skip
    history = result.history
    if len(history) != epochs:
        raise RuntimeError(f"cell {index}: training stopped after {len(history)} of {epochs} epochs")
    record: dict[str, Any] = {"index": index, "arch": arch, "task": task, "epochs": epochs, "seed": seed}
    record["train_loss"] = [float(h["train_loss"]) for h in history]
    record["train_acc"] = [float(h["train_acc"]) for h in history]
    record["test_loss"] = [float(h["test_loss"]) for h in history]
    record["test_acc"] = [float(h["test_acc"]) for h in history]
    record["train_time"] = [float(h["seconds"]) for h in history]
    record["eval_time"] = [float(h["eval_seconds"]) for h in history]
    record["params"] = networks.count_params(model)
    record["flops"] = networks.count_flops(model, networks.INPUT_SHAPES[task])
    return record


def record_path(out_dir: str | os.PathLike, index: int) -> Path:
    return Path(out_dir) / f"cell-{index:05d}.json"


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """A record file; one that is not a record says which file to delete."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"{path} is not a readable cell record ({e}); delete it to train the cell again"
        ) from e
    missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise RuntimeError(f"{path} lacks {', '.join(missing)}; delete it to train the cell again")
    return record


def read_records(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record in ``out_dir``, by index."""
    return sorted((read_record(p) for p in Path(out_dir).glob("cell-*.json")), key=lambda r: r["index"])


def chunks(indices: Sequence[int], chunk_size: int = CHUNK_SIZE) -> list[list[int]]:
    """``indices`` cut into consecutive chunks of ``chunk_size`` (the last one shorter), one job each."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    indices = list(indices)
    return [indices[i : i + chunk_size] for i in range(0, len(indices), chunk_size)]


def run_chunk(
    task: str,
    indices: Sequence[int],
    manifest: str | os.PathLike | Mapping[str, Any],
    out_dir: str | os.PathLike,
    epochs: int,
    seed: int = SEED,
    device: str = "auto",
    C: int = 16,
    N: int = 5,
    batch_size: int | None = None,
    max_batches: int | None = None,
    *,
    checkpoint: bool = True,
    hooks: Sequence[FitHook] = (),
    amp: bool = False,
    done_path: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Train the cells ``indices`` one after another, writing each record to ``out_dir`` as it finishes.

    Cells whose record exists are skipped (a rerun after a kill starts at the first unfinished cell); a
    record of other settings (task, epochs, seed) stops the run. With ``checkpoint`` the cell in training
    keeps ``.cell-<index>.ckpt`` (removed once its record is written), so a killed cell resumes from its
    last epoch. ``done_path``: written last (the chunk's records as a JSON list), a job's output marker.
    Returns the records in ``indices`` order.
    """
    _check_task(task)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = manifest if isinstance(manifest, Mapping) else read_manifest(manifest)
    indices = list(indices)
    todo = [i for i in indices if not record_path(out, i).exists()]
    log.info(
        "NB201 %s chunk of %d cells (%d epochs, seed %d, C=%d, N=%d): %d finished, %s",
        task, len(indices), epochs, seed, C, N, len(indices) - len(todo),
        f"starting at cell {todo[0]}" if todo else "nothing to train",
    )  # fmt: skip
    records, t_chunk, trained = [], time.perf_counter(), 0
    for n, index in enumerate(indices, start=1):
        path = record_path(out, index)
        if path.exists():
            record = read_record(path)
            mine = {"task": task, "index": index, "epochs": epochs, "seed": seed}
            if any(record[k] != v for k, v in mine.items()):
                theirs = {k: record[k] for k in mine}
                raise RuntimeError(f"{path} holds a record of {theirs}, not {mine}: use another out_dir")
            records.append(record)
            continue
        ckpt = out / f".cell-{index:05d}.ckpt" if checkpoint else None
        t0 = time.perf_counter()
        record = train_cell(
            task, index, manifest, epochs, seed, device, C, N, batch_size, max_batches,
            checkpoint=ckpt, hooks=hooks, amp=amp,
        )  # fmt: skip
        atomic_write_text(path, json.dumps(record) + "\n")
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        records.append(record)
        trained += 1
        left = len(todo) - trained
        eta = (time.perf_counter() - t_chunk) / trained * left
        log.info(
            "cell %d done (%d/%d of the chunk): test loss %.4g, test acc %.4g, %.1f s; %d left, ~%.0f s",
            index, n, len(indices), record["test_loss"][-1], record["test_acc"][-1],
            time.perf_counter() - t0, left, eta,
        )  # fmt: skip
    if done_path is not None:
        atomic_write_text(done_path, json.dumps(records) + "\n")
    return records
