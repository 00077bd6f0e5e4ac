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
    log:
        "logs/report/tables.log",
    conda:
        "../../envs/report.yaml"
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
        pdfs=multiext(
            "results/figures/",
            "performance_profiles.pdf",
            "learning_curves.pdf",
            "parameter_counts.pdf",
        ),
    log:
        "logs/report/figures.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/figures.py"
