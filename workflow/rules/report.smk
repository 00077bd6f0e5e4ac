# Results: the tidy score table, the paper-style table and the figures, all marked for the HTML report.


rule scores:
    input:
        run_outputs("scores.json"),
    output:
        report(
            "results/tables/scores.csv",
            caption="../report/scores.rst",
            category="Tables",
        ),
    log:
        "logs/report/scores.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    script:
        "../../scripts/scores.py"


rule tables:
    input:
        "results/tables/scores.csv",
    output:
        csv=report(
            "results/tables/paper_table.csv",
            caption="../report/paper_table.rst",
            category="Tables",
        ),
        md=report(
            "results/tables/paper_table.md",
            caption="../report/paper_table.rst",
            category="Tables",
        ),
        tex="results/tables/paper_table.tex",
        vs_trivial_csv="results/tables/vs_trivial.csv",
        vs_trivial_md=report(
            "results/tables/vs_trivial.md",
            caption="../report/vs_trivial.rst",
            category="Tables",
        ),
    log:
        "logs/report/tables.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    script:
        "../../scripts/tables.py"


rule figures:
    input:
        scores="results/tables/scores.csv",
        histories=run_outputs("history.json"),
    output:
        profiles=report(
            "results/figures/performance_profiles.png",
            caption="../report/performance_profiles.rst",
            category="Figures",
        ),
        curves=report(
            "results/figures/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Figures",
        ),
        params=report(
            "results/figures/parameter_counts.png",
            caption="../report/parameter_counts.rst",
            category="Figures",
        ),
        params_table=report(
            "results/tables/parameter_counts.md",
            caption="../report/parameter_counts_table.rst",
            category="Tables",
        ),
        params_csv="results/tables/parameter_counts.csv",
        profiles_all=report(
            "results/figures/profiles_all.png",
            caption="../report/profiles_all.rst",
            category="Comparison figures",
        ),
        profiles_2d=report(
            "results/figures/profiles_2d.png",
            caption="../report/profiles_2d.rst",
            category="Comparison figures",
        ),
        profiles_constrained=report(
            "results/figures/profiles_constrained.png",
            caption="../report/profiles_constrained.rst",
            category="Comparison figures",
        ),
        profiles_nas_vs_nonnas=report(
            "results/figures/profiles_nas_vs_nonnas.png",
            caption="../report/profiles_nas_vs_nonnas.rst",
            category="Comparison figures",
        ),
        size=report(
            "results/figures/size_vs_performance.png",
            caption="../report/size_vs_performance.rst",
            category="Comparison figures",
        ),
        pdfs=multiext(
            "results/figures/",
            "performance_profiles.pdf",
            "learning_curves.pdf",
            "parameter_counts.pdf",
            "profiles_all.pdf",
            "profiles_2d.pdf",
            "profiles_constrained.pdf",
            "profiles_nas_vs_nonnas.pdf",
            "size_vs_performance.pdf",
        ),
    log:
        "logs/report/figures.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    script:
        "../../scripts/figures.py"


# Every worker of every parallel search (paths without the extension of the search_worker rule's files).
SEARCH_WORKERS = [
    f"{w[: -len('.json')]}{i}"
    for w in search_outputs("worker.json", PARALLEL_SEARCH)
    for i in range(SEARCH["workers"])
]


rule cost:
    input:
        scores=run_outputs("scores.json"),
        run_benchmarks=run_outputs("benchmark.tsv"),
        archs=search_outputs("arch.json"),
        search_benchmarks=search_outputs("benchmark.tsv"),
        workers=[f"{w}.json" for w in SEARCH_WORKERS],
        worker_benchmarks=[f"{w}.benchmark.tsv" for w in SEARCH_WORKERS],
        tunes=search_outputs("hparams.json", TUNE_METHODS),
        tune_benchmarks=search_outputs("hparams.benchmark.tsv", TUNE_METHODS),
    output:
        csv=report(
            "results/tables/cost.csv",
            caption="../report/cost.rst",
            category="Cost",
        ),
        md=report(
            "results/tables/cost.md",
            caption="../report/cost.rst",
            category="Cost",
        ),
        seeds="results/tables/cost_seeds.csv",
        figure=report(
            "results/figures/error_vs_cost.png",
            caption="../report/error_vs_cost.rst",
            category="Cost",
        ),
        pdf="results/figures/error_vs_cost.pdf",
    log:
        "logs/report/cost.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    script:
        "../../scripts/cost.py"


rule architectures:
    input:
        archs=search_outputs("arch.json"),
        scores=run_outputs("scores.json"),
    output:
        csv=report(
            "results/tables/architectures.csv",
            caption="../report/architectures.rst",
            category="Architectures",
        ),
        md=report(
            "results/tables/architectures.md",
            caption="../report/architectures.rst",
            category="Architectures",
        ),
        figure=report(
            "results/figures/cells.png",
            caption="../report/architectures.rst",
            category="Architectures",
        ),
        pdf="results/figures/cells.pdf",
    log:
        "logs/report/architectures.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    script:
        "../../scripts/architectures.py"
