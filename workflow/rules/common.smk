# Config validation and the small helpers the rules share.
from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

DATA = config["data"]
TASKS = config["tasks"]


wildcard_constraints:
    task="|".join(TASKS),


def raw_stamp(wildcards):
    """The raw-data stamp of a task for the configured source (embedded or real)."""
    root = DATA["embedded_dir"] if DATA["source"] == "embedded" else DATA["raw_dir"]
    return f"{root}/{wildcards.task}/raw.json"
