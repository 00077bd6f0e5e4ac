"""XGBoost: gradient-boosted trees, the paper's non-neural baseline (more-methods.md section 1).

As the original: histogram trees of depth 3, learning rate 1, row subsampling 0.9, up to 100 rounds with early
stopping after 5 rounds without improvement on the validation split, trained on the training split only.
Point tasks see each sample's input flattened; classification is softmax over the classes, multi-label tasks
(FSD50K, DeepSEA) one logistic tree per label and round.

Deviations (README, "Deviations"):

* Scored with probabilities, not the original's hard labels (``predict``), which made its DeepSEA AUROC 0.50
  and its FSD50K mAP 0.01. The probabilities go to the same metric code as every network, as logits
  (``log p`` for softmax, ``logit p`` for labels: the same rankings and argmax).
* Dense tasks (Darcy, PSICOV, Cosmic) per pixel: each pixel is a row whose features are its input channels in
  a (2r+1)^d neighbourhood, the same channels averaged over coarser neighbourhoods (context the solution of
  Darcy's PDE depends on) and its relative position; a sample of the training pixels is the training set. The
  original fitted one tree per output pixel and round (7,225 on Darcy, 16,384 on Cosmic) and could not run
  PSICOV at all.
* ``tree_method="hist"`` with ``device="cuda"`` on the job's GPU (the original's ``gpu_hist``, gone in
  xgboost 3) and uniform row sampling on the CPU (``gradient_based`` is GPU-only); seeded, so runs repeat.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nb360 import metrics
from nb360.data.loader import make_loader
from nb360.data.shards import read_manifest
from nb360.methods.base import Method, RunContext, register_method
from nb360.methods.budgets import check_budget
from nb360.tasks import TaskSpec
from nb360.train import RunResult, seed_everything
from nb360.train.loop import phase_splits

log = logging.getLogger(__name__)

# The original's parameters [xgboost_360.py:26-36]; eta is xgboost's learning rate.
PARAMS = {"max_depth": 3, "eta": 1.0, "subsample": 0.9, "tree_method": "hist"}
EARLY_STOPPING_ROUNDS = 5
BATCH = 256  # loader batch size while collecting arrays


@dataclass(frozen=True)
class XGBBudget:
    rounds: int = 100  # the library default the original ran with
    max_rows: int | None = None  # training rows: samples (point tasks) or sampled pixels (dense tasks)
    radius: int = 2  # dense tasks: the neighbourhood of a pixel, (2 radius + 1) per axis
    # Dense tasks: coarser neighbourhoods, as average-pooling factors of the input (the pixel's 3^d
    # neighbourhood at each scale).
    scales: tuple[int, ...] = (4, 16)
    eta: float = 1.0  # the original's learning rate


PAPER = {"dense": XGBBudget(max_rows=1_000_000), "point": XGBBudget()}
PAPER_TASK = {"psicov": XGBBudget(max_rows=1_000_000, radius=1, scales=())}
# Smoke budget (the embedded default): fewer rounds and rows where a full fit takes more than seconds.
SMOKE = {
    "cifar100": XGBBudget(rounds=8, max_rows=800),
    "spherical": XGBBudget(rounds=6, max_rows=400),
    "ninapro": XGBBudget(rounds=30),
    "fsd50k": XGBBudget(rounds=8, max_rows=1000),
    "darcy": XGBBudget(rounds=40, max_rows=40_000),
    "psicov": XGBBudget(rounds=30, max_rows=20_000, radius=1, scales=()),  # 57 channels: 513 features
    "cosmic": XGBBudget(rounds=30, max_rows=40_000),
    "ecg": XGBBudget(rounds=30, max_rows=3000),
    "satellite": XGBBudget(rounds=30),
    "deepsea": XGBBudget(rounds=10, max_rows=2000),
}


def budget_for(spec: TaskSpec, budget: str) -> XGBBudget:
    if check_budget(budget) == "paper":
        return PAPER_TASK.get(spec.name) or PAPER["dense" if spec.output_kind == "dense" else "point"]
    return SMOKE[spec.name]


def collect(
    manifest: Mapping[str, Any],
    splits: tuple[str, ...],
    fit_splits: tuple[str, ...],
    train: bool,
    seed: int,
    max_samples: int | None = None,
) -> dict[str, np.ndarray]:
    """The loader's batches of ``splits`` joined into arrays: training form (one pass of the shuffled,
    augmented batches a network trains on, the first ``max_samples``) or evaluation form (storage order)."""
    loader = make_loader(manifest, splits, BATCH, train=train, seed=seed, fit_splits=fit_splits)
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    seen = 0
    for batch in loader:
        for key, value in batch.items():
            parts[key].append(np.asarray(value))
        seen += len(batch["x"])
        if max_samples is not None and seen >= max_samples:
            break
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return {k: v[:max_samples] for k, v in arrays.items()} if max_samples else arrays


# ------------------------------------------------------------------------------------------- dense tasks


def pixel_features(x: np.ndarray, radius: int, scales: Iterable[int] = ()) -> np.ndarray:
    """Per-pixel features of inputs ``x`` (n, C, *spatial), for 1D or 2D: rows (n * positions, features) in
    row-major pixel order, each the pixel's channels in its (2 radius + 1)^d neighbourhood (zero-padded), its
    3^d neighbourhood of the channels average-pooled by each factor in ``scales``, and its position in
    [0, 1] along each axis."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n, _, *spatial = t.shape
    dim = len(spatial)
    pool = (F.avg_pool1d, F.avg_pool2d)[dim - 1]
    feats = [_neighbourhood(t, radius)]
    for factor in scales:
        coarse = pool(t, factor, ceil_mode=True, count_include_pad=False) if factor > 1 else t
        coarse = F.interpolate(coarse, size=tuple(spatial), mode="nearest")
        feats.append(_neighbourhood(coarse, 1, dilation=factor))
    axes = torch.meshgrid(*[torch.linspace(0.0, 1.0, s) for s in spatial], indexing="ij")
    pos = torch.stack(axes).reshape(dim, -1).T.repeat(n, 1)
    return torch.cat([*feats, pos], dim=1).numpy()


def _neighbourhood(t: torch.Tensor, radius: int, dilation: int = 1) -> torch.Tensor:
    """(n * positions, C * (2 radius + 1)^d): each position's zero-padded neighbourhood (every
    ``dilation``-th pixel), channels first."""
    n, _, *spatial = t.shape
    d, span = len(spatial), 2 * radius * dilation + 1
    t = F.pad(t, [radius * dilation] * (2 * d))
    for axis in range(2, 2 + d):
        t = t.unfold(axis, span, 1)[..., ::dilation]  # appends the window's axis
    # (n, C, *spatial, *window) -> (n, *spatial, C, *window)
    order = [0, *range(2, 2 + d), 1, *range(2 + d, 2 + 2 * d)]
    return t.permute(order).reshape(n * math.prod(spatial), -1)


def _pixel_rows(
    x: np.ndarray, keep: np.ndarray | None, budget: XGBBudget, rows: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Features of a sample of pixels (of those ``keep`` marks, (n, *spatial), if given): the training set."""
    positions = math.prod(x.shape[2:])
    candidates = np.flatnonzero(keep.reshape(-1)) if keep is not None else np.arange(len(x) * positions)
    if rows is not None and len(candidates) > rows:
        candidates = np.sort(rng.choice(candidates, size=rows, replace=False))
    feats = []
    for i in np.unique(candidates // positions):  # one sample at a time bounds the memory
        sel = candidates[candidates // positions == i] % positions
        feats.append(pixel_features(x[i : i + 1], budget.radius, budget.scales)[sel])
    return np.concatenate(feats), candidates


def _dense_targets(data: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-pixel targets (n, *spatial) and the pixels that count (None: all)."""
    y = data["y"][:, 0]
    mask = data.get("mask")
    return y, (mask[:, 0].astype(bool) if mask is not None else None)


# ------------------------------------------------------------------------------------------- training


def objective(spec: TaskSpec) -> dict[str, Any]:
    if spec.loss == "cross_entropy":
        return {"objective": "multi:softprob", "num_class": spec.num_outputs, "eval_metric": "mlogloss"}
    if spec.loss in ("bce_with_logits", "masked_bce_with_logits"):
        return {"objective": "binary:logistic", "eval_metric": "logloss"}
    if spec.loss in ("relative_l2", "mse"):
        return {"objective": "reg:squarederror", "eval_metric": "rmse"}
    raise ValueError(f"task {spec.name}: no XGBoost objective for loss {spec.loss!r}")


def to_outputs(spec: TaskSpec, prob: np.ndarray) -> np.ndarray:
    """XGBoost's predictions as the network outputs the metrics take: logits for the classification tasks
    (log p for softmax, logit p for independent labels), values for regression."""
    if spec.loss == "cross_entropy":
        return np.log(np.clip(prob, 1e-12, 1.0)).astype(np.float32)
    if spec.loss in ("bce_with_logits", "masked_bce_with_logits"):
        p = np.clip(prob, 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p)).astype(np.float32)
    return prob.astype(np.float32)


def xgb_device(device: str) -> str:
    """``cuda`` (or ``cuda:N``) where the job has a GPU and the installed xgboost was built with CUDA, else
    ``cpu`` (with a warning where a GPU was there but the build cannot use it)."""
    import xgboost

    if not device.startswith("cuda"):
        return "cpu"
    if not xgboost.build_info().get("USE_CUDA"):
        log.warning(
            "the job has %s but the installed xgboost %s has no CUDA (the venv's xgboost-cpu): training on "
            "the CPU; `pip install xgboost==%s` (the train environment's build) uses the GPU",
            device, xgboost.__version__, xgboost.__version__,
        )  # fmt: skip
        return "cpu"
    return device


def boost(
    spec: TaskSpec,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    rounds: int,
    seed: int,
    device: str,
    eta: float = 1.0,
) -> tuple[Any, list[dict[str, Any]]]:
    """Boosted trees on ``train`` (features, labels), early-stopped on ``val``; returns the booster and one
    record per round (training and validation loss)."""
    import xgboost

    params = {
        **PARAMS,
        **objective(spec),
        "eta": eta,
        "device": device,
        "sampling_method": "gradient_based" if device.startswith("cuda") else "uniform",
        "seed": seed,
        "nthread": torch.get_num_threads(),
    }
    dtrain = xgboost.DMatrix(train[0], label=train[1])
    dval = xgboost.DMatrix(val[0], label=val[1])
    evals: dict[str, Any] = {}
    booster = xgboost.train(
        params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dtrain, "train"), (dval, "val")],  # early stopping watches the last: val, as the original
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        evals_result=evals,
        verbose_eval=max(1, rounds // 10),
    )
    metric = params["eval_metric"]
    history = [
        {"epoch": i + 1, "train_loss": float(a), "val_loss": float(b), "val": None}
        for i, (a, b) in enumerate(zip(evals["train"][metric], evals["val"][metric], strict=True))
    ]
    return booster, history


def predict(booster: Any, features: np.ndarray) -> np.ndarray:
    import xgboost

    best = getattr(booster, "best_iteration", None)
    rng = (0, best + 1) if best is not None else (0, 0)
    return booster.predict(xgboost.DMatrix(features), iteration_range=rng)


def _point_xy(spec: TaskSpec, data: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x = data["x"].reshape(len(data["x"]), -1).astype(np.float32)
    y = data["y"]
    return x, (y.astype(np.float32) if y.ndim > 1 else y.astype(np.int64))


def _dense_train_rows(
    spec: TaskSpec, data: Mapping[str, np.ndarray], budget: XGBBudget, rows: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    y, keep = _dense_targets(data)
    feats, picked = _pixel_rows(data["x"], keep, budget, rows, np.random.default_rng(seed))
    return feats, y.reshape(-1)[picked].astype(np.float32)


def _dense_predict(
    spec: TaskSpec, booster: Any, x: np.ndarray, budget: XGBBudget, lengths: np.ndarray | None = None
) -> np.ndarray:
    """Output maps (n, 1, *spatial), one sample at a time; with ``lengths`` (PSICOV's canvases) only each
    protein's L x L block is predicted (the rest of the canvas is padding, which no metric reads)."""
    out = np.zeros((len(x), 1, *x.shape[2:]), dtype=np.float32)
    for i in range(len(x)):
        block = tuple(slice(0, int(lengths[i])) for _ in x.shape[2:]) if lengths is not None else ()
        xi = x[i : i + 1][(slice(None), slice(None), *block)]
        prob = predict(booster, pixel_features(xi, budget.radius, budget.scales))
        out[i, 0][block] = to_outputs(spec, prob).reshape(xi.shape[2:])
    return out


def retrain(ctx: RunContext) -> RunResult:
    t0 = time.perf_counter()
    spec, manifest = ctx.task, read_manifest(ctx.manifest)
    budget = budget_for(spec, ctx.budget)
    seed_everything(ctx.seed)
    # Train on train, stop early on val, report test: the original's protocol (no refit on train + val).
    fit_splits, val_splits = phase_splits(spec, "search")
    _, report = phase_splits(spec, "retrain")
    device = xgb_device(ctx.device)
    train = collect(
        manifest, fit_splits, fit_splits, train=True, seed=ctx.seed, max_samples=_samples(spec, budget)
    )
    val = collect(manifest, val_splits, fit_splits, train=False, seed=ctx.seed)
    test = collect(manifest, report, fit_splits, train=False, seed=ctx.seed)
    if spec.output_kind == "dense":
        val_rows = budget.max_rows // 4 if budget.max_rows else None
        train_xy = _dense_train_rows(spec, train, budget, budget.max_rows, ctx.seed)
        val_xy = _dense_train_rows(spec, val, budget, val_rows, ctx.seed + 1)
    else:
        train_xy, val_xy = _point_xy(spec, train), _point_xy(spec, val)
    log.info(
        "%s xgboost: %d training rows x %d features, %d validation rows, up to %d rounds on %s",
        spec.name, *train_xy[0].shape, len(val_xy[0]), budget.rounds, device,
    )  # fmt: skip
    booster, history = boost(spec, train_xy, val_xy, budget.rounds, ctx.seed, device, budget.eta)
    if spec.output_kind == "dense":
        lengths = test["length"].reshape(-1) if "length" in test else None
        pred = _dense_predict(spec, booster, test["x"], budget, lengths)
    else:
        pred = to_outputs(spec, predict(booster, _point_xy(spec, test)[0]))
    outputs = {"pred": pred, **{k: v for k, v in test.items() if k != "x"}}
    result = metrics.score(spec.name, outputs)
    rounds = booster.best_iteration + 1
    log.info(
        "%s xgboost on %s: %s (%d rounds kept of %d, %d tree nodes)",
        spec.name, "+".join(report), result, rounds, len(history), _count_nodes(booster),
    )  # fmt: skip
    return RunResult(
        result,
        history,
        params=0,  # no network: the parameter figures leave it out (the log gives its tree nodes)
        phase="retrain",
        eval_splits=report,
        device=device,
        seconds=time.perf_counter() - t0,
        selected_epoch=rounds,
    )


def _samples(spec: TaskSpec, budget: XGBBudget) -> int | None:
    """Training samples to collect: every one for the dense tasks (rows are pixels, sampled later)."""
    return None if spec.output_kind == "dense" else budget.max_rows


def _count_nodes(booster: Any) -> int:
    """The model's size: tree nodes of the kept rounds."""
    kept = booster[: booster.best_iteration + 1]
    return sum(len(tree.splitlines()) for tree in kept.get_dump())


register_method(Method("xgboost", retrain))
