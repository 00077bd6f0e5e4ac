"""The benchmark metrics (nb360.metrics) on small cases worked out by hand, and on every task's real embedded
evaluation batches."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from nb360.data.loader import ShardDataset
from nb360.metrics import (
    LOWER_IS_BETTER,
    PRIMARY_METRIC,
    TASK_METRICS,
    cosmic_scores,
    deepsea_one_minus_auroc,
    ecg_one_minus_f1,
    fsd50k_one_minus_map,
    psicov_mae8,
    record_macro_f1,
    relative_l2,
    score,
    vote_records,
    zero_one_error_pct,
)
from nb360.tasks import get_task
from nb360.tasks.psicov import PAD

REPO = Path(__file__).resolve().parents[1]
PAPER_RESULTS = Path("/work/shared/reference/paper_results.csv")


# -----------------------------------------------------------------------------------------------------------
# 0-1 error


def test_zero_one_error_by_hand_with_first_index_ties():
    logits = np.array(
        [
            [0.1, 2.0, 0.3],  # argmax 1, y 1: right
            [1.0, 1.0, 0.0],  # tie 0/1 -> 0, y 1: wrong
            [0.0, 0.5, 0.5],  # tie 1/2 -> 1, y 2: wrong
            [3.0, -1.0, 2.0],  # argmax 0, y 0: right
        ]
    )
    assert zero_one_error_pct(logits, np.array([1, 1, 2, 0])) == pytest.approx(50.0)
    # Ties resolved to the first index: with y = (1, 0, 1, 0) all four are right.
    assert zero_one_error_pct(logits, np.array([1, 0, 1, 0])) == 0.0
    # A constant-logit predictor always predicts class 0: 3 of these 5 labels are not 0 -> 60 %.
    assert zero_one_error_pct(np.zeros((5, 4)), np.array([0, 3, 0, 2, 1])) == pytest.approx(60.0)
    assert isinstance(zero_one_error_pct(logits, np.array([1, 1, 2, 0])), float)


# -----------------------------------------------------------------------------------------------------------
# FSD50K


def _fsd_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six chunks of three clips (ids 7, 3, 9), three classes."""
    group = np.array([7, 7, 3, 3, 3, 9])
    logits = np.array(
        [
            # class 0, class 1, class 2
            [4.0, 0.0, 5.0],  # clip 7
            [0.0, 0.0, 5.0],  # clip 7
            [3.0, 1.0, -5.0],  # clip 3
            [3.0, 2.0, -5.0],  # clip 3
            [-3.0, 3.0, -5.0],  # clip 3
            [1.5, -1.0, 0.0],  # clip 9
        ]
    )
    y = np.array(
        [
            [1, 0, 0],  # clip 7: class 0
            [1, 0, 0],
            [0, 1, 0],  # clip 3: class 1 (its first chunk's target) ...
            [0, 1, 1],  # ... a later chunk's class 2 does not count
            [0, 1, 0],
            [1, 1, 0],  # clip 9: classes 0 and 1
        ],
        dtype=np.float32,
    )
    return logits, y, group


def test_fsd50k_map_by_hand():
    logits, y, group = _fsd_case()
    # Clip means: clip 7 (4+0)/2 = 2 | 0 ; clip 3 (3+3-3)/3 = 1 | (1+2+3)/3 = 2 ; clip 9 1.5 | -1.
    # Class 0: ranking clip 7 (2, pos), clip 9 (1.5, pos), clip 3 (1, neg) -> AP = 1.
    # Class 1: ranking clip 3 (2, pos), clip 7 (0, neg), clip 9 (-1, pos) -> AP = (1/1 + 2/3) / 2 = 5/6.
    # Class 2: no positive clip (only clip 3's second chunk) -> left out.
    # mAP = (1 + 5/6) / 2 = 11/12.
    assert fsd50k_one_minus_map(logits, y, group) == pytest.approx(1 - 11 / 12)


def test_fsd50k_chunk_averaging_changes_the_result():
    logits, y, group = _fsd_case()
    logits, y = logits[:, :1], y[:, :1]  # class 0 only
    # Clips: AP = 1 (above). Chunks scored on their own (each its own group): scores 4 P, 0 P, 3 N, 3 N, -3 N,
    # 1.5 P -> ranking 4 P, 3 N, 3 N, 1.5 P, 0 P, -3 N -> AP = (1/1 + 2/4 + 3/5) / 3 = 0.7.
    assert fsd50k_one_minus_map(logits, y, group) == pytest.approx(0.0)
    assert fsd50k_one_minus_map(logits, y, np.arange(6)) == pytest.approx(0.3)
    assert average_precision_score(y[:, 0], logits[:, 0]) == pytest.approx(0.7)


def test_fsd50k_ranks_saturated_logits_in_float64():
    # Logits 40 (neg), 39 (pos), 38 (pos): the official float32 sigmoid makes all three 1.0 (AP 2/3); ranked
    # on the logits AP = (1/2 + 2/3) / 2 = 7/12.
    logits = np.array([[40.0], [39.0], [38.0]])
    y = np.array([[0], [1], [1]])
    assert fsd50k_one_minus_map(logits, y, np.arange(3)) == pytest.approx(5 / 12)
    probs32 = (1 / (1 + np.exp(-logits[:, 0]))).astype(np.float32)
    assert average_precision_score(y[:, 0], probs32) == pytest.approx(2 / 3)


def test_fsd50k_without_any_positive_is_an_error():
    with pytest.raises(ValueError, match="no class has a positive clip"):
        fsd50k_one_minus_map(np.zeros((3, 2)), np.zeros((3, 2)), np.arange(3))


# -----------------------------------------------------------------------------------------------------------
# Darcy relative L2


def test_relative_l2_by_hand():
    y = np.array([[[3.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])  # norms 5 and 2
    pred = np.array([[[3.0, 1.0], [0.0, 4.0]], [[2.0, 2.0], [2.0, 2.0]]])  # errors of norm 1 and 2
    # Per sample 1/5 = 0.2 and 2/2 = 1.0; mean 0.6 (not the ratio of sums 3/7).
    assert relative_l2(pred, y) == pytest.approx(0.6)
    assert relative_l2(y, y) == 0.0
    with pytest.raises(ValueError, match="shape"):
        relative_l2(pred[:, :1], y)


# -----------------------------------------------------------------------------------------------------------
# PSICOV MAE8


def _psicov_case() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three proteins. Only pairs j - i >= 24 count: (0,24), (0,25), (1,25) for L = 26, (0,24) for L = 25."""
    # Protein A, L = 26: true distances 4 everywhere (short-range pairs must not count), Y[0,25] = 9 (> 8 Å,
    # out), Y[1,25] = 8 (exactly 8 Å, in), Y[0,24] = 5.
    ya = np.full((26, 26), 4.0)
    for i, j, d in ((0, 24, 5.0), (0, 25, 9.0), (1, 25, 8.0)):
        ya[i, j] = ya[j, i] = d
    pa = np.full((26, 26), 50.0)  # far off everywhere: only the kept pairs may enter
    pa[0, 24], pa[24, 0] = 9.0, 3.0  # asymmetric: once symmetrised 6 -> |6 - 5| = 1
    pa[1, 25] = pa[25, 1] = 0.0  # floored to 0.01 -> |0.01 - 8| = 7.99
    pa[0, 25] = pa[25, 0] = 100.0  # true 9 Å: left out
    # Protein B, L = 25: one pair, prediction 3.5 against 2 -> 1.5.
    yb = np.full((25, 25), 4.0)
    yb[0, 24] = yb[24, 0] = 2.0
    pb = np.full((25, 25), 50.0)
    pb[0, 24] = pb[24, 0] = 3.5
    # Protein C, L = 25: its only long-range pair is 12 Å away -> no pair, NaN, skipped.
    yc = np.full((25, 25), 4.0)
    yc[0, 24] = yc[24, 0] = 12.0
    return [pa, pb, np.zeros((25, 25))], [ya, yb, yc]


# MAE_A = (1 + 7.99) / 2 = 4.495, MAE_B = 1.5, C skipped: final (4.495 + 1.5) / 2.
PSICOV_EXPECTED = (4.495 + 1.5) / 2


def test_psicov_mae8_by_hand():
    preds, targets = _psicov_case()
    assert psicov_mae8(preds, targets) == pytest.approx(PSICOV_EXPECTED)
    # Symmetrised once: the official double symmetrisation scores about P_ij / 4 + 3 P_ji / 4 = 4.5 for the
    # (0, 24) pair (|4.5 - 5| = 0.5), and no symmetrisation |9 - 5| = 4; transposing changes nothing here.
    assert psicov_mae8([p.T for p in preds], targets) == pytest.approx(PSICOV_EXPECTED)
    # An unknown true distance (NaN) is left out: without A's (1, 25) pair MAE_A = 1.
    targets[0][1, 25] = targets[0][25, 1] = np.nan
    assert psicov_mae8(preds, targets) == pytest.approx((1.0 + 1.5) / 2)


def test_psicov_mae8_without_any_pair_is_an_error():
    with pytest.raises(ValueError, match="no protein"):
        psicov_mae8([np.zeros((10, 10))], [np.ones((10, 10))])  # L = 10 has no pair j - i >= 24


def _psicov_canvas(preds, targets, size=40):
    """The case laid out as the loader's evaluation batches: residue i at canvas index i + PAD // 2, y 100
    outside the protein, unknown distances 0 with mask false."""
    b, h = len(preds), PAD // 2
    pred = np.full((b, 1, size, size), -7.0, dtype=np.float32)  # junk outside the proteins
    y = np.full((b, 1, size, size), 100.0, dtype=np.float32)
    mask = np.zeros((b, 1, size, size), dtype=bool)
    for k, (p, t) in enumerate(zip(preds, targets, strict=True)):
        n = len(p)
        pred[k, 0, h : h + n, h : h + n] = p
        y[k, 0, h : h + n, h : h + n] = np.nan_to_num(t, nan=0.0)
        mask[k, 0, h : h + n, h : h + n] = np.isfinite(t)
    length = np.array([len(p) for p in preds], dtype=np.int64)
    return {"pred": pred, "y": y, "mask": mask, "length": length}


def test_psicov_score_cuts_each_protein_with_its_own_length():
    preds, targets = _psicov_case()
    outputs = _psicov_canvas(preds, targets)
    assert score("psicov", outputs) == {"mae8": pytest.approx(PSICOV_EXPECTED)}
    # Scoring with another protein's length (the official shuffled-loader bug) gives another number.
    swapped = dict(outputs, length=outputs["length"][[1, 0, 2]])
    assert score("psicov", swapped)["mae8"] != pytest.approx(PSICOV_EXPECTED)
    # A pair the mask marks unknown (0 in the y canvas) is left out: A's (1, 25) pair -> MAE_A = 1.
    targets[0][1, 25] = targets[0][25, 1] = np.nan
    outputs = _psicov_canvas(preds, targets)
    assert score("psicov", outputs)["mae8"] == pytest.approx((1.0 + 1.5) / 2)
    del outputs["mask"]  # without a mask, distances <= 0 are unknown (real ones are >= 1 Å)
    assert score("psicov", outputs)["mae8"] == pytest.approx((1.0 + 1.5) / 2)


def test_psicov_score_takes_per_protein_canvases_of_different_sizes():
    """Batches with different canvas sizes come as per-protein lists (nb360.train.loop.predict)."""
    preds, targets = _psicov_case()
    small = _psicov_canvas(preds[:2], targets[:2], size=40)
    big = _psicov_canvas(preds[2:], targets[2:], size=64)
    outputs = {k: [*small[k], *big[k]] for k in ("pred", "y", "mask")}
    outputs["length"] = np.concatenate([small["length"], big["length"]])
    assert score("psicov", outputs) == {"mae8": pytest.approx(PSICOV_EXPECTED)}
    outputs["y"][2] = outputs["y"][2][:, :40, :40]
    with pytest.raises(ValueError, match="protein 2: canvases"):
        score("psicov", outputs)


# -----------------------------------------------------------------------------------------------------------
# Cosmic


def test_cosmic_scores_by_hand_with_a_strict_threshold_on_raw_logits():
    logits = np.array(
        [
            [[0.5, 0.6, -1.0], [2.0, 0.4, 0.51]],
            [[-5.0, -5.0, -5.0], [-5.0, -5.0, 0.7]],
        ]
    )
    mask = np.array([[[1, 1, 0], [0, 1, 1]], [[0, 0, 0], [0, 0, 0]]], dtype=np.float32)
    # Image 1: 0.5 is not > 0.5 (FN), 0.6 TP, -1 TN, 2 on background FP, 0.4 FN, 0.51 TP.
    # Image 2: 0.7 on background FP, five TN.
    # TP 2, FN 2, FP 2, TN 6: FNR = 2/4 = 50 %, TPR 0.5, TNR 6/8 = 0.75, 1 - AUROC = 1 - 0.625 = 0.375.
    got = cosmic_scores(logits, mask)
    assert got == {"one_minus_auroc": pytest.approx(0.375), "fnr_pct": pytest.approx(50.0)}
    assert roc_auc_score(mask.ravel(), (logits > 0.5).ravel()) == pytest.approx(0.625)
    # Thresholding the sigmoid at 0.5 (logit > 0) would find all four CR pixels: FNR 0.
    assert cosmic_scores(1 / (1 + np.exp(-logits)), mask)["fnr_pct"] == 0.0


def test_cosmic_auroc_agrees_with_sklearn_on_random_frames():
    rng = np.random.default_rng(0)
    for _ in range(3):
        mask = (rng.random((4, 16, 16)) < 0.1).astype(np.float32)
        logits = rng.normal(0.0, 1.0, mask.shape) + 1.5 * mask
        got = cosmic_scores(logits, mask)
        binary = (logits > 0.5).ravel()
        assert got["one_minus_auroc"] == pytest.approx(1 - roc_auc_score(mask.ravel(), binary))
        tpr = binary[mask.ravel() == 1].mean()
        assert got["fnr_pct"] == pytest.approx(100 * (1 - tpr))


def test_cosmic_fnr_without_negative_pixels_auroc_reported_as_nan():
    # every pixel is a cosmic ray: FNR = FN / (FN + TP) needs positives only; AUROC needs both classes
    logits = np.array([[[0.9, 0.2], [0.6, 0.5]]])  # TP 2 (0.9, 0.6), FN 2 (0.2, 0.5 not > 0.5)
    with pytest.warns(RuntimeWarning, match="no negative pixel"):
        got = cosmic_scores(logits, np.ones_like(logits))
    assert got["fnr_pct"] == pytest.approx(50.0) and math.isnan(got["one_minus_auroc"])
    with pytest.warns(RuntimeWarning):
        assert score("cosmic", {"pred": logits, "y": np.ones_like(logits)})["fnr_pct"] == pytest.approx(50.0)


def test_cosmic_degenerate_or_soft_masks_are_errors():
    with pytest.raises(ValueError, match="no positive pixel"):
        cosmic_scores(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="binary"):
        cosmic_scores(np.zeros((1, 2, 2)), np.full((1, 2, 2), 0.3))


def test_cosmic_score_ignores_the_loss_mask():
    logits = np.array([[[[1.0, 0.0], [0.0, 1.0]]]])
    y = np.array([[[[1.0, 1.0], [0.0, 0.0]]]])  # TP 1, FN 1, FP 1, TN 1
    expected = {"one_minus_auroc": pytest.approx(0.5), "fnr_pct": pytest.approx(50.0)}
    assert score("cosmic", {"pred": logits, "y": y}) == expected
    assert score("cosmic", {"pred": logits, "y": y, "mask": np.zeros_like(y)}) == expected


# -----------------------------------------------------------------------------------------------------------
# ECG


def _one_hot(classes: list[int], n: int = 4) -> np.ndarray:
    return np.eye(n)[classes]


def test_ecg_f1_by_hand():
    # Windows (record: window classes -> vote / record label):
    # 10: 1 2 2 1 -> tie, class 1's window comes first -> 1 / 1
    # 20: 0 0 2   -> 0 / 0
    # 30: 2 3 3   -> 3 / 2
    # 40: 2       -> 2 / 2
    windows = [1, 2, 2, 1, 0, 0, 2, 2, 3, 3, 2]
    group = np.repeat([10, 20, 30, 40], [4, 3, 3, 1])
    y = np.repeat([1, 0, 2, 2], [4, 3, 3, 1])
    # Voted (1, 0, 3, 2) vs labels (1, 0, 2, 2): F1 class 0 = 1, class 1 = 1, class 2 = 2*1/(1+2) = 2/3,
    # class 3 = 0 (predicted once, never true); macro (1 + 1 + 2/3 + 0) / 4 = 2/3.
    assert ecg_one_minus_f1(_one_hot(windows), y, group) == pytest.approx(1 / 3)
    # Record 30 voted 2 instead (2 2 3): class 3 is absent from labels and votes and is left out of the mean,
    # so the remaining three classes are perfect: 1 - F1 = 0 (F1 = 0 for class 3 would give 0.25).
    windows[8] = 2
    assert ecg_one_minus_f1(_one_hot(windows), y, group) == 0.0


def test_ecg_vote_ties_follow_the_first_window():
    # Two records with 2:2 ties, their windows interleaved: "first" is the position in the given order.
    # Record 5 (positions 0, 2, 4, 6): 3 1 3 1 -> 3. Record 8 (positions 1, 3, 5, 7): 1 1 3 3 -> 1.
    pred = np.array([3, 1, 1, 1, 3, 3, 1, 3])
    group = np.array([5, 8, 5, 8, 5, 8, 5, 8])
    records, voted = vote_records(pred, group)
    np.testing.assert_array_equal(records, [5, 8])
    np.testing.assert_array_equal(voted, [3, 1])
    # The same windows in reverse order: 1 3 1 3 -> 1 and 3 3 1 1 -> 3.
    np.testing.assert_array_equal(vote_records(pred[::-1], group[::-1])[1], [1, 3])
    # A three-way tie 2:2:2 goes to the class seen first (2); a clear majority wins whatever the order.
    assert vote_records(np.array([2, 1, 3, 1, 3, 2]), np.zeros(6))[1].tolist() == [2]
    assert vote_records(np.array([0, 1, 1]), np.zeros(3))[1].tolist() == [1]
    # Record labels are voted the same way; the metric on one-hot logits: record 5 voted 3 (label 3), record 8
    # voted 1 (label 3) -> class 3 F1 = 2/3, class 1 F1 = 0 -> 1 - F1 = 1 - 1/3.
    assert ecg_one_minus_f1(_one_hot(pred.tolist()), np.full(8, 3), group) == pytest.approx(2 / 3)
    # A tie inside a window's logits goes to the first class before the vote: windows argmax 0, 2, 2 -> 2.
    logits = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 0.0]])
    assert ecg_one_minus_f1(logits, np.full(3, 2), np.zeros(3)) == 0.0


def test_record_macro_f1_matches_counter_and_sklearn():
    rng = np.random.default_rng(0)
    rec_y = rng.integers(0, 3, 50)  # class 3 absent from the labels
    group = np.repeat(np.arange(50), rng.integers(1, 6, 50))
    target = rec_y[group]
    for _ in range(5):
        pred = np.where(rng.random(len(group)) < 0.6, target, rng.integers(0, 4, len(group)))
        # Counter.most_common keeps first-seen order among ties, i.e. the original's rule.
        voted = [Counter(pred[group == r].tolist()).most_common(1)[0][0] for r in range(50)]
        assert record_macro_f1(pred, target, group) == pytest.approx(f1_score(rec_y, voted, average="macro"))
        logits = _one_hot(pred.tolist()) + rng.random((len(pred), 4)) * 0.1
        assert ecg_one_minus_f1(logits, target, group) == pytest.approx(
            1 - f1_score(rec_y, voted, average="macro")
        )


# -----------------------------------------------------------------------------------------------------------
# DeepSEA


def test_deepsea_auroc_by_hand_skips_single_class_labels_with_a_warning():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 1]])
    logits = np.array([[0.9, 1.0, 0.0], [0.8, 2.0, 0.0], [0.3, 3.0, 0.0], [0.1, 4.0, 0.0]])
    # Label 0: positives {0.9, 0.3}, negatives {0.8, 0.1}: 3 of 4 pairs ordered -> 0.75.
    # Label 1: positives {3, 4} above negatives {1, 2} -> 1. Label 2: all positive -> skipped.
    # 1 - (0.75 + 1) / 2 = 0.125.
    with pytest.warns(UserWarning, match=r"labels \[2\] have a single class"):
        assert deepsea_one_minus_auroc(logits, y) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="no label has both classes"), pytest.warns(UserWarning):
        deepsea_one_minus_auroc(logits[:, 2:], y[:, 2:])


def test_deepsea_ranks_saturated_logits_in_float64():
    # float32 sigmoid of 30 and 31 are both 1.0 (AUROC 0.5); the logits rank them: AUROC 1.
    logits = np.array([[30.0], [31.0]], dtype=np.float32)
    assert deepsea_one_minus_auroc(logits, np.array([[0], [1]])) == 0.0


# -----------------------------------------------------------------------------------------------------------
# Dispatcher on every task's real embedded evaluation batches


def test_metric_names_match_the_paper_table_and_the_task_specs():
    assert LOWER_IS_BETTER is True
    with PAPER_RESULTS.open() as f:
        paper = {(r["task"], r["metric"]) for r in csv.DictReader(f)}
    assert {(t, m) for t, names in TASK_METRICS.items() for m in names} == paper
    for task, metric in PRIMARY_METRIC.items():
        assert metric == get_task(task).paper_metric
    assert PRIMARY_METRIC["cosmic"] == "one_minus_auroc"
    with pytest.raises(KeyError, match="unknown task"):
        score("mnist", {"pred": np.zeros(1), "y": np.zeros(1)})


def _manifest(task: str, request: pytest.FixtureRequest):
    """The built embedded shards when they exist (fast), else the session's embedded build."""
    path = REPO / "results" / "shards" / task / "manifest.json"
    return path if path.exists() else request.getfixturevalue("embedded").manifest(task)


def _eval_outputs(task: str, request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    """Every evaluation key except x, the test split concatenated in loader order (batches of 4)."""
    ds = ShardDataset(_manifest(task, request), ["test"], train=False)
    parts = [ds.batch(np.arange(s, min(s + 4, len(ds)))) for s in range(0, len(ds), 4)]
    return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0] if k != "x"}


def _random_pred(task: str, out: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    y = out["y"]
    if task in ("cifar100", "spherical", "ninapro", "satellite", "ecg"):
        return rng.normal(size=(len(y), get_task(task).num_outputs))
    if task == "psicov":
        return rng.uniform(0.0, 20.0, y.shape).astype(np.float32)
    return rng.normal(size=y.shape).astype(np.float32)


def _perfect_pred(task: str, out: dict[str, np.ndarray]) -> np.ndarray:
    y = out["y"]
    if y.ndim == 1:  # class labels -> one-hot logits
        return np.eye(get_task(task).num_outputs)[y]
    return y  # targets as predictions: multi-hot logits, decoded fields, distance canvases, CR masks


@pytest.mark.parametrize("task", list(TASK_METRICS))
def test_score_on_real_embedded_evaluation_batches(task, request):
    out = _eval_outputs(task, request)
    rng = np.random.default_rng(0)
    random = score(task, {**out, "pred": _random_pred(task, out, rng)})
    perfect = score(task, {**out, "pred": _perfect_pred(task, out)})
    assert set(random) == set(perfect) == set(TASK_METRICS[task])
    assert all(isinstance(v, float) and np.isfinite(v) for v in random.values()), random
    # Every metric is lower-is-better: the targets themselves score 0, a random prediction clearly more.
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in perfect.values()), perfect
    assert all(v > 0.05 for v in random.values()), random
