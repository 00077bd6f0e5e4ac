"""What the workflow itself costs: ``snakemake -n`` of the full paper grid against a bare DAG of its shape.

* **workflow**: this repository's Snakefile on the paper's full grid: all ten tasks, every registered method,
  seeds 0, 1 and 2, ``train.budget: paper``, ``data.source: real`` with every task's raw stamp in place (as
  after the downloads), so the DAG runs from the shards to the report;
* **bare**: a Snakefile generated here with the same rules, file patterns, wildcards and input structure
  (search workers, searched architectures, the search a method reads), whose rules import nothing and take
  constant threads and resources.

Both are dry runs (``snakemake -n``) in fresh scratch folders, each a new Python process, so each pays
Snakemake's start; the difference is our parse (config validation, the method registry, resource
functions) and our input functions. The script checks that both DAGs have the same jobs per rule, repeats
each side, interleaved, and prints the ratios of the minimum wall time and of the minimum CPU time (user +
system of the process, which other load on a shared machine disturbs less); the target is at most 1.3.

    python benchmarks/dag_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nb360.methods.registry import list_methods, method_info  # noqa: E402 (after the path fix)

TARGET = 1.3
SEEDS = [0, 1, 2]

BARE = """
TASKS = {tasks!r}
METHODS = {methods!r}
SEARCH = {search!r}
PARALLEL = {parallel!r}
READS = {reads!r}
SEEDS = {seeds!r}
WORKERS = {workers!r}
RUNS = "results/runs/{{task}}/{{method}}/seed{{seed}}"
SEARCHES = "results/search/{{task}}/{{method}}/seed{{seed}}"


wildcard_constraints:
    task="|".join(TASKS),
    method="|".join(METHODS),
    seed=r"\\d+",


def runs(name):
    return expand(RUNS + "/" + name, task=TASKS, method=METHODS, seed=SEEDS)


def searches(name):
    return expand(SEARCHES + "/" + name, task=TASKS, method=SEARCH, seed=SEEDS)


WORKER_FILES = expand(
    SEARCHES + "/worker{{worker}}", task=TASKS, method=PARALLEL, seed=SEEDS, worker=range(WORKERS)
)


def search_inputs(w):
    d = f"results/search/{{w.task}}/{{w.method}}/seed{{w.seed}}"
    inputs = {{"manifest": f"results/shards/{{w.task}}/manifest.json"}}
    if w.method in PARALLEL:
        inputs["workers"] = [f"{{d}}/worker{{i}}.json" for i in range(WORKERS)]
    for other in READS.get(w.method, ()):
        inputs[f"arch_{{other}}"] = f"results/search/{{w.task}}/{{other}}/seed{{w.seed}}/arch.json"
    return inputs


def retrain_inputs(w):
    inputs = {{"manifest": f"results/shards/{{w.task}}/manifest.json"}}
    if w.method in SEARCH:
        inputs["arch"] = f"results/search/{{w.task}}/{{w.method}}/seed{{w.seed}}/arch.json"
    return inputs


rule all:
    input:
        "results/tables/paper_table.csv",
        "results/figures/performance_profiles.png",
        "results/tables/cost.csv",
        "results/tables/architectures.csv",


rule fetch_raw:
    output:
        "raw/{{task}}/raw.json",
    log:
        "logs/data/fetch_raw/{{task}}.log",
    shell:
        "touch {{output}}"


rule shards:
    input:
        "raw/{{task}}/raw.json",
    output:
        "results/shards/{{task}}/manifest.json",
    log:
        "logs/data/shards/{{task}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "touch {{output}}"


rule search_worker:
    input:
        manifest="results/shards/{{task}}/manifest.json",
    output:
        SEARCHES + "/worker{{worker}}.json",
    log:
        "logs/search/{{task}}/{{method}}/seed{{seed}}/worker{{worker}}.log",
    benchmark:
        SEARCHES + "/worker{{worker}}.benchmark.tsv"
    wildcard_constraints:
        method="|".join(PARALLEL) or "(?!)",
        worker=r"\\d+",
    threads: 1
    resources:
        gpu=1,
        mem_mb=1000,
        runtime=10,
    params:
        budget="paper",
    shell:
        "touch {{output}}"


rule search:
    input:
        unpack(search_inputs),
    output:
        arch=SEARCHES + "/arch.json",
        history=SEARCHES + "/search.json",
    log:
        "logs/search/{{task}}/{{method}}/seed{{seed}}.log",
    benchmark:
        SEARCHES + "/benchmark.tsv"
    wildcard_constraints:
        method="|".join(SEARCH) or "(?!)",
    threads: 1
    resources:
        gpu=1,
        mem_mb=1000,
        runtime=10,
    params:
        budget="paper",
    shell:
        "touch {{output}}"


rule retrain:
    input:
        unpack(retrain_inputs),
    output:
        scores=RUNS + "/scores.json",
        history=RUNS + "/history.json",
    log:
        "logs/retrain/{{task}}/{{method}}/seed{{seed}}.log",
    benchmark:
        RUNS + "/benchmark.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=1000,
        runtime=10,
    params:
        budget="paper",
    shell:
        "touch {{output}}"


rule scores:
    input:
        runs("scores.json"),
    output:
        "results/tables/scores.csv",
    log:
        "logs/report/scores.log",
    shell:
        "touch {{output}}"


rule tables:
    input:
        "results/tables/scores.csv",
    output:
        csv="results/tables/paper_table.csv",
        md="results/tables/paper_table.md",
        tex="results/tables/paper_table.tex",
    log:
        "logs/report/tables.log",
    shell:
        "touch {{output}}"


rule figures:
    input:
        scores="results/tables/scores.csv",
        histories=runs("history.json"),
    output:
        "results/figures/performance_profiles.png",
        "results/figures/learning_curves.png",
        "results/figures/parameter_counts.png",
    log:
        "logs/report/figures.log",
    shell:
        "touch {{output}}"


rule cost:
    input:
        scores=runs("scores.json"),
        run_benchmarks=runs("benchmark.tsv"),
        archs=searches("arch.json"),
        search_benchmarks=searches("benchmark.tsv"),
        workers=[f"{{w}}.json" for w in WORKER_FILES],
        worker_benchmarks=[f"{{w}}.benchmark.tsv" for w in WORKER_FILES],
    output:
        csv="results/tables/cost.csv",
        md="results/tables/cost.md",
    log:
        "logs/report/cost.log",
    shell:
        "touch {{output}}"


rule architectures:
    input:
        archs=searches("arch.json"),
        scores=runs("scores.json"),
    output:
        csv="results/tables/architectures.csv",
        md="results/tables/architectures.md",
    log:
        "logs/report/architectures.log",
    shell:
        "touch {{output}}"
"""


def paper_grid(folder: Path) -> dict:
    """The paper's full grid as a config in ``folder``, with every task's raw stamp in place."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    cfg["tasks"] = schema["properties"]["tasks"]["items"]["enum"]  # all ten
    cfg["methods"] = list_methods()
    cfg["seeds"] = SEEDS
    cfg["train"]["budget"] = "paper"
    cfg["data"].update(source="real", raw_dir="raw")
    # The ten tasks' grid only: the NB201 benchmark's full dry run (its 248 chunk jobs) is checked by
    # tests/test_workflow.py::test_dry_run_of_the_full_nb201_generation_is_a_few_hundred_jobs.
    cfg["nb201"]["tasks"] = []
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    for task in cfg["tasks"]:
        (folder / "raw" / task).mkdir(parents=True)
        (folder / "raw" / task / "raw.json").write_text("{}\n")
    return cfg


def bare_snakefile(cfg: dict) -> str:
    search = [m for m in cfg["methods"] if method_info(m).searches]
    return BARE.format(
        tasks=cfg["tasks"],
        methods=cfg["methods"],
        search=search,
        parallel=[m for m in search if method_info(m).search_workers],
        reads={m: list(method_info(m).reads) for m in search if method_info(m).reads},
        seeds=cfg["seeds"],
        workers=cfg["search"]["workers"],
    )


def job_stats(output: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats" table of a dry run."""
    table = output.split("Job stats:", 1)[1]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M) if rule != "total"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dry_run(snakefile: Path, folder: Path) -> tuple[float, float, dict[str, int]]:
    """Wall and CPU seconds of one ``snakemake -n`` in a new process, and its jobs per rule."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile", str(snakefile)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0, cpu0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run([*cmd, "--directory", str(folder)], capture_output=True, text=True, env=env)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed for {snakefile}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds, cpu, job_stats(proc.stdout + proc.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="dry runs per side (the minimum counts)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nb360-dag-") as tmp:
        root = Path(tmp)
        cfg = paper_grid(root / "workflow")
        bare_dir = root / "bare"
        bare_dir.mkdir()
        (bare_dir / "Snakefile").write_text(bare_snakefile(cfg))
        for task in cfg["tasks"]:
            (bare_dir / "raw" / task).mkdir(parents=True)
            (bare_dir / "raw" / task / "raw.json").write_text("{}\n")
        times: dict[str, list[float]] = {"workflow": [], "bare": []}
        cpus: dict[str, list[float]] = {"workflow": [], "bare": []}
        stats: dict[str, dict[str, int]] = {}
        for _ in range(args.repeats):  # interleaved, so that a busy spell of the CPU hits both sides
            for side, snakefile, folder in (
                ("workflow", REPO / "Snakefile", root / "workflow"),
                ("bare", bare_dir / "Snakefile", bare_dir),
            ):
                seconds, cpu, stats[side] = dry_run(snakefile, folder)
                times[side].append(seconds)
                cpus[side].append(cpu)
    if stats["workflow"] != stats["bare"]:
        raise SystemExit(f"the DAGs differ: workflow {stats['workflow']}, bare {stats['bare']}")
    jobs = sum(stats["workflow"].values())
    print(
        f"full paper grid: {len(cfg['tasks'])} tasks x {len(cfg['methods'])} methods x {len(SEEDS)} seeds, "
        f"budget paper, real data: {jobs} jobs"
    )
    for kind, values in (("wall", times), ("CPU", cpus)):
        for side in ("workflow", "bare"):
            print(f"{side:8s} snakemake -n {kind:4s} " + "  ".join(f"{t:5.2f}" for t in values[side]) + " s")
    for kind, values in (("wall", times), ("CPU", cpus)):
        ratio = min(values["workflow"]) / min(values["bare"])
        print(f"workflow / bare, {kind} (minimum of {args.repeats}): {ratio:.2f} (target <= {TARGET})")


if __name__ == "__main__":
    main()
