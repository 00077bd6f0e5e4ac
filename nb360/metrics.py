"""The ten benchmark metrics, one implementation each (nb360.md 1.2, with the clarifications of 1.2b).

Every function takes numpy arrays (anything ``np.asarray`` accepts, CPU tensors included) and returns Python
floats in the paper's form: **every returned metric is lower-is-better** (:data:`LOWER_IS_BETTER`), so
accuracies, mAP, AUROC and F1 come back as 100 - accuracy or 1 - score. :func:`score` dispatches on the task
name and returns the metric(s) under the names of ``paper_results.csv``; :data:`PRIMARY_METRIC` names the one
the paper's table reports.

Decisions where the official code is ambiguous or buggy (nb360.md 1.2b):

* 0-1 error: the top-1 class is ``np.argmax``, i.e. ties go to the **first** (lowest) class index; the
  official ``torch.topk`` has no defined tie rule.
* FSD50K: chunk logits are averaged per clip and ranked as float64 logits (the sigmoid is monotone, so AP is
  unchanged, and saturated logits do not tie as in the official float32 probabilities); a clip's target is
  its first chunk's target; classes **without a positive clip are left out** of the mean (the official code
  scores their AP as 0).
* PSICOV: the prediction is symmetrised once (the official code does it twice) and every protein is scored
  with its own length; pairs with an unknown true distance are left out.
* Cosmic: binarised predictions (raw logit strictly > 0.5), counts summed over all pixels of all images; no
  ignore mask. 1 - AUROC of binary scores is computed in closed form, 1 - (TPR + TNR) / 2.
* ECG: window argmax, majority vote per record, ties to the class whose first window comes earliest in the
  given order (as the original's ``Counter.most_common``); a class **absent from both the record labels and
  the voted predictions is left out** of the macro mean (scikit-learn's default; the original raises
  ``KeyError``), a class in only one of them scores F1 = 0.
* DeepSEA: ROC-AUC per label on float64 logits (the official float32 sigmoid saturates); labels with a single
  class in the targets are skipped with a warning.
* Darcy: the mean over samples (the official code averages per-batch means).

Degenerate inputs for which a metric is undefined (no positive clip in FSD50K, no positive pixel in Cosmic,
no two-class label in DeepSEA, an empty evaluation set) raise ``ValueError`` rather than return NaN. One
exception: a Cosmic mask with positive but no negative pixels still has an FNR (FN / (FN + TP) needs positives
only), so ``cosmic_scores`` returns it and reports ``one_minus_auroc`` as NaN with a ``RuntimeWarning``
(AUROC needs both classes); a search that selects on it then ranks that candidate last.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from nb360.lazy import lazy_import
from nb360.tasks.psicov import MAE8_MAX_DISTANCE, MAE8_MIN_SEPARATION, protein_block

sk_metrics = lazy_import("sklearn.metrics")  # about 0.3 s: only jobs that score AUROC / AP pay it

LOWER_IS_BETTER = True  # every metric this module returns is lower-is-better

# Task -> the metric names :func:`score` returns (as in paper_results.csv).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cifar100": ("error_pct",),
    "spherical": ("error_pct",),
    "ninapro": ("error_pct",),
    "satellite": ("error_pct",),
    "fsd50k": ("one_minus_map",),
    "darcy": ("rel_l2",),
    "psicov": ("mae8",),
    "cosmic": ("one_minus_auroc", "fnr_pct"),
    "ecg": ("one_minus_f1",),
    "deepsea": ("one_minus_auroc",),
}

# Task -> the metric the paper's main table reports.
PRIMARY_METRIC: dict[str, str] = {task: names[0] for task, names in TASK_METRICS.items()}

PSICOV_FLOOR = 0.01  # predicted distances below this are raised to it before scoring (PDNet)
COSMIC_THRESHOLD = 0.5  # on the raw logit, strictly greater (official maskMetric call)


# -----------------------------------------------------------------------------------------------------------
# Helpers


def _nonempty(name: str, n: int) -> None:
    if n == 0:
        raise ValueError(f"{name}: empty evaluation set")


def _same_length(name: str, **arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{name}: arrays of different lengths {lengths}")


def _group_mean(values: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` rows per group id, and each group's first row index; groups in sorted id order."""
    ids, first, inv = np.unique(group, return_index=True, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv, minlength=len(ids))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.add.reduceat(values[order], starts, axis=0)
    return sums / counts.reshape(-1, *([1] * (values.ndim - 1))), first


# -----------------------------------------------------------------------------------------------------------
# Per-metric functions


def zero_one_error_pct(logits: np.ndarray, y: np.ndarray) -> float:
    """100 - top-1 accuracy (%). The top-1 class is the first maximum (``np.argmax``): ties go to the lowest
    class index, so a constant-logit predictor always predicts class 0."""
    logits, y = np.asarray(logits), np.asarray(y).reshape(-1)
    _same_length("zero_one_error_pct", logits=logits, y=y)
    _nonempty("zero_one_error_pct", len(y))
    correct = np.argmax(logits.reshape(len(logits), -1), axis=1) == y
    return float(100.0 - 100.0 * correct.mean())


def fsd50k_one_minus_map(logits: np.ndarray, y: np.ndarray, group: np.ndarray) -> float:
    """1 - mAP over clips: chunk logits averaged per clip (``group``), the clip's target its first chunk's
    target; per-class average precision (scikit-learn) ranked on float64 logits, macro mean over the classes
    with at least one positive clip (classes without one are left out)."""
    logits = np.asarray(logits, dtype=np.float64)
    y, group = np.asarray(y), np.asarray(group).reshape(-1)
    _same_length("fsd50k_one_minus_map", logits=logits, y=y, group=group)
    _nonempty("fsd50k_one_minus_map", len(group))
    clip_logits, first = _group_mean(logits, group)
    clip_y = y[first] > 0.5
    present = np.flatnonzero(clip_y.any(axis=0))
    if not len(present):
        raise ValueError("fsd50k_one_minus_map: no class has a positive clip; mAP is undefined")
    ap = [sk_metrics.average_precision_score(clip_y[:, c], clip_logits[:, c]) for c in present]
    return float(1.0 - np.mean(ap))


def relative_l2(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over samples of ||pred - y||_2 / ||y||_2, each sample flattened; ``pred`` in raw target units
    (Darcy: the output decoded with the training normaliser)."""
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if pred.shape != y.shape:
        raise ValueError(f"relative_l2: prediction shape {pred.shape} != target shape {y.shape}")
    _nonempty("relative_l2", len(y))
    diff = np.linalg.norm((pred - y).reshape(len(y), -1), axis=1)
    return float(np.mean(diff / np.linalg.norm(y.reshape(len(y), -1), axis=1)))


def psicov_mae8(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
    """MAE8: per protein (its own L x L prediction and true distances), symmetrise the prediction once,
    raise values below 0.01 to 0.01, keep pairs with j - i >= 24 and true distance <= 8 Å (NaN true
    distances are unknown and left out), mean |P - Y| over them; then the mean over the proteins that have
    such pairs (a protein without any counts as NaN and is skipped, as the official nan-mean)."""
    if len(preds) != len(targets):
        raise ValueError(f"psicov_mae8: {len(preds)} predictions but {len(targets)} targets")
    _nonempty("psicov_mae8", len(preds))
    maes = []
    for k, (p, t) in enumerate(zip(preds, targets, strict=True)):
        p, t = np.asarray(p, dtype=np.float64), np.asarray(t, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape != t.shape:
            raise ValueError(f"psicov_mae8: protein {k}: prediction {p.shape} and target {t.shape} not L x L")
        p = np.maximum((p + p.T) / 2.0, PSICOV_FLOOR)
        i, j = np.triu_indices(len(p), k=MAE8_MIN_SEPARATION)
        keep = t[i, j] <= MAE8_MAX_DISTANCE  # False for NaN
        maes.append(np.abs(p[i, j][keep] - t[i, j][keep]).mean() if keep.any() else np.nan)
    if np.all(np.isnan(maes)):
        raise ValueError("psicov_mae8: no protein has a pair with j - i >= 24 and distance <= 8 Å")
    return float(np.nanmean(maes))


def cosmic_scores(logits: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Pixelwise Cosmic scores of the binarised prediction (raw logit > 0.5, strictly) against the binary
    cosmic-ray mask, counts summed over all pixels of all images: ``fnr_pct`` = 100 FN / (FN + TP) and
    ``one_minus_auroc`` = 1 - AUROC of the binary scores = 1 - (TPR + TNR) / 2 (what scikit-learn's
    ``roc_auc_score`` gives on them). No positive pixel: ``ValueError`` (neither is defined); no negative
    pixel: the FNR, and ``one_minus_auroc`` NaN with a ``RuntimeWarning``."""
    logits, mask = np.asarray(logits), np.asarray(mask)
    if logits.shape != mask.shape:
        raise ValueError(f"cosmic_scores: logits shape {logits.shape} != mask shape {mask.shape}")
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError("cosmic_scores: the mask must be binary (0/1)")
    pred, gt = logits > COSMIC_THRESHOLD, mask.astype(bool)
    tp = int(np.count_nonzero(pred & gt))
    fn = int(np.count_nonzero(gt)) - tp
    fp = int(np.count_nonzero(pred)) - tp
    tn = gt.size - tp - fn - fp
    if tp + fn == 0:
        raise ValueError("cosmic_scores: the mask has no positive pixel; FNR and AUROC are undefined")
    tpr = tp / (tp + fn)
    if tn + fp == 0:
        warnings.warn(
            "cosmic_scores: the mask has no negative pixel; AUROC is undefined, one_minus_auroc is NaN "
            "(the FNR is defined and returned)",
            RuntimeWarning,
            stacklevel=2,
        )
        one_minus_auroc = math.nan
    else:
        one_minus_auroc = 1.0 - (tpr + tn / (tn + fp)) / 2.0
    return {"one_minus_auroc": float(one_minus_auroc), "fnr_pct": float(100.0 * (1.0 - tpr))}


def vote_records(pred: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of window classes per record: (sorted record ids, voted class). Ties go to the tied
    class whose first window comes earliest in the given order (as the original's ``Counter.most_common``)."""
    pred, group = np.asarray(pred, dtype=np.int64), np.asarray(group, dtype=np.int64)
    records, inv = np.unique(group, return_inverse=True)
    n_cls = int(pred.max()) + 1 if len(pred) else 1
    counts = np.zeros((len(records), n_cls), dtype=np.int64)
    np.add.at(counts, (inv, pred), 1)
    # Position of each class's first window per record; non-maximal classes are pushed past every position.
    first = np.full((len(records), n_cls), len(pred), dtype=np.int64)
    np.minimum.at(first, (inv, pred), np.arange(len(pred)))
    first = np.where(counts == counts.max(axis=1, keepdims=True), first, len(pred) + 1)
    return records, first.argmin(axis=1)


def record_macro_f1(pred: np.ndarray, target: np.ndarray, group: np.ndarray) -> float:
    """Macro F1 over classes after the per-record vote of window classes ``pred`` and ``target``; classes
    absent from both the voted labels and the voted predictions are left out of the mean."""
    _same_length("record_macro_f1", pred=np.asarray(pred), target=np.asarray(target), group=np.asarray(group))
    _nonempty("record_macro_f1", len(group))
    _, p = vote_records(pred, group)
    _, t = vote_records(target, group)
    scores = []
    for c in np.union1d(p, t):
        tp = np.count_nonzero((p == c) & (t == c))
        scores.append(2.0 * tp / (np.count_nonzero(p == c) + np.count_nonzero(t == c)))
    return float(np.mean(scores))


def ecg_one_minus_f1(logits: np.ndarray, y: np.ndarray, group: np.ndarray) -> float:
    """1 - record-level macro F1: window argmax (first index on ties) voted per record
    (:func:`vote_records`), the record label voted the same way, macro F1 (:func:`record_macro_f1`)."""
    logits = np.asarray(logits)
    return 1.0 - record_macro_f1(np.argmax(logits, axis=1), y, group)


def deepsea_one_minus_auroc(logits: np.ndarray, y: np.ndarray) -> float:
    """1 - mean per-label ROC-AUC (scikit-learn) on float64 logits; a label whose targets hold a single class
    is skipped with a warning."""
    return 1.0 - mean_auroc(logits, y, "deepsea_one_minus_auroc")


def mean_auroc(scores: np.ndarray, y: np.ndarray, name: str = "mean_auroc", warn: bool = True) -> float:
    """Mean per-label ROC-AUC of ``scores`` (N, L) against ``y``: (N, L) binary targets, or (N,) class
    indices, scored one class against the rest on the softmax of ``scores`` (a class's probability ranks
    samples; its logit alone would not). Labels whose targets hold a single class are skipped (with a
    warning if ``warn``)."""
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y)
    if y.ndim == 1 and scores.ndim == 2:
        if y.min(initial=0) < 0 or y.max(initial=0) >= scores.shape[1]:
            raise ValueError(f"{name}: class indices outside 0..{scores.shape[1] - 1}")
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores, y = shifted / shifted.sum(axis=1, keepdims=True), np.eye(scores.shape[1])[y]
    logits = scores
    if logits.shape != y.shape or logits.ndim != 2:
        raise ValueError(f"{name}: scores {logits.shape} and targets {y.shape} not (N, L)")
    _nonempty(name, len(y))
    pos = y > 0.5
    aucs, skipped = [], []
    for c in range(y.shape[1]):
        if pos[:, c].all() or not pos[:, c].any():
            skipped.append(c)
            continue
        aucs.append(sk_metrics.roc_auc_score(pos[:, c], logits[:, c]))
    if skipped and warn:
        warnings.warn(f"{name}: labels {skipped} have a single class in the targets; skipped", stacklevel=3)
    if not aucs:
        raise ValueError(f"{name}: no label has both classes; AUROC is undefined")
    return float(np.mean(aucs))


# -----------------------------------------------------------------------------------------------------------
# Dispatcher


def _psicov_from_canvas(outputs: Mapping[str, np.ndarray | Sequence[np.ndarray]]) -> float:
    """MAE8 from evaluation canvases: each protein's L x L block of the prediction and of the true distances
    (``protein_block``); pairs that ``mask`` marks unknown (stored as 0 in the y canvas) become NaN. Without
    ``mask``, distances <= 0 are unknown (real ones are >= 1 Å). ``pred``, ``y`` and ``mask`` are arrays
    (B, 1, S, S) or, where batches had different canvas sizes, sequences of per-protein (1, S_b, S_b)."""
    pred, y = outputs["pred"], outputs["y"]
    length = np.asarray(outputs["length"], dtype=np.int64).reshape(-1)
    mask = outputs.get("mask")
    _same_length("psicov", pred=pred, y=y, length=length, **({} if mask is None else {"mask": mask}))
    preds, targets = [], []
    for b, n in enumerate(length):
        p, t = np.asarray(pred[b]), np.asarray(y[b], dtype=np.float64)
        known = t > 0 if mask is None else np.asarray(mask[b], dtype=bool)
        if not p.shape[-2:] == t.shape[-2:] == known.shape[-2:]:
            raise ValueError(f"psicov: protein {b}: canvases {p.shape}, {t.shape}, {known.shape} differ")
        preds.append(protein_block(p.reshape(p.shape[-2:]), int(n)))
        block = protein_block(t.reshape(t.shape[-2:]), int(n))
        targets.append(np.where(protein_block(known.reshape(known.shape[-2:]), int(n)), block, np.nan))
    return psicov_mae8(preds, targets)


def score(task: str, outputs: Mapping[str, np.ndarray | Sequence[np.ndarray]]) -> dict[str, float]:
    """The task's metric(s), lower-is-better, keyed as in paper_results.csv (:data:`TASK_METRICS`).

    ``outputs`` holds the evaluation split in loader order: ``pred`` (logits for classification and Cosmic;
    the decoded prediction for Darcy; the predicted distance canvases for PSICOV), ``y`` and, where the
    task's batches carry them, ``group``, ``length`` and ``mask``. Each is one array concatenated over the
    batches or, for PSICOV, whose canvas grows with its longest protein, a sequence of per-protein arrays
    when the batches' canvases differ (:func:`nb360.train.loop.predict`). Cosmic's ``mask`` (the loss's
    ignore mask) is not used by the metric.
    """
    if task not in TASK_METRICS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TASK_METRICS)}")
    if task == "psicov":
        return {"mae8": _psicov_from_canvas(outputs)}
    pred, y = outputs["pred"], outputs["y"]
    if task in ("cifar100", "spherical", "ninapro", "satellite"):
        return {"error_pct": zero_one_error_pct(pred, y)}
    if task == "fsd50k":
        return {"one_minus_map": fsd50k_one_minus_map(pred, y, outputs["group"])}
    if task == "darcy":
        return {"rel_l2": relative_l2(pred, y)}
    if task == "cosmic":
        return cosmic_scores(pred, y)
    if task == "ecg":
        return {"one_minus_f1": ecg_one_minus_f1(pred, y, outputs["group"])}
    return {"one_minus_auroc": deepsea_one_minus_auroc(pred, y)}
