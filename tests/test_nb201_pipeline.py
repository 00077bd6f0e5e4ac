"""NB201 workflow jobs: the cell plan and chunking, and chunks -> official tables -> search -> report."""

import json
import math

import pytest

from nb360.nb201 import plan, report
from nb360.nb201.pipeline import CHUNK_FORMAT, _write_json, read_chunk, report_job, search_job, table_job
from nb360.nb201.space import NUM_ARCHS
from nb360.nb201.table import read_official
from tests.test_nb201_table import record


def test_cell_sample_is_fixed_holds_the_check_cells_and_chunks_partition_it():
    cells = plan.cell_indices(64, seed=0)
    assert len(cells) == len(set(cells)) == 64 and cells == sorted(cells)
    assert {0, 9, 123} <= set(cells) and plan.cell_indices(64, seed=0) == cells
    assert plan.cell_indices(64, seed=1) != cells
    assert plan.cell_indices("all", 0) == list(range(NUM_ARCHS))
    parts = [plan.chunk(64, 0, 24, k) for k in range(plan.n_chunks(64, 24))]
    assert [len(p) for p in parts] == [24, 24, 16] and [c for p in parts for c in p] == cells
    # The paper's tables: a few hundred jobs (2 tasks x 2 budgets, 256 cells a job), not tens of thousands.
    assert 4 * plan.n_chunks("all", 256) == 248
    with pytest.raises(ValueError, match="between 3 and 15625"):
        plan.cell_indices(2, 0)
    with pytest.raises(IndexError):
        plan.chunk(64, 0, 24, 3)


def test_budgets_and_time_budgets():
    assert plan.hps("ninapro", "paper") == plan.OFFICIAL_HPS == ("12", "200")
    low, final = plan.budgets("darcy", "paper")
    assert (low.channels, low.cells_per_stage, final.epochs) == (16, 5, 200)
    smoke_low, smoke_final = plan.budgets("ninapro", "smoke")
    assert (
        smoke_low.epochs < smoke_final.epochs
        and plan.budget_of("ninapro", "smoke", smoke_low.hp) == smoke_low
    )
    with pytest.raises(ValueError, match="no NB201 table of 7 epochs"):
        plan.budget_of("ninapro", "smoke", "7")
    assert plan.time_budget("darcy", NUM_ARCHS, 3.0) == 230.0  # the official budget on a full table
    assert plan.time_budget("darcy", 64, 3.0) == plan.SAMPLE_EVALUATIONS * 3.0
    assert plan.official_path("raw", "ninapro", 200).as_posix() == "raw/nb201/NATS-tss-v1_0-daa55.pickle.pbz2"


def _chunks(tmp_path, task, epochs, cells, size):
    paths = []
    for k in range(0, len(cells), size):
        path = tmp_path / f"{task}-{epochs}-chunk{k}.json"
        recs = [record(i, task, epochs, seed=0) for i in cells[k : k + size]]
        _write_json(
            path, {"format": CHUNK_FORMAT, "task": task, "hp": str(epochs), "chunk": k, "records": recs}
        )
        paths.append(path)
    return paths


def test_chunks_merge_search_and_report(tmp_path):
    cells = plan.cell_indices(24, seed=0)
    searches = []
    for task in ("ninapro", "darcy"):
        tables = {}
        for fidelity, epochs in (("low", 3), ("final", 6)):
            tables[fidelity] = tmp_path / f"{task}-{epochs}.pickle.pbz2"
            table_job(task, str(epochs), _chunks(tmp_path, task, epochs, cells, 10), tables[fidelity])
            assert read_official(tables[fidelity]).indices == tuple(cells)
        out = tmp_path / f"{task}-search.json"
        result = search_job(task, tables["low"], tables["final"], out, runs=4, seed=0, source="embedded")
        assert json.loads(out.read_text()) == json.loads(json.dumps(result))
        report.validate_search(result)
        assert set(result["algorithms"]) == {"random", "rea", "reinforce", "hyperband", "bohb"}
        assert result["cells"] == 24 and result["epochs"] == {"low": 3, "final": 6}
        for runs in result["algorithms"].values():
            assert len(runs) == 4 and all(r["index"] in cells and math.isfinite(r["final"]) for r in runs)
        searches.append(out)
    outputs = {
        "algorithms_csv": tmp_path / "t/nb201_algorithms.csv",
        "algorithms_md": tmp_path / "t/nb201_algorithms.md",
        "correlations_csv": tmp_path / "t/nb201_correlations.csv",
        "correlations_md": tmp_path / "t/nb201_correlations.md",
        "distribution": tmp_path / "f/nb201_distribution.png",
        "searches": [tmp_path / "f/nb201_search_ninapro.png", tmp_path / "f/nb201_search_darcy.png"],
    }
    report_job(searches, outputs)
    algos = (tmp_path / "t/nb201_algorithms.csv").read_text().splitlines()
    assert len(algos) == 1 + 2 * 5  # header + 5 algorithms x 2 tasks
    for png in [outputs["distribution"], *outputs["searches"]]:
        assert png.stat().st_size > 1000 and png.with_suffix(".pdf").is_file()


def test_a_file_that_is_not_a_chunk_is_refused(tmp_path):
    path = tmp_path / "chunk0.json"
    path.write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="not an NB201 chunk file"):
        read_chunk(path)
