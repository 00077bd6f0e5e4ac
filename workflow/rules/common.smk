# Config validation and the small helpers the rules share.
# Only light modules here: every Snakemake start (each cluster job's too) parses this, so torch, scipy and
# optuna are imported by the jobs that run a method, never by the parse (test_workflow checks it).
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from nb360.config_origin import config_error, config_layers
from nb360.methods.registry import list_methods, method_info
from nb360.nb201 import plan as nb201_plan
from nb360.resources import job_resources

validate(config, schema="../schemas/config.schema.yaml")

DATA = config["data"]
TASKS = config["tasks"]
METHODS = config["methods"]
SEEDS = config["seeds"]
TRAIN = config["train"]
SEARCH = config["search"]


def config_failure(key, problem, fix):
    """A WorkflowError naming the config file (or --config) that set ``key``, and how to fix it there."""
    layers = config_layers(
        workflow.configfiles,
        workflow.config_settings.configfiles,
        workflow.config_settings.config,
        workflow.config_settings.replace_workflow_config,
    )
    return WorkflowError(config_error(key, problem, fix, layers))


_unknown = sorted(set(METHODS) - set(list_methods()))
if _unknown:
    raise config_failure(
        "methods",
        f"unknown method(s) {', '.join(_unknown)}; registered: {', '.join(list_methods())}",
        "use registered names, or register a new method in nb360/methods/registry.py",
    )


# Search methods among the configured ones; "(?!)" never matches (no search jobs).
SEARCH_METHODS = [m for m in METHODS if method_info(m).searches]
PARALLEL_SEARCH = [m for m in SEARCH_METHODS if method_info(m).search_workers]
SEARCH_PATTERN = "|".join(SEARCH_METHODS) or "(?!)"
PARALLEL_SEARCH_PATTERN = "|".join(PARALLEL_SEARCH) or "(?!)"
# Search methods with a hyper-parameter stage (rule tune) between search and retraining.
TUNE_METHODS = [m for m in SEARCH_METHODS if method_info(m).tunes]
TUNE_PATTERN = "|".join(TUNE_METHODS) or "(?!)"

_missing = sorted(
    {r for m in SEARCH_METHODS for r in method_info(m).reads} - set(SEARCH_METHODS)
)
if _missing:
    _readers = [m for m in SEARCH_METHODS if set(method_info(m).reads) & set(_missing)]
    raise config_failure(
        "methods",
        f"method(s) {', '.join(_readers)} need the search of {', '.join(_missing)}",
        f"add {', '.join(_missing)} to methods",
    )


wildcard_constraints:
    task="|".join(TASKS),
    method="|".join(METHODS),
    seed=r"\d+",


def applicable(tasks, methods):
    """The configured (task, method) pairs a method runs on (MethodInfo.tasks: task-specific methods)."""
    return [(t, m) for t in tasks for m in methods if method_info(m).applies_to(t)]


def run_outputs(name):
    """One file per task x method x seed, e.g. run_outputs("scores.json")."""
    return [
        f"results/runs/{t}/{m}/seed{s}/{name}"
        for t, m in applicable(TASKS, METHODS)
        for s in SEEDS
    ]


def raw_stamp(wildcards):
    """The raw-data stamp of a task for the configured source (embedded or real)."""
    root = DATA["embedded_dir"] if DATA["source"] == "embedded" else DATA["raw_dir"]
    return f"{root}/{wildcards.task}/raw.json"


def search_dir(wildcards, method=None):
    return f"results/search/{wildcards.task}/{method or wildcards.method}/seed{wildcards.seed}"


def search_inputs(wildcards):
    """A search's inputs: the shards, its worker records (parallel search), the searches it reads."""
    method = require_applicable(wildcards)
    inputs = {"manifest": f"{DATA['shard_dir']}/{wildcards.task}/manifest.json"}
    if method.search_workers:
        inputs["workers"] = [
            f"{search_dir(wildcards)}/worker{i}.json" for i in range(SEARCH["workers"])
        ]
    for other in method.reads:
        inputs[f"arch_{other}"] = f"{search_dir(wildcards, other)}/arch.json"
    return inputs


def require_applicable(wildcards):
    """Stops a job of a task-specific method on another task (asked for by its path) with the reason."""
    info = method_info(wildcards.method)
    if not info.applies_to(wildcards.task):
        raise WorkflowError(
            f"{wildcards.method} does not apply to {wildcards.task}: it runs on "
            f"{', '.join(info.tasks)} only (nb360/methods/registry.py); the tables say 'not applicable'"
        )
    return info


def retrain_inputs(wildcards):
    """A retrain job's inputs: the shards, for a search method its searched architecture (and for a tuning
    one its chosen hyper-parameters), and the runs of the configured methods whose retraining it may reuse
    (MethodInfo.reuses)."""
    info = require_applicable(wildcards)
    inputs = {"manifest": f"{DATA['shard_dir']}/{wildcards.task}/manifest.json"}
    if info.searches:
        inputs["arch"] = f"{search_dir(wildcards)}/arch.json"
    if info.tunes:
        inputs["hparams"] = f"{search_dir(wildcards)}/hparams.json"
    for other in info.reuses:
        if other in METHODS:
            inputs[f"reuse_{other}"] = (
                f"results/runs/{wildcards.task}/{other}/seed{wildcards.seed}/scores.json"
            )
    return inputs


def search_outputs(name, methods=None):
    """One file per task x search method (or x one of ``methods``) x seed, e.g. search_outputs("arch.json")."""
    methods = SEARCH_METHODS if methods is None else methods
    return [
        f"results/search/{t}/{m}/seed{s}/{name}"
        for t, m in applicable(TASKS, methods)
        for s in SEEDS
    ]


def threads_of(stage):
    """CPU threads of a stage's jobs under the configured budget."""
    return job_resources(stage, TRAIN["budget"]).threads


def resource_of(stage, name):
    """One resource of a stage's jobs (mem_mb, runtime, gpu): memory and run time grow with the attempt, and
    train.device: cpu or a CPU-only method stage asks for no GPU. Values live in nb360.resources; profiles
    may override them per rule.
    """
    return lambda wildcards, attempt: getattr(
        job_resources(
            stage,
            TRAIN["budget"],
            TRAIN["device"],
            attempt,
            getattr(wildcards, "method", None),
        ),
        name,
    )


# The precomputed NB201 benchmark (workflow/rules/nb201.smk).

NB201 = config["nb201"]
# The NB201 benchmark runs on those of its tasks that are configured (their shards are built anyway).
NB201_TASKS = [t for t in NB201["tasks"] if t in TASKS]
# The official tables need no shards: nb201_official searches both tasks whatever is configured.
NB201_OFFICIAL_TASKS = list(nb201_plan.TASKS)
NB201_CHUNKS = nb201_plan.n_chunks(NB201["cells"], NB201["chunk_size"])
NB201_DIR = "results/nb201"
NB201_OFFICIAL_DIR = "results/nb201_official"


def nb201_table_path(task, hp):
    return f"{NB201_DIR}/{task}/nb201-{task}-{hp}E.pickle.pbz2"


def nb201_tables(wildcards):
    low, final = nb201_plan.hps(wildcards.task, TRAIN["budget"])
    return {
        "low": nb201_table_path(wildcards.task, low),
        "final": nb201_table_path(wildcards.task, final),
    }


def nb201_official_tables(wildcards):
    low, final = nb201_plan.OFFICIAL_HPS
    paths = {
        "low": nb201_plan.official_path(DATA["raw_dir"], wildcards.task, low),
        "final": nb201_plan.official_path(DATA["raw_dir"], wildcards.task, final),
    }
    # Nothing here can fetch them (Google Drive and S3), so say where they go instead of a MissingInput.
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise WorkflowError(
            f"official NB201 table(s) missing: {', '.join(missing)}. Download the four NATS-tss-v1_0-*.pickle.pbz2 "
            f"files of NAS-Bench-360 (README, 'Precomputed NB201 benchmark') and place them in "
            f"{DATA['raw_dir']}/nb201/ under their official names (data.raw_dir sets the folder)."
        )
    return paths


def nb201_report_outputs(root, figures, tasks):
    """The NB201 report's files (tables under root, figures under figures), marked for the HTML report."""

    def marked(path, caption):
        return report(path, caption=f"../report/{caption}.rst", category="NB201")

    return {
        "algorithms_csv": f"{root}/nb201_algorithms.csv",
        "algorithms_md": marked(f"{root}/nb201_algorithms.md", "nb201_algorithms"),
        "correlations_csv": f"{root}/nb201_correlations.csv",
        "correlations_md": marked(
            f"{root}/nb201_correlations.md", "nb201_correlations"
        ),
        "distribution": marked(
            f"{figures}/nb201_distribution.png", "nb201_distribution"
        ),
        "searches": [
            marked(f"{figures}/nb201_search_{task}.png", "nb201_search")
            for task in tasks
        ],
    }
