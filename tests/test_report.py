"""Results tables, performance profiles, figures and report captions, on small hand-made inputs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import pytest
from docutils.core import publish_parts

from nb360.report import (
    learning_curves,
    load_paper_results,
    paper_table,
    parameter_counts,
    performance_profiles,
    profile_ratios,
    read_history,
    read_scores,
    summarise,
    write_tables,
)
from nb360.report.figures import RELATIVE_EPS, parameter_table, profile_curve, write_parameter_table
from nb360.report.tables import SCORE_COLUMNS, atomic_output, tasks_required, vs_trivial

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO / "workflow" / "report"


def _row(task, method, seed, metric, value, source="embedded"):
    return dict(
        task=task,
        method=method,
        seed=seed,
        metric=metric,
        value=value,
        lower_is_better=True,
        data_source=source,
    )


def hand_scores(source: str = "embedded") -> pd.DataFrame:
    """Rows deliberately out of order: darcy before cifar100, a user method before trivial."""
    rows = [
        _row("darcy", "mynas", 0, "rel_l2", 0.05, source),
        _row("darcy", "wrn", 0, "rel_l2", 0.0734, source),
        _row("cifar100", "mynas", 0, "error_pct", 30.0, source),
        _row("cifar100", "mynas", 1, "error_pct", 32.0, source),
        _row("cifar100", "wrn", 0, "error_pct", 20.0, source),
        _row("cifar100", "wrn", 1, "error_pct", 22.0, source),
        _row("cifar100", "wrn", 2, "error_pct", 24.0, source),
        _row("cifar100", "trivial", 0, "error_pct", 99.0, source),
        _row("cifar100", "trivial", 1, "error_pct", 99.0, source),
        _row("cifar100", "gaea", 0, "error_pct", 25.0, source),
        _row("cosmic", "wrn", 0, "fnr_pct", 40.0, source),
        _row("cosmic", "wrn", 0, "one_minus_auroc", 0.25, source),
        _row("cosmic", "wrn", 1, "one_minus_auroc", 0.35, source),
    ]
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def hand_paper() -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(task="cifar100", method="wrn", metric="error_pct", mean=23.35, std=0.05),
            dict(task="darcy", method="wrn", metric="rel_l2", mean=0.073, std=0.001),
            dict(task="cosmic", method="wrn", metric="one_minus_auroc", mean=0.245, std=np.nan),
            dict(task="cifar100", method="gaea", metric="error_pct", mean=24.02, std=1.92),
            dict(task="cifar100", method="xgboost", metric="error_pct", mean=84.83, std=4.15),
        ]
    )


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


# ------------------------------------------------------------------------------------------- reading


def test_read_scores_round_trip(tmp_path):
    path = tmp_path / "scores.csv"
    hand_scores().to_csv(path, index=False)
    scores = read_scores(path)
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert len(scores) == 13
    assert scores["seed"].dtype.kind == "i" and scores["value"].dtype.kind == "f"
    assert scores["lower_is_better"].all()


def test_read_scores_names_file_and_missing_column(tmp_path):
    path = tmp_path / "scores.csv"
    hand_scores().drop(columns=["seed"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"scores\.csv: missing column\(s\) 'seed'"):
        read_scores(path)


def test_read_scores_rejects_bad_content(tmp_path):
    path = tmp_path / "scores.csv"
    bad = hand_scores()
    bad.loc[0, "lower_is_better"] = False
    bad.to_csv(path, index=False)
    with pytest.raises(ValueError, match="rel_l2 are marked higher-is-better"):
        read_scores(path)
    pd.concat([hand_scores(), hand_scores().iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="more than one row for task darcy, method mynas, seed 0"):
        read_scores(path)
    bad = hand_scores().astype({"value": object})
    bad.loc[2, "value"] = "0.3x"
    bad.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"column 'value' must be numeric; row 2 has '0\.3x'"):
        read_scores(path)
    path.write_text("")
    with pytest.raises(ValueError, match="empty scores file"):
        read_scores(path)


def test_packaged_paper_results():
    paper = load_paper_results()
    wrn = paper[(paper.task == "cifar100") & (paper.method == "wrn") & (paper.metric == "error_pct")]
    assert wrn["mean"].item() == pytest.approx(23.35) and wrn["std"].item() == pytest.approx(0.05)
    assert set(paper.task) == {
        "cifar100",
        "spherical",
        "ninapro",
        "fsd50k",
        "darcy",
        "psicov",
        "cosmic",
        "ecg",
        "satellite",
        "deepsea",
    }


# --------------------------------------------------------------------------------------------- table


def test_summarise_uses_population_std():
    s = summarise(hand_scores()).set_index(["task", "method", "metric"])
    row = s.loc[("cifar100", "wrn", "error_pct")]
    assert row["mean"] == pytest.approx(22.0)
    assert row["std"] == pytest.approx(math.sqrt(8 / 3))  # deviations -2, 0, 2 over 3 seeds
    assert row["n_seeds"] == 3
    # Benchmark order of tasks, then trivial, wrn, known NAS methods, user methods.
    assert list(s.index.get_level_values("task").unique()) == ["cifar100", "darcy", "cosmic"]
    cifar_methods = list(s.loc["cifar100"].index.get_level_values("method"))
    assert cifar_methods == ["trivial", "wrn", "gaea", "mynas"]


def test_paper_table_cells_and_order():
    table = paper_table(hand_scores(), hand_paper())
    assert list(table.columns) == [
        ("cifar100", "error_pct"),
        ("darcy", "rel_l2"),
        ("cosmic", "one_minus_auroc"),
        ("cosmic", "fnr_pct"),
    ]
    assert list(table.index) == [
        ("trivial", "ours"),
        ("wrn", "ours"),
        ("wrn", "paper"),
        ("gaea", "ours"),
        ("gaea", "paper"),
        ("mynas", "ours"),
    ]
    # Means and population stds by hand; 2 decimals for errors, 3 for fractions.
    assert table.loc[("wrn", "ours"), ("cifar100", "error_pct")] == "22.00 ± 1.63"
    assert table.loc[("mynas", "ours"), ("cifar100", "error_pct")] == "31.00 ± 1.00"
    assert table.loc[("trivial", "ours"), ("cifar100", "error_pct")] == "99.00 ± 0.00"
    assert table.loc[("wrn", "ours"), ("cosmic", "one_minus_auroc")] == "0.300 ± 0.050"
    # A single seed has no std.
    assert table.loc[("wrn", "ours"), ("darcy", "rel_l2")] == "0.073"
    assert table.loc[("gaea", "ours"), ("cifar100", "error_pct")] == "25.00"
    assert table.loc[("wrn", "ours"), ("cosmic", "fnr_pct")] == "40.00"
    # Published numbers beside ours; no std where the paper gives none; a dash where nothing is known.
    assert table.loc[("wrn", "paper"), ("cifar100", "error_pct")] == "23.35 ± 0.05"
    assert table.loc[("wrn", "paper"), ("darcy", "rel_l2")] == "0.073 ± 0.001"
    assert table.loc[("wrn", "paper"), ("cosmic", "one_minus_auroc")] == "0.245"
    assert table.loc[("wrn", "paper"), ("cosmic", "fnr_pct")] == "–"
    assert table.loc[("gaea", "paper"), ("cifar100", "error_pct")] == "24.02 ± 1.92"
    assert table.loc[("trivial", "ours"), ("darcy", "rel_l2")] == "–"


def test_task_specific_methods_are_not_applicable_elsewhere(monkeypatch):
    """A method of the registry that runs on some tasks only says "n/a" on the others, in its own and in the
    published row, and the caption explains it; a missing result elsewhere stays a dash."""
    from nb360.methods import registry
    from nb360.report.tables import table_caption

    darcy_only = registry.MethodInfo("mynas", "nb360.methods.mynas", "MyNAS", searches=True, tasks=("darcy",))
    monkeypatch.setattr(registry, "METHODS", (*registry.METHODS, darcy_only))
    scores = hand_scores()
    scores = scores[~((scores["method"] == "mynas") & (scores["task"] != "darcy"))]
    paper = pd.concat([hand_paper(), pd.DataFrame([dict(task="darcy", method="mynas", metric="rel_l2",
                                                          mean=0.06, std=0.01)])])  # fmt: skip
    table = paper_table(scores, paper)
    assert table.loc[("mynas", "ours")].tolist() == ["n/a", "0.050", "n/a", "n/a"]
    assert table.loc[("mynas", "paper")].tolist() == ["n/a", "0.060 ± 0.010", "n/a", "n/a"]
    assert table.loc[("gaea", "ours"), ("darcy", "rel_l2")] == "–"
    assert "n/a: a task-specific method" in table_caption(scores)
    # the ten-task profiles leave it out (it has no result on most tasks), the table keeps it
    from nb360.report.comparison import comparison_methods

    assert "mynas" not in comparison_methods(scores) and "wrn" in comparison_methods(scores)
    assert "n/a" not in table_caption(hand_scores().query("method != 'mynas'"))


def test_paper_table_rejects_mixed_sources():
    mixed = pd.concat([hand_scores("embedded"), hand_scores("real").assign(seed=lambda d: d.seed + 10)])
    with pytest.raises(ValueError, match="mix data sources"):
        paper_table(mixed, hand_paper())


def _md_cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


@pytest.mark.parametrize(
    ("source", "caption"),
    [
        ("embedded", "embedded data (small generated datasets; not comparable to the paper)"),
        ("real", "real benchmark data"),
    ],
)
def test_write_tables(tmp_path, source, caption):
    paths = write_tables(hand_scores(source), hand_paper(), tmp_path / "tables")
    assert {p.name for p in paths.values()} == {
        "paper_table.csv", "paper_table.md", "paper_table.tex", "vs_trivial.csv", "vs_trivial.md",
    }  # fmt: skip
    assert no_temp_files(tmp_path / "tables")
    ncols = 4

    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns[:2]) == ["method", "source"]
    assert csv.columns[2] == "cifar100: error_pct (lower is better)"
    assert csv.iloc[1].tolist()[:3] == ["wrn", "ours", "22.00 ± 1.63"]

    md = paths["md"].read_text()
    assert caption in md
    table_lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert all(ln.endswith("|") for ln in table_lines)
    assert {len(_md_cells(ln)) for ln in table_lines} == {2 + ncols}
    assert all(re.fullmatch(r":?-{3,}:?", c) for c in _md_cells(table_lines[1]))
    header = _md_cells(table_lines[0])
    assert header[2] == "CIFAR-100 · error (%) ↓" and header[5] == "Cosmic · FNR (%) ↓"
    assert _md_cells(table_lines[3]) == ["WRN", "ours", "22.00 ± 1.63", "0.073", "0.300 ± 0.050", "40.00"]
    assert _md_cells(table_lines[4])[:3] == ["", "paper", "23.35 ± 0.05"]

    tex = paths["tex"].read_text()
    assert caption in tex
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(cmd) == 1
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert rf"\begin{{tabular}}{{ll{'r' * ncols}}}" in tex
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")
    body = tex[tex.index(r"\toprule") : tex.index(r"\bottomrule")]
    rows = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
    assert len(rows) == 2 + 6  # two header rows, six result rows
    assert all(len(re.findall(r"(?<!\\)&", ln)) == ncols + 1 for ln in rows)
    assert r"22.00 $\pm$ 1.63" in tex and r"error (\%) $\downarrow$" in tex


def test_latex_escapes_user_method_names(tmp_path):
    scores = hand_scores()
    scores.loc[scores.method == "mynas", "method"] = "my_nas&co"
    tex = write_tables(scores, hand_paper(), tmp_path)["tex"].read_text()
    assert r"my\_nas\&co & ours" in tex


# -------------------------------------------------------------------------------------------- profiles


def test_profile_ratios_hand_computed():
    scores = pd.DataFrame(
        [
            _row("cifar100", "wrn", 0, "error_pct", 10.0),
            _row("cifar100", "wrn", 1, "error_pct", 14.0),  # mean 12
            _row("cifar100", "gaea", 0, "error_pct", 6.0),
            _row("cifar100", "trivial", 0, "error_pct", 96.0),
            _row("darcy", "wrn", 0, "rel_l2", 0.1),
            _row("darcy", "gaea", 0, "rel_l2", 0.2),
            _row("psicov", "wrn", 0, "mae8", 3.0),
            _row("psicov", "gaea", 0, "mae8", 3.0),  # a tie
            _row("psicov", "wrn", 0, "one_minus_auroc", 99.0),  # not psicov's metric: ignored
        ]
    )
    ratios = profile_ratios(scores)
    assert list(ratios.index) == ["cifar100", "darcy", "psicov"]
    assert list(ratios.columns) == ["trivial", "wrn", "gaea"]
    expected = pd.DataFrame(
        {"trivial": [16.0, math.inf, math.inf], "wrn": [2.0, 1.0, 1.0], "gaea": [1.0, 2.0, 1.0]},
        index=ratios.index,
    )
    np.testing.assert_array_equal(ratios.to_numpy(), expected.to_numpy())  # exact when best > 0
    assert ratios.loc["psicov", "wrn"] == ratios.loc["psicov", "gaea"] == 1.0  # ties are exactly 1
    # The profile of gaea: best on 2 of 3 tasks, within 2 on all.
    taus, rho = profile_curve(ratios["gaea"])
    np.testing.assert_allclose(taus, [1.0, 1.0, 1.0, 2.0])
    np.testing.assert_allclose(rho, [2 / 3, 2 / 3, 2 / 3, 1.0])
    # trivial never reaches the tasks it did not run.
    assert profile_curve(ratios["trivial"])[1].max() == pytest.approx(1 / 3)
    # A subset of methods.
    assert list(profile_ratios(scores, methods=["gaea", "wrn"]).columns) == ["gaea", "wrn"]


def test_profile_ratios_zero_best_is_finite():
    scores = pd.DataFrame(
        [_row("cifar100", "gaea", 0, "error_pct", 0.0), _row("cifar100", "wrn", 0, "error_pct", 10.0)]
    )
    ratios = profile_ratios(scores)
    eps = RELATIVE_EPS * 10.0
    assert ratios.loc["cifar100", "gaea"] == 1.0
    assert ratios.loc["cifar100", "wrn"] == pytest.approx((10.0 + eps) / eps)
    assert np.isfinite(ratios.to_numpy()).all()
    all_zero = pd.DataFrame([_row("darcy", m, 0, "rel_l2", 0.0) for m in ("wrn", "gaea")])
    assert (profile_ratios(all_zero).to_numpy() == 1.0).all()


# --------------------------------------------------------------------------------------------- figures


def fake_histories(folder: Path) -> list[Path]:
    """History JSONs for three tasks: wrn (3 seeds, val every other epoch), gaea (params differ per seed,
    no validation), trivial (no epochs, no parameters)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    metric = {"cifar100": "error_pct", "darcy": "rel_l2", "ecg": "one_minus_f1"}
    for task, m in metric.items():
        for method, seeds in (("wrn", 3), ("gaea", 2), ("trivial", 1)):
            for seed in range(seeds):
                epochs = []
                if method != "trivial":
                    for e in range(1, 9):
                        val = {m: 1.0 / e + 0.01 * seed} if method == "wrn" and e % 2 == 0 else None
                        epochs.append(dict(epoch=e, train_loss=4.0 / e, val=val, lr=0.1, seconds=0.5))
                params = {"wrn": 2_772_020, "gaea": 3_000_000 + 50_000 * seed, "trivial": 0}[method]
                h = dict(task=task, method=method, seed=seed, params=params, epochs=epochs, test={m: 0.5})
                path = folder / f"{task}-{method}-{seed}.json"
                path.write_text(json.dumps(h))
                paths.append(path)
    return paths


def _check_outputs(paths: list[Path]) -> None:
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    assert pdf.startswith(b"%PDF") and len(pdf) > 2_000
    assert b"CreationDate" not in pdf
    assert no_temp_files(paths[0].parent)


def test_figures_written_and_deterministic(tmp_path):
    scores = hand_scores()
    histories = fake_histories(tmp_path / "histories")
    out = tmp_path / "figures"
    runs = {
        "performance_profiles": lambda stem: performance_profiles(scores, stem),
        "learning_curves": lambda stem: learning_curves(histories, stem),
        "parameter_counts": lambda stem: parameter_counts(histories, stem),
    }
    for name, draw in runs.items():
        first = draw(out / name)
        _check_outputs(first)
        before = [p.read_bytes() for p in first]
        again = draw(out / name)
        assert [p.read_bytes() for p in again] == before, f"{name} is not byte-for-byte reproducible"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{e}" for n in runs for e in ("png", "pdf"))


def test_parameter_table_has_the_median_per_method_and_task(tmp_path):
    histories = fake_histories(tmp_path / "histories")
    table = parameter_table(histories)
    assert list(table.index) == ["trivial", "wrn", "gaea"]  # the registry's order
    assert table.loc["wrn"].eq(2_772_020).all() and table.loc["trivial"].eq(0).all()
    assert table.loc["gaea"].eq(3_025_000).all()  # seeds 0 and 1: 3,000,000 and 3,050,000
    csv, md = write_parameter_table(histories, tmp_path / "parameter_counts")
    assert pd.read_csv(csv).set_index("method").loc["wrn"].eq(2_772_020).all()
    text = md.read_text()
    assert "| WRN | 2,772,020 |" in text and "| Trivial | 0 |" in text
    more = [*histories, tmp_path / "extra.json"]
    extra = dict(task="ecg", method="expert", seed=0, params=123, epochs=[], test={"one_minus_f1": 0.5})
    more[-1].write_text(json.dumps(extra))
    table = parameter_table(more)
    assert table.loc["expert", "ecg"] == 123 and table.loc["expert"].isna().sum() == len(table.columns) - 1
    write_parameter_table(more, tmp_path / "parameter_counts")
    assert "–" in md.read_text()  # the expert ran on one task only


def test_read_history_names_missing_key(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"task": "ecg", "method": "wrn", "seed": 0, "epochs": [], "test": {}}))
    with pytest.raises(ValueError, match=r"run\.json: history is missing key\(s\) params"):
        read_history(path)


def test_atomic_output_leaves_old_file_and_no_temp_on_error(tmp_path):
    target = tmp_path / "paper_table.md"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as f:
        f.write(b"partial")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["paper_table.md"]


# -------------------------------------------------------------------------------------------- captions


class _FakeSnakemake:
    def __init__(self, source: str):
        self.config = {"tasks": ["cifar100", "darcy"], "data": {"source": source}}


@pytest.mark.parametrize("source", ["embedded", "real"])
@pytest.mark.parametrize(
    "name",
    [
        "workflow.rst",
        "scores.rst",
        "paper_table.rst",
        "performance_profiles.rst",
        "learning_curves.rst",
        "parameter_counts.rst",
        "parameter_counts_table.rst",
    ],
)
def test_captions_render(name, source):
    """Captions render as Snakemake's report does (Jinja, then docutils) without warnings."""
    template = (CAPTIONS / name).read_text()
    text = (
        jinja2.Environment(undefined=jinja2.StrictUndefined)
        .from_string(template)
        .render(snakemake=_FakeSnakemake(source))
    )
    html = publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})
    assert source in html["html_body"]
    if name == "workflow.rst":
        assert "NAS-Bench-360" in html["title"]
        assert ("not comparable" in html["html_body"]) == (source == "embedded")


def test_vs_trivial_counts_tasks_beaten_by_ten_percent_on_every_metric():
    rows = []

    def add(task, method, metric, value, seed=0):
        rows.append((task, method, seed, metric, value, True, "embedded"))

    for task in ("cifar100", "ecg", "darcy"):
        add(
            task,
            "trivial",
            *({"cifar100": ("error_pct", 99.0), "ecg": ("one_minus_f1", 0.9)}.get(task, ("rel_l2", 0.25))),
        )
    add("cosmic", "trivial", "one_minus_auroc", 0.5)
    add("cosmic", "trivial", "fnr_pct", 100.0)
    # wrn: beats every task; cosmic by 10 % exactly on FNR (90 <= 0.9 * 100), AUROC well.
    add("cifar100", "wrn", "error_pct", 36.9)
    add("ecg", "wrn", "one_minus_f1", 0.11)
    add("darcy", "wrn", "rel_l2", 0.139)
    add("cosmic", "wrn", "one_minus_auroc", 0.265)
    add("cosmic", "wrn", "fnr_pct", 90.0)
    # gaea: cifar100 only 5 % better; cosmic good AUROC but FNR 100 % (constant outputs on one metric);
    # ecg mean over two seeds 0.8 (better by 11 %) though seed 1 alone is worse than trivial.
    add("cifar100", "gaea", "error_pct", 94.05)
    add("ecg", "gaea", "one_minus_f1", 0.6)
    add("ecg", "gaea", "one_minus_f1", 1.0, seed=1)
    add("darcy", "gaea", "rel_l2", 0.2)
    add("cosmic", "gaea", "one_minus_auroc", 0.3)
    add("cosmic", "gaea", "fnr_pct", 100.0)
    # a task without a trivial run is not counted
    add("satellite", "gaea", "error_pct", 40.0)
    table = vs_trivial(pd.DataFrame(rows, columns=list(SCORE_COLUMNS))).set_index("method")
    assert list(table.index) == ["wrn", "gaea"]
    assert table.loc["wrn", ["tasks", "beaten", "required"]].tolist() == [4, 4, 4]
    assert bool(table.loc["wrn", "passes"]) and table.loc["wrn", "not_beaten"] == ""
    assert table.loc["gaea", ["tasks", "beaten"]].tolist() == [4, 2]
    assert not table.loc["gaea", "passes"]
    assert table.loc["gaea", "not_beaten"] == "cifar100;cosmic"


def test_tasks_required_is_all_but_one_in_ten():
    assert [tasks_required(n) for n in (1, 4, 9, 10, 20)] == [1, 4, 9, 9, 18]


def test_method_order_lists_each_method_once_registered_before_published_only():
    from nb360.report.tables import method_order

    # expert is both a registered method and one of the paper's rows: one entry, in the registry's place
    assert method_order(["amber", "expert", "zzz", "wrn", "expert"]) == ["wrn", "expert", "amber", "zzz"]
