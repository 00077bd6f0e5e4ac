# Architecture search: one job per task x search method x seed, plus one job per worker of a parallel search.
# The searched architecture (arch.json) is the input of the method's retrain job, and first of its tune job
# where it has a hyper-parameter stage (hparams.json, also read by the retrain job). A parallel search's workers
# take jobs from one study; what it finds does not depend on how many run or how they interleave
# (nb360.search.asha), so they may run side by side, one after the other, or on different nodes.


rule search_worker:
    input:
        manifest=f"{DATA['shard_dir']}/{{task}}/manifest.json",
    output:
        "results/search/{task}/{method}/seed{seed}/worker{worker}.json",
    log:
        "logs/search/{task}/{method}/seed{seed}/worker{worker}.log",
    benchmark:
        "results/search/{task}/{method}/seed{seed}/worker{worker}.benchmark.tsv"
    wildcard_constraints:
        method=PARALLEL_SEARCH_PATTERN,
        worker=r"\d+",
    conda:
        "../../envs/train.yaml"
    threads: threads_of("search_worker")
    resources:
        gpu=resource_of("search_worker", "gpu"),
        mem_mb=resource_of("search_worker", "mem_mb"),
        runtime=resource_of("search_worker", "runtime"),
    params:
        budget=TRAIN["budget"],
        device=TRAIN["device"],
        workers=SEARCH["workers"],
    script:
        "../../scripts/search_worker.py"


rule search:
    input:
        unpack(search_inputs),
    output:
        arch=report(
            "results/search/{task}/{method}/seed{seed}/arch.json",
            caption="../report/arch.rst",
            category="Architectures",
            subcategory="{method}",
            labels={"task": "{task}", "method": "{method}", "seed": "{seed}"},
        ),
        history="results/search/{task}/{method}/seed{seed}/search.json",
    log:
        "logs/search/{task}/{method}/seed{seed}.log",
    benchmark:
        "results/search/{task}/{method}/seed{seed}/benchmark.tsv"
    wildcard_constraints:
        method=SEARCH_PATTERN,
    conda:
        "../../envs/train.yaml"
    threads: threads_of("search")
    resources:
        gpu=resource_of("search", "gpu"),
        mem_mb=resource_of("search", "mem_mb"),
        runtime=resource_of("search", "runtime"),
    params:
        budget=TRAIN["budget"],
        device=TRAIN["device"],
        workers=SEARCH["workers"],
        data_source=DATA["source"],
    script:
        "../../scripts/search.py"


rule tune:
    input:
        manifest=f"{DATA['shard_dir']}/{{task}}/manifest.json",
        arch="results/search/{task}/{method}/seed{seed}/arch.json",
    output:
        hparams=report(
            "results/search/{task}/{method}/seed{seed}/hparams.json",
            caption="../report/hparams.rst",
            category="Tuned hyper-parameters",
            subcategory="{method}",
            labels={"task": "{task}", "method": "{method}", "seed": "{seed}"},
        ),
    log:
        "logs/tune/{task}/{method}/seed{seed}.log",
    benchmark:
        "results/search/{task}/{method}/seed{seed}/hparams.benchmark.tsv"
    wildcard_constraints:
        method=TUNE_PATTERN,
    conda:
        "../../envs/train.yaml"
    threads: threads_of("tune")
    resources:
        gpu=resource_of("tune", "gpu"),
        mem_mb=resource_of("tune", "mem_mb"),
        runtime=resource_of("tune", "runtime"),
    params:
        budget=TRAIN["budget"],
        device=TRAIN["device"],
        data_source=DATA["source"],
    script:
        "../../scripts/tune.py"
