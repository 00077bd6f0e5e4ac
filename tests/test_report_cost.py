"""Cost table, error-versus-cost figure, architecture table and DARTS cell figure, on hand-built result
folders (fake scores.json, arch.json, worker records and Snakemake benchmark files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import jinja2
import pandas as pd
import pytest
from docutils.core import publish_parts
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionStyle, FancyArrowPatch

from nb360.attempts import AttemptRecord, attempts_path, read_attempts, record_attempt
from nb360.models import create_model
from nb360.report.architectures import (
    _curve_mid,
    architecture_table,
    draw_cell,
    draw_cells,
    write_architectures,
)
from nb360.report.cost import (
    compute_axis,
    cost_table,
    format_hours,
    job_costs,
    read_benchmark,
    seed_costs,
    write_cost,
)
from nb360.runs import write_arch, write_hparams, write_run
from nb360.search.darts_space import Genotype
from nb360.tasks import get_task
from nb360.train import TrainConfig, fit, seed_everything
from nb360.train.loop import FitHook

CAPTIONS = Path(__file__).resolve().parents[1] / "workflow" / "report"
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
META = {"budget": "smoke", "data_source": "embedded"}

GENOTYPE = Genotype(
    normal=[
        ("sep_conv_3", 0), ("sep_conv_3", 1), ("skip_connect", 0), ("sep_conv_5", 2),
        ("dil_conv_3", 1), ("max_pool_3", 3), ("avg_pool_3", 0), ("dil_conv_5", 4),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3", 0), ("max_pool_3", 1), ("skip_connect", 2), ("max_pool_3", 1),
        ("avg_pool_3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
    dim=2,
    dense=False,
)  # fmt: skip


def bench(path: Path, seconds: float, cpu: float | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds:.2f}\t0:00:00\t100\t200\t90\t95\t0.1\t0.2\t80.0\t{cpu}\n")


def run(
    root: Path,
    task: str,
    method: str,
    seed: int,
    *,
    device: str,
    seconds: float,
    cpu,
    error: float,
    params: int = 1000,
) -> Path:
    """A retrain job's scores.json and benchmark.tsv; returns the scores.json path."""
    d = root / "runs" / task / method / f"seed{seed}"
    d.mkdir(parents=True)
    metric = {"ecg": "one_minus_f1", "cifar100": "error_pct", "darcy": "rel_l2"}[task]
    body = {"task": task, "method": method, "seed": seed, **META, "phase": "retrain", "splits": ["test"]}
    body |= {"params": params, "device": device, "metrics": {metric: error}}
    (d / "scores.json").write_text(json.dumps(body))
    bench(d / "benchmark.tsv", seconds, cpu)
    return d / "scores.json"


def search(
    root: Path,
    task: str,
    method: str,
    seed: int,
    *,
    device: str,
    seconds: float,
    cpu,
    kind: str = "wrn_hparams",
    arch: dict | None = None,
    summary: str = "lr 0.1",
) -> Path:
    """A search job's arch.json and benchmark.tsv; returns the arch.json path."""
    d = root / "search" / task / method / f"seed{seed}"
    d.mkdir(parents=True)
    meta = {"task": task, "method": method, "seed": seed, **META}
    write_arch(
        kind, arch or {"lr": 0.1}, summary, d / "arch.json", meta, {"seconds": seconds, "device": device}
    )
    bench(d / "benchmark.tsv", seconds, cpu)
    return d / "arch.json"


def worker(arch_json: Path, i: int, *, seconds: float, cpu, device: str | None = None) -> Path:
    path = arch_json.with_name(f"worker{i}.json")
    path.write_text(json.dumps({"worker": i} | ({"device": device} if device else {})))
    bench(arch_json.with_name(f"worker{i}.benchmark.tsv"), seconds, cpu)
    return path


@pytest.fixture
def results(tmp_path):
    """ecg: wrn (2 seeds, CPU, no search), wrn_asha (search + 2 workers on CPU), gaea (search on CUDA)."""
    root = tmp_path / "results"
    runs = [
        run(root, "ecg", "wrn", 0, device="cpu", seconds=360, cpu=720, error=0.30),
        run(root, "ecg", "wrn", 1, device="cpu", seconds=1080, cpu="NA", error=0.20),
        run(root, "ecg", "wrn_asha", 0, device="cpu", seconds=720, cpu=700, error=0.25),
        run(root, "ecg", "gaea", 0, device="cuda:0", seconds=1800, cpu=1700, error=0.22),
    ]
    asha = search(root, "ecg", "wrn_asha", 0, device="cpu", seconds=3600, cpu=3500)
    gaea = search(
        root,
        "ecg",
        "gaea",
        0,
        device="cuda",
        seconds=5400,
        cpu=5000,
        kind="darts_genotype",
        arch=json.loads(GENOTYPE.to_json()),
        summary="normal: sep_conv_3<0 ... | reduce: ...",
    )
    workers = [worker(asha, 0, seconds=1800, cpu=1800), worker(asha, 1, seconds=900, cpu="NA")]
    return runs, [asha, gaea], workers


# ---------------------------------------------------------------------------------------- benchmarks


def test_read_benchmark_values_repeats_and_missing_cpu(tmp_path):
    path = tmp_path / "benchmark.tsv"
    bench(path, 12.5, 30.25)
    b = read_benchmark(path)
    assert (b.seconds, b.cpu_seconds) == (12.5, 30.25)
    # repeat(): rows are repetitions of one job, so the cost of one run is their mean
    path.write_text(
        HEADER + "10\t0:00:10\t1\t1\t1\t1\t0\t0\t1\t4\n" + "20\t0:00:20\t1\t1\t1\t1\t0\t0\t1\t8\n"
    )
    assert read_benchmark(path).seconds == 15.0 and read_benchmark(path).cpu_seconds == 6.0
    bench(path, 3.0, "NA")  # a job that ended before Snakemake's first sample
    assert read_benchmark(path).cpu_seconds is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty benchmark file"),
        ("seconds\tcpu\n1\t2\n", "no column 's'"),
        (HEADER, "no row"),
        (HEADER + "abc\t0:00:00\t1\t1\t1\t1\t0\t0\t1\t1\n", "non-negative seconds"),
        (HEADER + "-5\t0:00:00\t1\t1\t1\t1\t0\t0\t1\t1\n", "non-negative seconds"),
    ],
)
def test_malformed_benchmark_names_the_file(tmp_path, content, message):
    path = tmp_path / "gaea" / "benchmark.tsv"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        read_benchmark(path)
    assert str(path) in str(e.value)


def test_missing_benchmark_of_a_run_names_the_file(results):
    runs, searches, workers = results
    missing = runs[2].with_name("benchmark.tsv")
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="benchmark") as e:
        seed_costs(runs, searches, workers)
    assert str(missing) in str(e.value)
    worker_bench = workers[1].with_name("worker1.benchmark.tsv")
    worker_bench.write_text("garbage\n")
    with pytest.raises(ValueError) as e:
        job_costs([], searches, workers)
    assert str(worker_bench) in str(e.value)


# --------------------------------------------------------------------------------------------- costs


def test_job_costs_devices_gpu_and_cpu_hours(results):
    jobs = job_costs(*results).set_index(["method", "seed", "job"])
    assert len(jobs) == 4 + 2 + 2
    # CPU jobs hold no GPU; a CUDA job holds one for its whole wall time
    assert jobs.loc[("wrn", 0, "retrain"), ["wall_h", "gpu_h", "cpu_core_h"]].tolist() == [0.1, 0.0, 0.2]
    assert jobs.loc[("gaea", 0, "retrain"), "device"] == "cuda"
    assert jobs.loc[("gaea", 0, "retrain"), "gpu_h"] == jobs.loc[("gaea", 0, "retrain"), "wall_h"] == 0.5
    assert jobs.loc[("gaea", 0, "search"), "gpu_h"] == 1.5
    # no CPU time in the benchmark: wall hours × threads
    assert not jobs.loc[("wrn", 1, "retrain"), "cpu_time_measured"]
    assert jobs.loc[("wrn", 1, "retrain"), "cpu_core_h"] == pytest.approx(0.3)
    assert job_costs(*results, threads=4).set_index(["method", "seed", "job"]).loc[
        ("wrn", 1, "retrain"), "cpu_core_h"
    ] == pytest.approx(1.2)
    assert jobs.loc[("wrn_asha", 0, "worker1"), "device"] == "cpu"  # no device in the record: the search's


def test_seed_costs_sum_search_workers_and_retrain(results):
    seeds = seed_costs(*results).set_index(["method", "seed"])
    asha = seeds.loc[("wrn_asha", 0)]
    # search 3600 s + workers 1800 s + 900 s = 1.75 h; retrain 720 s = 0.2 h
    assert asha["search_h"] == pytest.approx(1.75)
    assert asha["retrain_h"] == pytest.approx(0.2)
    assert asha["total_h"] == pytest.approx(1.95)
    assert asha["gpu_h"] == 0.0
    assert asha["cpu_core_h"] == pytest.approx((3500 + 1800 + 900 + 700) / 3600)
    assert asha["search_jobs"] == 3
    assert (seeds.loc[("wrn", 0), "search_h"], seeds.loc[("wrn", 0), "search_jobs"]) == (0.0, 0)
    gaea = seeds.loc[("gaea", 0)]
    assert gaea["device"] == "cuda" and gaea["gpu_h"] == pytest.approx(gaea["total_h"]) == pytest.approx(2.0)
    assert (gaea["metric"], gaea["error"]) == ("one_minus_f1", 0.22)


def test_cpu_search_with_gpu_retrain_counts_only_gpu_hours(tmp_path):
    root = tmp_path / "results"
    runs = [run(root, "ecg", "gaea", 0, device="cuda", seconds=3600, cpu=3600, error=0.2)]
    searches = [search(root, "ecg", "gaea", 0, device="cpu", seconds=7200, cpu=7200)]
    s = seed_costs(runs, searches).iloc[0]
    assert (s["device"], s["total_h"], s["gpu_h"]) == ("cpu+cuda", 3.0, 1.0)


def test_worker_on_cuda_counts_gpu_hours_under_a_cpu_search(tmp_path):
    """A parallel search's coordinating job may run on the CPU while its workers train on the GPU."""
    root = tmp_path / "results"
    runs = [run(root, "ecg", "wrn_asha", 0, device="cuda", seconds=360, cpu=360, error=0.2)]
    searches = [search(root, "ecg", "wrn_asha", 0, device="cpu", seconds=36, cpu=36)]
    workers = [worker(searches[0], 0, seconds=3600, cpu=3600, device="cuda:0")]
    s = seed_costs(runs, searches, workers).iloc[0]
    assert s["gpu_h"] == pytest.approx(1.0 + 0.1)
    assert s["search_h"] == pytest.approx(1.01)


def test_a_tune_stage_counts_as_search_on_its_own_device(tmp_path):
    """DASH's hyper-parameter stage is its own job (hparams.json): charged to the search, with its device."""
    from nb360.methods import TuneResult

    root = tmp_path / "results"
    runs = [run(root, "ecg", "dash", 0, device="cpu", seconds=1800, cpu=1800, error=0.2)]
    searches = [search(root, "ecg", "dash", 0, device="cpu", seconds=3600, cpu=3600, kind="dash_convs")]
    tune = searches[0].with_name("hparams.json")
    meta = {"task": "ecg", "method": "dash", "seed": 0, **META}
    write_hparams(TuneResult({"lr": 0.1}, "lr 0.1", device="cuda:0"), tune, meta)
    bench(tune.with_name("hparams.benchmark.tsv"), 720, 700)
    jobs = job_costs(runs, searches, (), [tune]).set_index("job")
    assert jobs.loc["tune", ["stage", "device", "gpu_h"]].tolist() == ["search", "cuda", 0.2]
    s = seed_costs(runs, searches, (), [tune]).iloc[0]
    assert (s["search_h"], s["retrain_h"], s["search_jobs"]) == (pytest.approx(1.2), 0.5, 2)
    with pytest.raises(ValueError, match=r"a tune stage without its search's arch\.json"):
        job_costs(runs, [], (), [tune])


def test_cost_table_means_over_seeds_in_table_order(results):
    table = cost_table(seed_costs(*results))
    assert table["method"].tolist() == ["wrn", "wrn_asha", "gaea"]  # registry order, not file order
    wrn = table.set_index("method").loc["wrn"]
    assert wrn["retrain_h"] == pytest.approx((0.1 + 0.3) / 2)
    assert wrn["cpu_core_h"] == pytest.approx((0.2 + 0.3) / 2)
    assert wrn["n_seeds"] == 2 and wrn["device"] == "cpu"


def test_compute_axis_gpu_hours_once_any_job_used_cuda(results):
    seeds = seed_costs(*results)
    assert compute_axis(seeds)[0] == "gpu_h" and "GPU-hours" in compute_axis(seeds)[1]
    cpu_only = seeds[seeds["method"] != "gaea"]
    assert compute_axis(cpu_only)[0] == "cpu_core_h" and "CPU core-hours" in compute_axis(cpu_only)[1]


def test_search_errors_name_the_file(tmp_path, results):
    runs, searches, workers = results
    arch = json.loads(searches[0].read_text())
    arch["search"] = {}
    searches[0].write_text(json.dumps(arch))
    with pytest.raises(ValueError, match="no search device") as e:
        job_costs(runs, searches, workers)
    assert str(searches[0]) in str(e.value)
    with pytest.raises(ValueError, match=r"without its search's arch\.json"):
        job_costs(runs, searches[1:], workers)
    with pytest.raises(ValueError, match="search without a retrained run"):
        seed_costs(runs[:2], searches[1:])
    scores = json.loads(runs[0].read_text())
    scores["device"] = "mps"
    runs[0].write_text(json.dumps(scores))
    with pytest.raises(ValueError, match="neither CPU nor CUDA") as e:
        job_costs(runs[:1])
    assert str(runs[0]) in str(e.value)


def test_format_hours():
    assert [format_hours(h) for h in (0.0, 0.0004, 0.01234, 1.5, 123.45)] == [
        "0", "<0.001", "0.0123", "1.5", "123.5",
    ]  # fmt: skip


def _check_figure(paths: list[Path]) -> None:
    png, pdf = paths
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5_000
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 2_000


def test_write_cost_outputs(tmp_path, results):
    out = tmp_path / "out"
    paths = {"csv": out / "cost.csv", "md": out / "cost.md", "seeds_csv": out / "cost_seeds.csv"}
    table = write_cost(*results, **paths, figure=out / "error_vs_cost")
    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), table, check_dtype=False)
    assert len(pd.read_csv(paths["seeds_csv"])) == 4
    md = paths["md"].read_text()
    assert md.startswith("**Table.** Compute cost per task and method on embedded data")
    assert "mean over 1–2 seeds" in md
    assert "| ECG | WRN-ASHA | cpu | 1.75 | 0.2 | 1.95 | 0 | 1.92 | 1 | 4 | 4 |\n" in md
    _check_figure([out / "error_vs_cost.png", out / "error_vs_cost.pdf"])


def test_error_vs_cost_several_tasks_and_a_cpu_only_method(tmp_path):
    root = tmp_path / "results"
    runs = [
        run(root, task, method, seed, device=dev, seconds=60 * (seed + 1), cpu=50, error=0.1 * (seed + 1))
        for task in ("cifar100", "darcy", "ecg")
        for method, dev in (("trivial", "cpu"), ("wrn", "cuda"))
        for seed in (0, 1)
    ]
    out = tmp_path / "out"
    write_cost(runs, [], [], csv=out / "c.csv", md=out / "c.md", seeds_csv=out / "s.csv", figure=out / "f")
    _check_figure([out / "f.png", out / "f.pdf"])


# ------------------------------------------------------------------------------------- architectures


def test_architecture_table(results):
    runs, searches, _ = results
    table = architecture_table(searches, runs)
    assert table[["method", "kind"]].values.tolist() == [
        ["wrn_asha", "wrn_hparams"],
        ["gaea", "darts_genotype"],
    ]
    gaea = table.set_index("method").loc["gaea"]
    assert (gaea["params"], gaea["search_h"], gaea["search_device"]) == (1000, 1.5, "cuda")
    assert architecture_table(searches, runs[:1])["params"].isna().all()  # retrained runs not given


def test_write_architectures_escapes_pipes_and_draws(tmp_path, results):
    runs, searches, _ = results
    out = tmp_path / "out"
    write_architectures(searches, runs, csv=out / "a.csv", md=out / "a.md", figure=out / "cells")
    md = (out / "a.md").read_text()
    assert r"normal: sep_conv_3<0 ... \| reduce: ..." in md  # a "|" in the summary must not split the cell
    assert "| ECG | DARTS-GAEA | 0 | darts_genotype | 1,000 | 1.5 |" in md
    assert pd.read_csv(out / "a.csv")["summary"].tolist()[1] == "normal: sep_conv_3<0 ... | reduce: ..."
    _check_figure([out / "cells.png", out / "cells.pdf"])


def test_cells_figure_without_genotype(tmp_path):
    root = tmp_path / "results"
    searches = [search(root, "ecg", "wrn_asha", 0, device="cpu", seconds=10, cpu=10)]
    paths = draw_cells(searches, tmp_path / "cells")
    _check_figure(paths)
    write_architectures([], [], csv=tmp_path / "a.csv", md=tmp_path / "a.md", figure=tmp_path / "none")
    assert "No search method was run" in (tmp_path / "a.md").read_text()
    assert (tmp_path / "none.png").stat().st_size > 0


def test_cells_figure_dense_genotype_and_invalid_genotype(tmp_path):
    root = tmp_path / "results"
    dense = Genotype(normal=GENOTYPE.normal, normal_concat=[2, 3, 4, 5], dim=2, dense=True)
    ok = search(
        root,
        "darcy",
        "gaea",
        0,
        device="cpu",
        seconds=1,
        cpu=1,
        kind="darts_genotype",
        arch=json.loads(dense.to_json()),
    )
    _check_figure(draw_cells([ok], tmp_path / "dense"))
    bad = search(
        root,
        "darcy",
        "darts",
        0,
        device="cpu",
        seconds=1,
        cpu=1,
        kind="darts_genotype",
        arch={"normal": [["sep_conv_3", 0]], "normal_concat": [2]},
    )
    with pytest.raises(ValueError, match="not a valid DARTS genotype") as e:
        draw_cells([ok, bad], tmp_path / "bad")
    assert str(bad) in str(e.value)


def test_draw_cell_one_labelled_edge_per_pair_and_one_per_concat_node():
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_cell(ax, GENOTYPE.normal, GENOTYPE.normal_concat)
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(GENOTYPE.normal) + len(GENOTYPE.normal_concat)
    labels = sorted(t.get_text() for t in ax.texts if "_" in t.get_text() and "$" not in t.get_text())
    assert labels == sorted(op for op, _ in GENOTYPE.normal)


@pytest.mark.parametrize("rad", [0.18, -0.18, 0.4])
def test_edge_label_sits_on_matplotlib_arc3_curve(rad):
    """The label position equals the midpoint of the Bézier that matplotlib's arc3 draws."""
    a, b = (0.3, 1.2), (4.1, -0.7)
    path = ConnectionStyle.Arc3(rad=rad)(a, b, shrinkA=0, shrinkB=0)
    p0, c, p1 = path.vertices[:3]
    expected = 0.25 * p0 + 0.5 * c + 0.25 * p1
    assert _curve_mid(a, b, rad) == pytest.approx(tuple(expected))


# ------------------------------------------------------------------------------------------ captions


class _FakeSnakemake:
    def __init__(self, source: str):
        self.config = {"data": {"source": source}, "train": {"budget": "smoke"}}


@pytest.mark.parametrize("source", ["embedded", "real"])
@pytest.mark.parametrize("name", ["cost.rst", "error_vs_cost.rst", "architectures.rst"])
def test_captions_render(name, source):
    """Captions render as Snakemake's report does (Jinja, then docutils) without warnings."""
    template = (CAPTIONS / name).read_text()
    text = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template)
    html = publish_parts(
        text.render(snakemake=_FakeSnakemake(source)),
        writer="html",
        settings_overrides={"halt_level": 2, "report_level": 2},
    )
    assert source in html["html_body"]


# ------------------------------------------------------------------------------------------- attempts

KILLED_AFTER_TWO_EPOCHS = """
import os, signal, sys
from nb360.attempts import record_attempt
from nb360.models import create_model
from nb360.tasks import get_task
from nb360.train import TrainConfig, fit, seed_everything
from nb360.train.loop import FitHook

class Kill(FitHook):
    def epoch_end(self, epoch, record):
        if epoch == 2:  # during the third epoch's bookkeeping: two epochs are checkpointed
            os.kill(os.getpid(), signal.SIGKILL)

manifest, checkpoint, attempts = sys.argv[1:]
with record_attempt(attempts, device="cpu", heartbeat_s=3600):
    seed_everything(0)
    model = create_model("wrn", get_task("satellite"), width=0.25)
    cfg = TrainConfig(epochs=5, lr=0.1, batch_size=256, max_batches_per_epoch=2)
    fit(model, manifest, cfg, seed=0, device="cpu", checkpoint=checkpoint, hooks=[Kill()])
"""


class _FailAt(FitHook):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def epoch_end(self, epoch, record):
        if epoch == self.epoch:
            raise FloatingPointError("loss is nan")


def test_a_killed_and_a_failed_attempt_count_in_the_cost_table(embedded, tmp_path):
    """One retrain job in three attempts, as Snakemake (with retries) would run it: killed by SIGKILL
    after two epochs, resumed and failed after another, resumed and done. The benchmark file holds only
    the last attempt; the cost counts all three."""
    manifest = embedded.build("satellite")[1]
    d = tmp_path / "results" / "runs" / "satellite" / "wrn" / "seed0"
    d.mkdir(parents=True)
    ckpt, scores = d / "checkpoint.pt", d / "scores.json"
    env = {**os.environ, "PYTHONPATH": str(CAPTIONS.parents[1])}
    args = [str(manifest), str(ckpt), str(attempts_path(scores))]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_TWO_EPOCHS, *args], env=env)
    assert killed.returncode == -signal.SIGKILL
    cfg = TrainConfig(epochs=5, lr=0.1, batch_size=256, max_batches_per_epoch=2)

    def attempt(hooks):
        with record_attempt(attempts_path(scores), device="cpu", heartbeat_s=3600):
            seed_everything(0)
            model = create_model("wrn", get_task("satellite"), width=0.25)
            return fit(model, manifest, cfg, seed=0, device="cpu", checkpoint=ckpt, hooks=hooks)

    with pytest.raises(FloatingPointError):
        attempt([_FailAt(3)])
    result = attempt([])
    assert len(result.history) == 5
    meta = {"task": "satellite", "method": "wrn", "seed": 0, **META}
    write_run(result, scores, d / "history.json", meta)
    bench(d / "benchmark.tsv", 100.0, 90.0)  # Snakemake's file: the last attempt only

    first, second, third = read_attempts(attempts_path(scores))
    assert (first.status, first.progress, first.device) == ("running", "retrain epoch 2/5", "cpu")
    assert (second.status, second.progress) == ("failed", "retrain epoch 3/5")
    assert "FloatingPointError: loss is nan" in second.error and third.status == "done"
    job = job_costs([scores]).iloc[0]
    assert job["attempts"] == 3 and job["attempts_recorded"]
    assert job["wall_h"] == pytest.approx((100.0 + first.wall_s + second.wall_s) / 3600)
    assert job["cpu_core_h"] == pytest.approx((90.0 + first.cpu_s + second.cpu_s) / 3600)
    assert first.wall_s > 0 and second.wall_s > 0  # both earlier attempts trained, so both cost something
    out = tmp_path / "out"
    table = write_cost(
        [scores], [], [], csv=out / "c.csv", md=out / "c.md", seeds_csv=out / "s.csv", figure=out / "f"
    )
    assert table[["jobs", "attempts"]].values.tolist() == [[1, 3]]
    assert table["retrain_h"].iloc[0] == pytest.approx(job["wall_h"])
    assert "| Seeds | Jobs | Attempts |" in (out / "c.md").read_text()


def attempt_lines(path: Path, *attempts: tuple[str, float, str]) -> None:
    """An attempts file of (status, wall seconds, device) records."""
    lines = [
        json.dumps(asdict(AttemptRecord(i, status, "t0", "t1", wall, wall / 2, device)))
        for i, (status, wall, device) in enumerate(attempts, 1)
    ]
    path.write_text("".join(line + "\n" for line in lines))


def test_earlier_attempts_on_their_own_devices(results):
    runs, searches, workers = results
    # the gaea search: killed once on a GPU; an ASHA worker: killed on the CPU, then done
    attempt_lines(attempts_path(searches[1]), ("running", 1800.0, "cuda"), ("done", 5400.0, "cuda"))
    attempt_lines(attempts_path(workers[0]), ("failed", 360.0, "auto"), ("done", 1800.0, "cpu"))
    # the retraining of wrn seed 0: an earlier, successful run (before a --forcerun) is not charged
    attempt_lines(
        attempts_path(runs[0]), ("done", 99.0, "cpu"), ("running", 720.0, "cuda"), ("done", 360, "cpu")
    )
    jobs = job_costs(*results).set_index(["method", "seed", "job"])
    gaea = jobs.loc[("gaea", 0, "search")]
    assert (gaea["attempts"], gaea["wall_h"], gaea["gpu_h"]) == (2, 2.0, 2.0)
    assert gaea["cpu_core_h"] == pytest.approx((5000 + 900) / 3600)
    w0 = jobs.loc[("wrn_asha", 0, "worker0")]
    assert (w0["attempts"], w0["wall_h"], w0["gpu_h"], w0["device"]) == (2, 0.6, 0.0, "cpu")
    wrn = jobs.loc[("wrn", 0, "retrain")]
    assert (wrn["attempts"], wrn["wall_h"], wrn["gpu_h"], wrn["device"]) == (2, 0.3, 0.2, "cpu+cuda")
    assert not jobs.loc[("wrn", 1, "retrain"), "attempts_recorded"]  # no file: its benchmark alone
    assert jobs.loc[("wrn", 1, "retrain"), "attempts"] == 1
    seeds = seed_costs(*results).set_index(["method", "seed"])
    assert seeds.loc[("wrn_asha", 0), ["jobs", "attempts"]].tolist() == [4, 5]
    assert seeds.loc[("gaea", 0), "search_h"] == pytest.approx(2.0)
    table = cost_table(seed_costs(*results)).set_index("method")
    assert table.loc["wrn", ["jobs", "attempts"]].tolist() == [2, 3]
    assert table.loc["wrn", "device"] == "cpu+cuda"
    # an attempt on an unknown device cannot be counted
    attempt_lines(attempts_path(runs[3]), ("running", 10.0, "mps"), ("done", 1800.0, "cuda"))
    with pytest.raises(ValueError, match=r"attempts\.jsonl, attempt 1: device 'mps' is neither CPU nor CUDA"):
        job_costs(*results)
