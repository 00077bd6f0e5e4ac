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
    threads: 1
    params:
        budget=TRAIN["budget"],
        device=TRAIN["device"],
        data_source=DATA["source"],
    script:
        "../../scripts/retrain.py"
