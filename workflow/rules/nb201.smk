# The precomputed NB201 benchmark (README, "Precomputed NB201 benchmark"): train chunks of cells on NinaPro
# and Darcy at two epoch budgets, merge them into official-format tables, run the NAS algorithms on them,
# then tables and figures. `snakemake nb201_official` does the search and report on the official tables
# placed in <raw_dir>/nb201/.
wildcard_constraints:
    hp=r"\d+",
    chunk=r"\d+",


rule nb201_chunk:
    input:
        manifest=f"{DATA['shard_dir']}/{{task}}/manifest.json",
    output:
        f"{NB201_DIR}/{{task}}/{{hp}}E/chunk{{chunk}}.json",
    log:
        "logs/nb201/{task}/{hp}E/chunk{chunk}.log",
    benchmark:
        f"{NB201_DIR}/{{task}}/{{hp}}E/chunk{{chunk}}.benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: threads_of("nb201")
    resources:
        gpu=resource_of("nb201", "gpu"),
        mem_mb=resource_of("nb201", "mem_mb"),
        runtime=resource_of("nb201", "runtime"),
    params:
        budget=TRAIN["budget"],
        device=TRAIN["device"],
        cells=NB201["cells"],
        chunk_size=NB201["chunk_size"],
        seed=NB201["seed"],
    script:
        "../../scripts/nb201_chunk.py"


rule nb201_table:
    input:
        lambda w: expand(
            f"{NB201_DIR}/{w.task}/{w.hp}E/chunk{{chunk}}.json",
            chunk=range(NB201_CHUNKS),
        ),
    output:
        f"{NB201_DIR}/{{task}}/nb201-{{task}}-{{hp}}E.pickle.pbz2",
    log:
        "logs/nb201/{task}/table-{hp}E.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    script:
        "../../scripts/nb201_table.py"


rule nb201_search:
    input:
        unpack(nb201_tables),
    output:
        f"{NB201_DIR}/{{task}}/search.json",
    log:
        "logs/nb201/{task}/search.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    params:
        runs=NB201["runs"],
        seed=NB201["seed"],
        source="embedded" if DATA["source"] == "embedded" else "ours",
    script:
        "../../scripts/nb201_search.py"


rule nb201_report:
    input:
        searches=expand(f"{NB201_DIR}/{{task}}/search.json", task=NB201_TASKS),
    output:
        **nb201_report_outputs("results/tables", "results/figures", NB201_TASKS),
    log:
        "logs/nb201/report.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    script:
        "../../scripts/nb201_report.py"


# The official tables (placed by hand: Google Drive and S3 are out of scripts' reach), checked against the
# lock file, then searched and reported like ours.
rule nb201_official_search:
    input:
        unpack(nb201_official_tables),
    output:
        f"{NB201_OFFICIAL_DIR}/{{task}}/search.json",
    log:
        "logs/nb201_official/{task}/search.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    params:
        runs=NB201["runs"],
        seed=NB201["seed"],
        source="official",
        lockfile=DATA["lockfile"],
    script:
        "../../scripts/nb201_search.py"


rule nb201_official_report:
    input:
        searches=expand(
            f"{NB201_OFFICIAL_DIR}/{{task}}/search.json", task=NB201_OFFICIAL_TASKS
        ),
    output:
        **nb201_report_outputs(
            f"{NB201_OFFICIAL_DIR}/tables",
            f"{NB201_OFFICIAL_DIR}/figures",
            NB201_OFFICIAL_TASKS,
        ),
    log:
        "logs/nb201_official/report.log",
    conda:
        "../../envs/report.yaml"
    threads: threads_of("report")
    resources:
        mem_mb=resource_of("report", "mem_mb"),
        runtime=resource_of("report", "runtime"),
    script:
        "../../scripts/nb201_report.py"


rule nb201_official:
    input:
        rules.nb201_official_report.output,
