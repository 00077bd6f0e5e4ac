# Config validation and the small helpers the rules share.
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from nb360.methods import list_methods

validate(config, schema="../schemas/config.schema.yaml")

DATA = config["data"]
TASKS = config["tasks"]
METHODS = config["methods"]
SEEDS = config["seeds"]
TRAIN = config["train"]

_unknown = sorted(set(METHODS) - set(list_methods()))
if _unknown:
    raise WorkflowError(
        f"config.yaml: unknown method(s) {', '.join(_unknown)}; registered: {', '.join(list_methods())}"
    )


wildcard_constraints:
    task="|".join(TASKS),
    method="|".join(METHODS),
    seed=r"\d+",


def run_outputs(name):
    """One file per task x method x seed, e.g. run_outputs("scores.json")."""
    return expand(
        "results/runs/{task}/{method}/seed{seed}/{name}",
        task=TASKS,
        method=METHODS,
        seed=SEEDS,
        name=name,
    )


def raw_stamp(wildcards):
    """The raw-data stamp of a task for the configured source (embedded or real)."""
    root = DATA["embedded_dir"] if DATA["source"] == "embedded" else DATA["raw_dir"]
    return f"{root}/{wildcards.task}/raw.json"
