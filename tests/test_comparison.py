"""The paper's comparison figures from a small hand-made score table: which methods and tasks each panel
holds, the best-of-family rows, the published side, and the size-vs-performance correlation."""

import json

import numpy as np
import pandas as pd
import pytest

from nb360.report import comparison
from nb360.report.tables import load_paper_results

# task -> method -> value of the task's primary metric (lower is better)
HAND = {
    "cifar100": {"trivial": 99.0, "wrn": 30.0, "xgboost": 80.0, "perceiver_io": 70.0, "densenas": 28.0,
                 "wrn_asha": 25.0, "gaea": 40.0, "random_search": 35.0},
    "ninapro": {"trivial": 95.0, "wrn": 8.0, "xgboost": 20.0, "perceiver_io": 22.0, "densenas": 10.0,
                "wrn_asha": 7.0, "gaea": 18.0},
    "darcy": {"trivial": 0.3, "wrn": 0.07, "xgboost": 0.09, "perceiver_io": 0.2, "densenas": 0.1,
              "wrn_asha": 0.06, "gaea": 0.03},
    "ecg": {"trivial": 0.9, "wrn": 0.5, "xgboost": 0.6, "perceiver_io": 0.7, "densenas": 0.4,
            "wrn_asha": 0.45, "gaea": 0.35},
}  # fmt: skip


def _scores(table=HAND):
    metric = {"cifar100": "error_pct", "ninapro": "error_pct", "darcy": "rel_l2", "ecg": "one_minus_f1"}
    rows = [
        {"task": t, "method": m, "seed": 0, "metric": metric[t], "value": v, "lower_is_better": True,
         "data_source": "embedded"}
        for t, methods in table.items()
        for m, v in methods.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_best_of_families_takes_each_familys_best_method_per_task():
    best = comparison.best_of_families(_scores()).set_index(["task", "method"])["value"]
    # NAS: densenas, gaea; non-NAS: wrn, xgboost, perceiver_io; WRN-ASHA (tuning) and trivial in neither.
    assert best[("cifar100", "best NAS")] == 28.0 and best[("cifar100", "best non-NAS")] == 30.0
    assert best[("darcy", "best NAS")] == 0.03 and best[("darcy", "best non-NAS")] == 0.07
    assert best[("ecg", "best NAS")] == 0.35 and best[("ninapro", "best non-NAS")] == 8.0
    assert len(best) == 8


def test_panels_hold_the_right_tasks_and_methods():
    ours = comparison.validate_scores(_scores())
    published = comparison.paper_scores(load_paper_results())
    everything = comparison._panels("all", ours, published)
    (t1, f1, m1), (t2, f2, m2) = everything
    assert t1.startswith("ours")
    assert "trivial" not in m1 and set(m1) == set(HAND["cifar100"]) - {"trivial"}
    assert m2 == [m for m in m1 if m != "random_search"]  # the paper has no random-search row
    assert set(f1["task"]) == set(HAND) and set(f2["task"]) <= set(HAND) and set(f2["method"]) <= set(m1)
    assert t2 == "published"
    two_d = comparison._panels("2d", ours, published)
    assert set(two_d[0][1]["task"]) == {"cifar100", "ninapro"}  # the 2-D point tasks of the table
    constrained = comparison._panels("constrained", ours, published)
    assert [p[2] for p in constrained] == [["wrn", "densenas"]] * 2 + [["wrn_asha", "gaea"]] * 2
    assert constrained[0][0].startswith("Constrained") and constrained[2][0].startswith("Less-constrained")
    nas = comparison._panels("nas_vs_nonnas", ours, published)
    assert nas[0][2] == ["best NAS", "best non-NAS"]
    # The published best non-NAS on CIFAR-100 among the methods we ran: WRN's 23.35 (not the expert's).
    paper_best = nas[1][1].set_index(["task", "method"])["value"]
    assert paper_best[("cifar100", "best non-NAS")] == pytest.approx(23.35)
    with pytest.raises(ValueError, match="unknown comparison figure"):
        comparison._panels("3d", ours, published)


def test_comparison_profiles_write_every_figure(tmp_path):
    paths = comparison.comparison_profiles(_scores(), load_paper_results(), tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"profiles_{w}.{e}" for w in comparison.PROFILE_FIGURES for e in ("png", "pdf"))
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
    again = comparison.comparison_profiles(_scores(), load_paper_results(), tmp_path / "again")
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # deterministic bytes


def test_correlation_and_fit_on_log_parameters():
    r, slope, intercept = comparison.correlation(np.array([10, 100, 1000]), np.array([3.0, 2.0, 1.0]))
    assert r == pytest.approx(-1.0) and slope == pytest.approx(-1.0) and intercept == pytest.approx(4.0)
    assert comparison.correlation(np.array([10, 100]), np.array([1.0, 2.0])) is None  # fewer than three
    assert comparison.correlation(np.array([10, 10, 10]), np.array([1.0, 2.0, 3.0])) is None  # no spread


def test_size_vs_performance_reads_every_trained_network(tmp_path):
    runs = []
    for i, (task, method, params, value) in enumerate(
        [("ecg", "wrn", 1000, 0.5), ("ecg", "gaea", 5000, 0.4), ("ecg", "perceiver_io", 20000, 0.6),
         ("ecg", "trivial", 0, 0.9), ("ecg", "xgboost", 0, 0.3), ("darcy", "wrn", 100, 0.1)]
    ):  # fmt: skip
        metric = "one_minus_f1" if task == "ecg" else "rel_l2"
        path = tmp_path / f"h{i}.json"
        body = {
            "task": task,
            "method": method,
            "seed": 0,
            "params": params,
            "epochs": [],
            "test": {metric: value},
        }
        path.write_text(json.dumps(body))
        runs.append(path)
    df = comparison.size_scores(runs, ("fsd50k", "cosmic", "ecg"))
    assert sorted(df["method"]) == ["gaea", "perceiver_io", "wrn"]  # networks only, these tasks only
    paths = comparison.size_vs_performance(runs, tmp_path / "size")
    assert [p.name for p in paths] == ["size.png", "size.pdf"] and all(p.stat().st_size > 1000 for p in paths)
