"""The one training loop, for every task and every architecture (baselines now, searched networks later).

The paper's protocol (nb360.md 3.1): SGD with Nesterov momentum 0.9, weight decay 5e-4, learning rate decayed
x0.2 at 30/60/80 % of the epochs, per-task learning rate and batch size. ``TrainConfig`` also gives AdamW, a
cosine or a constant schedule, and (``keep_best_val_loss``) a retrain that fits on train and reports the
epoch of lowest validation loss, as Perceiver IO's original runs. Split semantics are explicit:

* ``phase="search"``: fit on the task's search-fit split (train), select on its search-select split (val),
  evaluated after every epoch;
* ``phase="retrain"``: fit on the task's retrain-fit splits (train + val; train only for DeepSEA and FSD50K,
  as in the original) and report on test once, at the end.
  The test split never chooses anything.

A checkpoint is written atomically after every epoch (weights, optimiser, schedule, RNG state, history); a
run started again resumes from it and ends with the same metrics as an uninterrupted run (on the CPU). The
checkpoint's folder is probed for writing before the first epoch, and a failed write names the file.
On CUDA the loop trains under bf16 autocast with channels-last memory for 2D models; every evaluation (the
outputs that metrics see: search-phase validation, selection, the test report) runs in float32, without
autocast and without TF32.

Search methods use the same loop through :class:`FitHook` objects, called at fixed points and
checkpointed with the run: a bilevel architecture update before each weight step
(:mod:`nb360.search.bilevel`), a drop-path ramp at each epoch start, an ASHA report and prune after each
epoch (:mod:`nb360.search.asha`). A model with ``weight_parameters()`` (a supernet) has only those trained
by the weight optimiser; its architecture parameters belong to the hooks.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from nb360 import attempts, metrics
from nb360.data.loader import make_loader
from nb360.data.shards import read_manifest
from nb360.tasks import TaskSpec, get_task
from nb360.train.losses import make_loss

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "nb360-checkpoint/1"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    lr: float
    batch_size: int
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # "sgd" (with momentum and nesterov above), "adamw" (Perceiver IO; decoupled weight decay), "adam" and
    # "rmsprop" (L2 weight decay; RMSprop with Keras' rho 0.9 and epsilon 1e-7), "ranger" (RAdam with
    # Lookahead, :class:`Ranger`).
    optimizer: Literal["sgd", "adamw", "adam", "rmsprop", "ranger"] = "sgd"
    # "step": x gamma at the milestones (the WRN protocol); "cosine": cosine annealing to lr_min over the
    # epochs (DARTS, DenseNAS); "constant": no schedule (Perceiver IO); "plateau": x gamma once the
    # validation loss has not improved for ``patience`` epochs (needs keep_best_val_loss, which computes it);
    # "poly": x (1 - epoch / epochs) ** 0.9 (DeepLab, Auto-DeepLab's retraining).
    schedule: Literal["step", "cosine", "constant", "plateau", "poly"] = "step"
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)  # fractions of the epochs
    gamma: float = 0.2
    lr_min: float = 0.0
    patience: int = 10
    # A recipe's own loss instead of the task's (nb360.train.losses.LOSS_OVERRIDES), with its parameters.
    loss: str | None = None
    loss_params: tuple[tuple[str, float], ...] = ()
    # The schedule advances after every weight step instead of every epoch (cosine over epochs x steps:
    # NB201's per-iteration cosine, nb201.md 6.2); cosine only.
    per_step_schedule: bool = False
    grad_clip: float | None = None
    # The fraction (a, b) of the fit data the weights train on (bilevel search: the first half).
    fit_subset: tuple[float, float] | None = None
    # Smoke budgets cap the batches of an epoch (None: whole epochs, as in the paper).
    max_batches_per_epoch: int | None = None
    eval_batch_size: int | None = None
    # Search phase: validate every this many epochs (0: only at the end, e.g. a supernet in a smoke run),
    # on the first max_eval_batches batches of val only if set (smoke budgets; the same batches for every
    # candidate, so comparisons stay fair). The retrain phase's test report is always complete.
    val_every: int = 1
    max_eval_batches: int | None = None
    num_workers: int = 0
    # Retrain phase only: fit on the search-fit split (train) instead of train + val, compute the loss on the
    # search-select split (val) after every epoch, and report the epoch with the lowest validation loss on
    # test (a Lightning ModelCheckpoint on val_loss, as Perceiver IO's original runs).
    keep_best_val_loss: bool = False


@dataclass
class RunResult:
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    params: int = 0
    phase: str = "retrain"
    eval_splits: tuple[str, ...] = ("test",)
    device: str = "cpu"
    seconds: float = 0.0  # wall time of the epochs run in this call and the final evaluation
    # The epoch (or boosting round) whose model was reported, where a run selects one on validation.
    selected_epoch: int | None = None
    # The scores.json of the run whose result this one reuses (the same training; see MethodInfo.reuses).
    reused_from: str | None = None


@dataclass
class FitState:
    """What :func:`fit` hands its hooks at setup: the run's model, data and settings."""

    model: nn.Module
    spec: TaskSpec
    manifest: Mapping[str, Any]
    cfg: TrainConfig
    seed: int
    fit_splits: tuple[str, ...]
    loss_fn: Any
    accel: _Accelerator


class FitHook:
    """An extension of :func:`fit`; override what you need. Hooks run in the order given.

    ``before_step`` runs before every weight step with the (device) batch the weights will train on, and
    must leave the model in training mode;
    ``after_step`` sees each step's output and loss (read only);
    ``epoch_end`` may add entries to the epoch's record, or raise to end the run (e.g. an ASHA prune).
    ``state_dict``/``load_state_dict``: what the hook needs to resume exactly (saved in the checkpoint).
    """

    def setup(self, state: FitState) -> None:
        """Called once, after the model is on its device and before the first (or resumed) epoch."""

    def epoch_start(self, epoch: int) -> None:
        """Called at the start of every epoch (0-based)."""

    def before_step(self, epoch: int, step: int, batch: Mapping[str, torch.Tensor]) -> None:
        """Called before every weight step."""

    def after_step(
        self, epoch: int, step: int, batch: Mapping[str, torch.Tensor], out: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Called after every weight step with the batch, the model's (training-mode) output and the loss,
        e.g. to count training accuracy. Must not change them."""

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        """Called after every epoch, once the record (and the search-phase validation) is complete."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def seed_everything(seed: int) -> None:
    """Seeds torch and numpy's legacy global state (our own code draws only from explicit generators)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def phase_splits(spec: TaskSpec, phase: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(fit splits, evaluation splits) of a phase."""
    if phase == "search":
        return spec.splits.for_phase("search", "fit"), spec.splits.for_phase("search", "select")
    if phase == "retrain":
        return spec.splits.for_phase("retrain", "fit"), spec.splits.for_phase("retrain", "report")
    raise ValueError(f"phase must be 'search' or 'retrain', not {phase!r}")


class _Accelerator:
    """bf16 autocast (training only) on CUDA; channels-last memory for 2D inputs everywhere.

    On the CPU, oneDNN's NHWC convolutions make a training step of the smoke networks (WRN-16-1, DARTS cells,
    DenseNAS) 1.1-1.5 times faster than NCHW (``make bench-layout``); the numbers stay float32."""

    def __init__(self, device: torch.device, spatial_dim: int, amp: bool = True):
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = amp and self.cuda
        self.channels_last = spatial_dim == 2

    def model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.channels_last:
            out["x"] = out["x"].contiguous(memory_format=torch.channels_last)
        return out

    def autocast(self) -> torch.autocast:
        """The training forward's context: bf16 autocast where ``amp`` is on."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        """The evaluation forward's context: float32 throughout, so metrics never see bf16-rounded outputs
        (up to 1e-2 relative on Darcy). Autocast is off even inside a caller's autocast region, and on CUDA
        so is TF32, which cuDNN convolutions use by default (10-bit mantissas)."""
        with torch.autocast(self.device.type, enabled=False):
            if not self.cuda:
                yield
                return
            saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            try:
                yield
            finally:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def model_signature(model: nn.Module) -> str:
    """A digest of the model's state-dict names and shapes: a checkpoint of another architecture (e.g. a
    previous search's candidate under the same file name) must not be resumed."""
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()


def _unwritable(path: Path, e: BaseException) -> RuntimeError:
    return RuntimeError(
        f"checkpoint {path} cannot be written ({type(e).__name__}: {e}); make {path.parent} a writable "
        "folder with free space (or point the run's working folder elsewhere) and rerun: the run resumes "
        "from its last checkpoint"
    )


def check_checkpoint_writable(path: str | os.PathLike) -> None:
    """Create the checkpoint's folder and write, rename and delete a probe file there, as
    :func:`_save_checkpoint` will: an unwritable folder stops the run before its first epoch, not after it."""
    path = Path(path)
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
    tmp = probe.with_name(probe.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(b"nb360 checkpoint probe\n")
        os.replace(tmp, probe)
        probe.unlink()
    except OSError as e:
        for leftover in (tmp, probe):
            with suppress(OSError):
                leftover.unlink()
        raise _unwritable(path, e) from e


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)  # a full disk is a RuntimeError from torch's writer, naming no file
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        with suppress(OSError):
            tmp.unlink()
        raise _unwritable(path, e) from e


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt checkpoint must not be trusted: say so and start over
        raise RuntimeError(
            f"checkpoint {path} cannot be read ({type(e).__name__}): it is corrupt or not written by this "
            "pipeline; delete it to restart this run from scratch"
        ) from e
    if state.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path} is not an nb360 checkpoint; delete it to restart this run")
    return state


@torch.no_grad()
def predict(
    model: nn.Module,
    spec: TaskSpec,
    batches: Iterable[Mapping[str, torch.Tensor]],
    normaliser: Mapping[str, Any],
    fit_splits: tuple[str, ...],
    accel: _Accelerator | None = None,
) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Model outputs (decoded to target units) and the batches' targets, concatenated in loader order
    (:func:`_join`: per-sample lists where batches differ in shape, as PSICOV's evaluation canvases)."""
    accel = accel or _Accelerator(next(model.parameters(), torch.zeros(0)).device, spec.dim)
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for batch, out in _eval_outputs(model, spec, batches, accel, move_targets=False):
        if spec.decode_output:
            out = spec.decode_output(out, normaliser, fit_splits)
        parts["pred"].append(out.cpu().numpy())
        for k, v in batch.items():
            if k != "x":
                parts[k].append(v.numpy())
    return {k: _join(v) for k, v in parts.items()}


def _eval_outputs(
    model: nn.Module,
    spec: TaskSpec,
    batches: Iterable[Mapping[str, torch.Tensor]],
    accel: _Accelerator,
    move_targets: bool,
) -> Iterator[tuple[Mapping[str, torch.Tensor], torch.Tensor]]:
    """Each batch with the model's float32 output in evaluation mode (``eval_forward`` where the task has
    one); the batch's inputs on the device, and its targets too if ``move_targets``."""
    model.eval()
    for batch in batches:
        moved = accel.batch(batch if move_targets else {"x": batch["x"]})
        with accel.evaluation():
            out = spec.eval_forward(model, moved["x"]) if spec.eval_forward else model(moved["x"])
        yield {**batch, **moved}, out.float()


def _join(parts: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """The batches' arrays concatenated; where their shapes differ past the batch axis (PSICOV's evaluation
    canvas grows for a protein over 502 residues), the list of the per-sample arrays instead."""
    if len({p.shape[1:] for p in parts}) <= 1:
        return np.concatenate(parts)
    return [sample for p in parts for sample in p]


def evaluate(
    model: nn.Module,
    spec: TaskSpec,
    manifest: Mapping[str, Any],
    splits: tuple[str, ...],
    fit_splits: tuple[str, ...],
    batch_size: int,
    accel: _Accelerator | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """The task's metrics (paper form, lower is better) of ``model`` on ``splits`` (on the first
    ``max_batches`` batches only, in storage order, if given)."""
    loader = make_loader(manifest, splits, batch_size, train=False, fit_splits=fit_splits)
    batches = itertools.islice(loader, max_batches) if max_batches else loader
    outputs = predict(model, spec, batches, manifest.get("normaliser", {}), fit_splits, accel)
    return metrics.score(spec.name, outputs)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int = 1
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """The learning-rate schedule of ``cfg``: stepped per epoch, or with ``cfg.per_step_schedule`` per weight
    step (``steps_per_epoch`` steps an epoch)."""
    if cfg.per_step_schedule and cfg.schedule != "cosine":
        raise ValueError(f"per_step_schedule needs the cosine schedule, not {cfg.schedule!r}")
    if cfg.schedule == "cosine":
        t_max = cfg.epochs * steps_per_epoch if cfg.per_step_schedule else cfg.epochs
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=cfg.lr_min)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)
    if cfg.schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=cfg.epochs, power=0.9)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.gamma, patience=cfg.patience, min_lr=cfg.lr_min
        )
    if cfg.schedule != "step":
        raise ValueError(
            f"schedule must be 'step', 'cosine', 'constant', 'plateau' or 'poly', not {cfg.schedule!r}"
        )
    milestones = sorted(
        {max(1, math.ceil(f * cfg.epochs)) for f in cfg.milestones if f * cfg.epochs < cfg.epochs}
    )
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma)


class Ranger(torch.optim.RAdam):
    """RAdam with Lookahead (the "Ranger" of the NinaPro expert; defaults of pytorch-ranger: betas (0.95,
    0.999), epsilon 1e-5, every k = 6 steps the slow weights move alpha = 0.5 of the way to the fast ones and
    the fast weights restart from them). The slow weights live in the optimiser's state, so a checkpoint
    resumes them."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        k: int = 6,
        alpha: float = 0.5,
    ):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.k, self.alpha = k, alpha

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        live = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        first = {p: p.detach().clone() for p in live if "slow" not in self.state[p]}
        loss = super().step(closure)
        for p in live:
            state = self.state[p]
            if p in first:
                state["slow"] = first[p]
            if int(state["step"]) % self.k == 0:
                state["slow"].add_(p - state["slow"], alpha=self.alpha)
                p.copy_(state["slow"])
        return loss


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The weight optimiser of ``cfg``."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.9, eps=1e-7, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "ranger":
        return Ranger(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer != "sgd":
        raise ValueError(
            f"optimizer must be 'sgd', 'adamw', 'adam', 'rmsprop' or 'ranger', not {cfg.optimizer!r}"
        )
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    spec: TaskSpec,
    manifest: Mapping[str, Any],
    splits: tuple[str, ...],
    fit_splits: tuple[str, ...],
    batch_size: int,
    loss_fn: Any,
    accel: _Accelerator,
    max_batches: int | None = None,
) -> float:
    """The training loss on evaluation batches of ``splits`` (first ``max_batches`` only, if given), in
    float32: the sample-weighted mean of the batch losses."""
    loader = make_loader(manifest, splits, batch_size, train=False, fit_splits=fit_splits)
    batches = itertools.islice(loader, max_batches) if max_batches else loader
    total, seen = 0.0, 0
    for batch, out in _eval_outputs(model, spec, batches, accel, move_targets=True):
        n = len(batch["x"])
        total, seen = total + loss_fn(out, batch).item() * n, seen + n
    return total / max(seen, 1)


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the weight optimiser trains: a supernet's ``weight_parameters()``, else all."""
    select = getattr(model, "weight_parameters", None)
    return list(select() if callable(select) else model.parameters())


def fit(
    model: nn.Module,
    manifest: str | os.PathLike | Mapping[str, Any],
    cfg: TrainConfig,
    phase: str = "retrain",
    seed: int = 0,
    device: str = "auto",
    checkpoint: str | os.PathLike | None = None,
    stop_after_epochs: int | None = None,
    hooks: Sequence[FitHook] = (),
    amp: bool = True,
) -> RunResult:
    """Train ``model`` on a task's shards and evaluate it; resumable from ``checkpoint``.

    ``hooks`` extend the loop (architecture updates, drop-path ramps, pruning); see :class:`FitHook`.
    ``amp``: bf16 autocast on CUDA (False: float32 there too; the CPU always runs float32).
    ``stop_after_epochs`` ends the call early (as a kill would) after that many epochs of this call; the
    checkpoint then holds the state to resume from. It exists for tests of resumption.
    """
    t_start = time.perf_counter()
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None:
        check_checkpoint_writable(ckpt_path)
    manifest = manifest if isinstance(manifest, Mapping) else read_manifest(manifest)
    spec = get_task(manifest["task"])
    fit_splits, eval_splits = phase_splits(spec, phase)
    select_splits: tuple[str, ...] = ()
    if cfg.keep_best_val_loss:
        if phase != "retrain":
            raise ValueError("keep_best_val_loss selects a retrain's epoch; the search phase selects on val")
        fit_splits, select_splits = phase_splits(spec, "search")
    elif cfg.schedule == "plateau":
        raise ValueError("the plateau schedule follows the validation loss: set keep_best_val_loss")
    normaliser = manifest.get("normaliser", {})
    accel = _Accelerator(resolve_device(device), spec.dim, amp)
    model = accel.model(model)
    loss_fn = make_loss(spec, normaliser, fit_splits, cfg.loss, dict(cfg.loss_params))
    loader = make_loader(
        manifest,
        fit_splits,
        cfg.batch_size,
        train=True,
        seed=seed,
        fit_splits=fit_splits,
        subset=cfg.fit_subset,
    )
    steps = len(loader) if cfg.max_batches_per_epoch is None else min(len(loader), cfg.max_batches_per_epoch)
    params_to_train = weight_parameters(model)
    optimizer = make_optimizer(params_to_train, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps)
    for hook in hooks:
        hook.setup(FitState(model, spec, manifest, cfg, seed, fit_splits, loss_fn, accel))

    history: list[dict[str, Any]] = []
    start = 0
    best: dict[str, Any] | None = None  # keep_best_val_loss: {"epoch", "loss", "model"} of the best epoch
    state = _load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if state is not None and state.get("config") != asdict(cfg):
        log.warning("checkpoint %s was written with another configuration; starting over", ckpt_path)
        state = None
    signature = model_signature(model)
    if state is not None and state.get("model_signature") != signature:
        log.warning("checkpoint %s was written for another architecture; starting over", ckpt_path)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        for hook, hook_state in zip(hooks, state.get("hooks", []), strict=False):
            hook.load_state_dict(hook_state)
        history, start = list(state["history"]), int(state["epoch"])
        best = state.get("best")
        log.info("resuming %s from %s after epoch %d of %d", spec.name, ckpt_path, start, cfg.epochs)
    params = count_params(model)
    log.info(
        "%s %s: %d parameters, %d epochs x %d batches of %d on %s (fit %s, evaluate %s)",
        spec.name, phase, params, cfg.epochs, steps, cfg.batch_size, accel.device,
        "+".join(fit_splits), "+".join(eval_splits),
    )  # fmt: skip
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    eval_cap = cfg.max_eval_batches if phase == "search" else None
    # The job's attempt record (nb360.attempts; a no-op outside a job): its device, then each epoch's end.
    attempts.heartbeat(f"{phase} epoch {start}/{cfg.epochs}", str(accel.device))
    for epoch in range(start, cfg.epochs):
        if stop_after_epochs is not None and epoch - start >= stop_after_epochs:
            return RunResult({}, history, params, phase, eval_splits, str(accel.device))
        loader.sampler.set_epoch(epoch)
        for hook in hooks:
            hook.epoch_start(epoch)
        model.train()
        lr = optimizer.param_groups[0]["lr"]  # the epoch's (first step's) learning rate
        t0, t_log, total, seen = time.perf_counter(), time.perf_counter(), 0.0, 0
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            batch = accel.batch(batch)
            for hook in hooks:
                hook.before_step(epoch, step, batch)
            with accel.autocast():
                out = model(batch["x"])
            loss = loss_fn(out.float(), batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{spec.name}: loss is {loss.item()} at epoch {epoch + 1}, step {step}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params_to_train, cfg.grad_clip)
            optimizer.step()
            if cfg.per_step_schedule:
                scheduler.step()
            for hook in hooks:
                hook.after_step(epoch, step, batch, out, loss)
            n = len(batch["x"])
            total, seen = total + loss.item() * n, seen + n
            if time.perf_counter() - t_log > 30:
                t_log = time.perf_counter()
                log.info("  epoch %d: %d/%d batches, loss %.4g", epoch + 1, step + 1, steps, total / seen)
        if not cfg.per_step_schedule and cfg.schedule != "plateau":
            scheduler.step()
        seconds = time.perf_counter() - t0
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "lr": lr,
            "seconds": seconds,
            "samples_per_s": seen / max(seconds, 1e-9),
            "val": None,
        }
        if phase == "search" and cfg.val_every and (epoch + 1) % cfg.val_every == 0:
            record["val"] = evaluate(model, spec, manifest, eval_splits, fit_splits, eval_bs, accel, eval_cap)
        if select_splits:
            record["val_loss"] = validation_loss(
                model,
                spec,
                manifest,
                select_splits,
                fit_splits,
                eval_bs,
                loss_fn,
                accel,
                cfg.max_eval_batches,
            )
            if cfg.schedule == "plateau":
                scheduler.step(record["val_loss"])
            if best is None or record["val_loss"] < best["loss"]:
                state_now = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best = {"epoch": epoch + 1, "loss": record["val_loss"], "model": state_now}
        for hook in hooks:
            hook.epoch_end(epoch, record)
        history.append(record)
        log.info(
            "epoch %d/%d: loss %.4g, lr %.3g, %.1f s (%.0f samples/s)%s",
            epoch + 1, cfg.epochs, record["train_loss"], lr, seconds, record["samples_per_s"],
            f", val {record['val']}" if record["val"] else "",
        )  # fmt: skip
        if select_splits:
            log.info("  val loss %.4g (best %.4g, epoch %d)", record["val_loss"], best["loss"], best["epoch"])
        if ckpt_path is not None:
            _save_checkpoint(
                ckpt_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "config": asdict(cfg),
                    "model_signature": signature,
                    "hooks": [hook.state_dict() for hook in hooks],
                    "best": best,
                },
            )
        attempts.heartbeat(f"{phase} epoch {epoch + 1}/{cfg.epochs}", str(accel.device))
    if best is not None:
        model.load_state_dict(best["model"])
        log.info(
            "%s: reporting epoch %d, the lowest validation loss (%.4g)",
            spec.name,
            best["epoch"],
            best["loss"],
        )
    if phase == "search" and history and history[-1]["epoch"] == cfg.epochs and history[-1]["val"]:
        final = history[-1]["val"]  # the last epoch's validation is the final one: no second pass
    else:
        final = evaluate(model, spec, manifest, eval_splits, fit_splits, eval_bs, accel, eval_cap)
    log.info("%s %s on %s: %s", spec.name, phase, "+".join(eval_splits), final)
    seconds = time.perf_counter() - t_start
    selected = best["epoch"] if best is not None else None
    return RunResult(final, history, params, phase, eval_splits, str(accel.device), seconds, selected)
