"""NB201 report: algorithms table, search curves and figures, correlations, distribution (nb201.md 6.4)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nb360.nb201 import space
from nb360.nb201.report import (
    ALGORITHM_COLUMNS,
    CORRELATION_COLUMNS,
    SearchResultsError,
    algorithms_table,
    correlations,
    load_search,
    plot_distribution,
    plot_search,
    search_curves,
    step_curve,
    write_algorithms_table,
    write_correlations,
)
from nb360.nb201.table import Table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(seed: int, final: float, trajectory: list) -> dict:
    return {"seed": seed, "index": seed * 10, "final": final, "time": 40.0, "trajectory": trajectory}


def search(task: str = "ninapro", source: str = "embedded") -> dict:
    """2 algorithms x 3 runs with round numbers: random finals 60, 70, 80; evolution 75, 85, 95."""
    ninapro = task == "ninapro"
    scale = 1.0 if ninapro else 0.001  # Darcy: rel. L2 values
    return {
        "format": "nb360-nb201-search/1",
        "task": task,
        "source": source,
        "time_budget": 40.0,
        "final_higher_is_better": ninapro,
        "final_metric": "test accuracy (%)" if ninapro else "test rel. L2",
        "best_final": 97.0 * scale,
        "tables": {"low": "tables/low.pickle.pbz2", "final": "tables/final.pickle.pbz2"},
        "algorithms": {
            # written in the "wrong" order on purpose: the table orders by the protocol's order
            "rea": [
                run(1, 75.0 * scale, [[2.0, 50.0 * scale], [10.0, 75.0 * scale]]),
                run(2, 85.0 * scale, [[3.0, 60.0 * scale], [20.0, 85.0 * scale]]),
                run(3, 95.0 * scale, [[4.0, 95.0 * scale]]),
            ],
            "random": [
                run(1, 60.0 * scale, [[5.0, 60.0 * scale]]),
                run(2, 70.0 * scale, [[1.0, 40.0 * scale], [30.0, 70.0 * scale]]),
                run(3, 80.0 * scale, [[8.0, 80.0 * scale]]),
            ],
        },
    }


def record(index: int, task: str, epochs: int, final: float, seed: int = 777) -> dict:
    """A trained cell whose last-epoch reported value (NinaPro accuracy, Darcy rel. L2) is ``final``."""
    ep = range(epochs)
    curve = [final * (e + 1) / epochs for e in ep]
    return {
        "index": index,
        "arch": space.arch_strings()[index],
        "task": task,
        "epochs": epochs,
        "seed": seed,
        "train_loss": [1.0] * epochs,
        "train_acc": [50.0] * epochs,
        "test_loss": curve if task == "darcy" else [1.0] * epochs,
        "test_acc": curve if task == "ninapro" else [1.0 - v for v in curve],
        "train_time": [1.0] * epochs,
        "eval_time": [math.nan] * epochs,
        "params": 0.1,
        "flops": 10.0,
    }


def table(task: str, epochs: int, finals: dict[int, float]) -> Table:
    return Table.from_records([record(i, task, epochs, v) for i, v in finals.items()], task, epochs)


def test_algorithms_table_gives_mean_and_population_std_over_runs(tmp_path):
    path = tmp_path / "nb201_search_ninapro.json"
    path.write_text(json.dumps(search()))
    t = algorithms_table([path, search("darcy", "official")])
    assert list(t.columns) == list(ALGORITHM_COLUMNS)
    assert list(zip(t.task, t.algorithm, strict=True)) == [
        ("ninapro", "random"),
        ("ninapro", "rea"),
        ("darcy", "random"),
        ("darcy", "rea"),
    ]
    std = math.sqrt(200.0 / 3.0)  # population std of {60, 70, 80} and of {75, 85, 95}
    assert t["mean"].tolist() == pytest.approx([70.0, 85.0, 0.070, 0.085])
    assert t["std"].tolist() == pytest.approx([std, std, std / 1000, std / 1000])
    assert t.runs.tolist() == [3, 3, 3, 3]
    assert t.metric.tolist() == ["test accuracy (%)"] * 2 + ["test rel. L2"] * 2
    assert t.table_source.tolist() == ["embedded", "embedded", "official", "official"]


def test_write_algorithms_table_writes_csv_and_captioned_markdown(tmp_path):
    csv, md = tmp_path / "out" / "nb201_algorithms.csv", tmp_path / "out" / "nb201_algorithms.md"
    written = write_algorithms_table([search()], csv, md)
    back = pd.read_csv(csv)
    assert back["mean"].tolist() == pytest.approx(written["mean"].tolist())
    text = md.read_text()
    caption = text.splitlines()[0]
    assert "embedded synthetic tables" in caption and "std is over the runs" in caption
    assert "| NinaPro | Random search | test accuracy (%) | 70.00 ± 8.16 | 3 |" in text
    assert "| NinaPro | Regularized evolution | test accuracy (%) | 85.00 ± 8.16 | 3 |" in text
    assert sorted(p.name for p in csv.parent.iterdir()) == ["nb201_algorithms.csv", "nb201_algorithms.md"]


def test_a_single_run_has_no_std_and_bad_files_are_refused():
    s = search()
    s["algorithms"]["random"] = s["algorithms"]["random"][:1]
    t = algorithms_table([s])
    assert math.isnan(t.set_index("algorithm").loc["random", "std"])
    with pytest.raises(SearchResultsError, match="several search results for ninapro"):
        algorithms_table([search(), search()])
    bad = search()
    bad["final_higher_is_better"] = False
    with pytest.raises(SearchResultsError, match="higher is better"):
        load_search(bad)
    bad = search()
    bad["algorithms"]["random"][0]["trajectory"] = [[5.0, 1.0], [4.0, 2.0]]
    with pytest.raises(SearchResultsError, match="must not decrease"):
        load_search(bad)
    bad = search()
    bad["algorithms"]["random"][1]["seed"] = 1
    with pytest.raises(SearchResultsError, match="share a seed"):
        load_search(bad)
    with pytest.raises(SearchResultsError, match="format"):
        load_search({**search(), "format": "other/1"})


def test_step_curve_holds_each_value_until_the_next_improvement():
    trajectory = [[2.0, 50.0], [5.0, 60.0], [5.0, 65.0], [9.5, 70.0]]
    grid = [0.0, 1.0, 1.999, 2.0, 3.0, 4.999, 5.0, 9.0, 9.5, 40.0]
    got = step_curve(trajectory, grid)
    expected = [np.nan, np.nan, np.nan, 50.0, 50.0, 50.0, 65.0, 65.0, 70.0, 70.0]
    np.testing.assert_array_equal(got, np.array(expected))
    assert np.isnan(step_curve([], [0.0, 1.0])).all()


def test_search_curves_average_only_the_runs_that_have_found_something():
    curves = search_curves(search(), grid=[0.0, 2.0, 3.0, 4.0, 10.0, 20.0, 40.0])
    ev = curves["rea"]
    assert ev.n.tolist() == [0, 1, 2, 3, 3, 3, 3]
    assert math.isnan(ev["mean"][0])
    means = [50.0, 55.0, (50 + 60 + 95) / 3, (75 + 60 + 95) / 3, (75 + 85 + 95) / 3, (75 + 85 + 95) / 3]
    assert ev["mean"][1:].tolist() == pytest.approx(means)
    assert ev["std"][2] == pytest.approx(5.0)  # {50, 60}
    assert (ev["hi"] - ev["lo"])[1:].tolist() == pytest.approx((2 * ev["std"][1:]).tolist())
    assert list(curves) == ["random", "rea"]


def test_plot_search_writes_png_and_pdf(tmp_path):
    png, pdf = (
        tmp_path / "figures" / "nb201_search_ninapro.png",
        tmp_path / "figures" / "nb201_search_ninapro.pdf",
    )
    paths = plot_search(search(), png, pdf)
    assert paths == [png, pdf]
    assert png.stat().st_size > 1000 and png.read_bytes().startswith(PNG_MAGIC)
    assert pdf.read_bytes().startswith(b"%PDF")
    # Darcy (lower is better), PNG only
    png2 = tmp_path / "nb201_search_darcy.png"
    assert plot_search(search("darcy"), png2) == [png2]
    assert png2.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "nb201_search_darcy.png"]
    # no timestamps: the same input gives the same bytes (reruns leave the report unchanged)
    before = png.read_bytes(), pdf.read_bytes()
    plot_search(search(), png, pdf)
    assert (png.read_bytes(), pdf.read_bytes()) == before


def test_perfect_order_between_fidelities_gives_tau_one():
    low = table("ninapro", 2, {0: 10.0, 9: 20.0, 123: 30.0, 500: 40.0})
    high = table("ninapro", 5, {0: 50.0, 9: 60.0, 123: 70.0, 500: 80.0, 15624: 1.0})
    c = correlations([low, high])
    assert list(c.columns) == list(CORRELATION_COLUMNS)
    assert len(c) == 1
    r = c.iloc[0]
    assert (r.kind, r.task, r.n) == ("fidelity", "ninapro", 4)  # 15624 is not in the low table
    assert r.kendall_tau == pytest.approx(1.0) and r.spearman_rho == pytest.approx(1.0)


def test_correlations_equal_scipy_on_the_same_values(tmp_path):
    nin_low = {0: 30.0, 9: 25.0, 123: 40.0, 500: 35.0, 777: 20.0, 15624: 38.0}
    nin_high = {0: 70.0, 9: 72.0, 123: 90.0, 500: 80.0, 777: 60.0, 15624: 75.0, 42: 99.0}
    dar_low = {0: 0.30, 9: 0.20, 123: 0.25, 500: 0.40, 777: 0.10}
    dar_high = {0: 0.05, 9: 0.04, 123: 0.06, 500: 0.07, 777: 0.02, 42: 0.01}
    tables = [
        table("darcy", 3, dar_low),
        table("ninapro", 3, nin_low),
        table("darcy", 6, dar_high),
        table("ninapro", 6, nin_high),
    ]
    c = correlations(tables).set_index(["kind", "task", "x"])

    def check(row, a: dict, b: dict, sign: float = 1.0) -> None:
        common = sorted(set(a) & set(b))
        x, y = [a[i] for i in common], [sign * b[i] for i in common]
        assert row.n == len(common)
        tau, rho = stats.kendalltau(x, y), stats.spearmanr(x, y)
        assert row.kendall_tau == pytest.approx(tau.statistic) and row.kendall_p == pytest.approx(tau.pvalue)
        assert row.spearman_rho == pytest.approx(rho.statistic) and row.spearman_p == pytest.approx(
            rho.pvalue
        )

    check(c.loc[("fidelity", "ninapro", "ninapro 3 epochs")], nin_low, nin_high)
    check(c.loc[("fidelity", "darcy", "darcy 3 epochs")], dar_low, dar_high)
    # across tasks, Darcy's rel. L2 is negated: a cell good on both counts as agreement
    check(c.loc[("task", "ninapro vs darcy", "ninapro 3 epochs")], nin_low, dar_low, -1.0)
    check(c.loc[("task", "ninapro vs darcy", "ninapro 6 epochs")], nin_high, dar_high, -1.0)
    assert len(c) == 4

    csv, md = tmp_path / "nb201_correlations.csv", tmp_path / "nb201_correlations.md"
    write_correlations(tables, csv, md, source="ours")
    assert pd.read_csv(csv).n.tolist() == correlations(tables).n.tolist()
    text = md.read_text()
    assert "Kendall" in text.splitlines()[0] and "trained ourselves" in text.splitlines()[0]
    assert text.count("\n| ") == 5  # header + 4 rows


def test_too_few_common_cells_give_nan():
    c = correlations([table("ninapro", 2, {0: 1.0, 9: 2.0}), table("ninapro", 4, {9: 3.0, 123: 4.0})])
    assert c.n.tolist() == [1] and math.isnan(c.kendall_tau[0]) and math.isnan(c.spearman_rho[0])


def test_plot_distribution_writes_the_figure(tmp_path):
    tables = [
        table("ninapro", 2, {0: 10.0, 9: 20.0, 123: 30.0}),
        table("ninapro", 4, {0: 50.0, 9: 60.0, 123: 70.0, 500: 80.0}),
        table("darcy", 2, {0: 0.3, 9: 0.2}),
        table("darcy", 4, {0: 0.05, 9: 0.04, 123: 0.06}),
    ]
    png, pdf = tmp_path / "nb201_distribution.png", tmp_path / "nb201_distribution.pdf"
    assert plot_distribution(tables, png, pdf) == [png, pdf]
    assert png.stat().st_size > 1000 and png.read_bytes().startswith(PNG_MAGIC)
    assert pdf.read_bytes().startswith(b"%PDF")
    one = tmp_path / "one.png"
    plot_distribution([tables[0]], one)  # one task, one budget
    assert one.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="two ninapro tables"):
        plot_distribution([tables[0], tables[0]], one)
