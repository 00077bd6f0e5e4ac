# Retraining and evaluation: one job per task x method x seed.


rule retrain:
    input:
        unpack(retrain_inputs),
    output:
        scores="results/runs/{task}/{method}/seed{seed}/scores.json",
        history="results/runs/{task}/{method}/seed{seed}/history.json",
    log:
        "logs/retrain/{task}/{method}/seed{seed}.log",
    benchmark:
        "results/runs/{task}/{method}/seed{seed}/benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: threads_of("retrain")
    resources:
        gpu=resource_of("retrain", "gpu"),
        mem_mb=resource_of("retrain", "mem_mb"),
        runtime=resource_of("retrain", "runtime"),
    params:
        budget=TRAIN["budget"],
        device=TRAIN["device"],
        data_source=DATA["source"],
    script:
        "../../scripts/retrain.py"
