# Data: raw files (generated or fetched and verified) -> HDF5 shards.


rule embedded_raw:
    output:
        f"{DATA['embedded_dir']}/{{task}}/raw.json",
    log:
        "logs/data/embedded_raw/{task}.log",
    # Every task's data first, so that no task's whole chain of jobs is left to the end of a run.
    priority: 10
    conda:
        "../../envs/data.yaml"
    threads: threads_of("data")
    resources:
        mem_mb=resource_of("data", "mem_mb"),
        runtime=resource_of("data", "runtime"),
    params:
        seed=DATA["embedded_seed"],
        pypi_cache=DATA["pypi_cache"],
    script:
        "../../scripts/embedded_raw.py"


rule fetch_raw:
    output:
        f"{DATA['raw_dir']}/{{task}}/raw.json",
    log:
        "logs/data/fetch_raw/{task}.log",
    # Every task's data first, so that no task's whole chain of jobs is left to the end of a run.
    priority: 10
    conda:
        "../../envs/data.yaml"
    threads: threads_of("data")
    resources:
        mem_mb=resource_of("data", "mem_mb"),
        runtime=resource_of("data", "runtime"),
    params:
        lockfile=DATA["lockfile"],
        mirror=DATA["mirror"],
        download=DATA["download"],
    script:
        "../../scripts/fetch_raw.py"


rule shards:
    input:
        raw_stamp,
    output:
        f"{DATA['shard_dir']}/{{task}}/manifest.json",
    log:
        "logs/data/shards/{task}.log",
    # Every task's data first, so that no task's whole chain of jobs is left to the end of a run.
    priority: 10
    conda:
        "../../envs/data.yaml"
    threads: threads_of("data")
    resources:
        mem_mb=resource_of("data", "mem_mb"),
        runtime=resource_of("data", "runtime"),
    params:
        provenance={"source": DATA["source"], "embedded_seed": DATA["embedded_seed"]},
        allow_partial=DATA["allow_partial"],
    script:
        "../../scripts/shards.py"


rule data:
    input:
        expand(f"{DATA['shard_dir']}/{{task}}/manifest.json", task=TASKS),
