"""The method registry: one entry per method, everything the workflow needs to know to build its DAG.

This module imports nothing heavy, so that parsing the workflow (``workflow/rules/common.smk``) and
computing a job's resources (:mod:`nb360.resources`) cost no torch, scipy or optuna import: on a cluster
every job's Snakemake pays the parse again. Each entry names the module that implements the method (its
``retrain``, ``search``, ``search_worker``: see :mod:`nb360.methods.base`); :func:`nb360.methods.get_method`
imports that module only when a job runs the method. The module's
:func:`~nb360.methods.base.register_method` checks its functions against the entry, so the two views cannot
disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ("search", "tune", "retrain")  # the method stages a job runs, in their order
FAMILIES = ("nas", "non_nas", "hpo", "reference")


@dataclass(frozen=True)
class MethodInfo:
    name: str  # the {method} wildcard and the name in config.yaml's methods
    module: str  # the module whose import registers the method's functions
    title: str  # row label in tables and legends
    description: str = ""
    searches: bool = False  # has a search stage (rule search) whose arch.json its retrain reads
    search_workers: bool = False  # its search is shared by worker jobs (rule search_worker) first
    reads: tuple[str, ...] = ()  # methods whose searched architecture this method's search reads
    # has a hyper-parameter stage (rule tune) between its search and its retraining: it reads arch.json and
    # writes hparams.json, which the retraining reads
    tunes: bool = False
    # Stages that never train a network on a GPU: their jobs ask for no GPU, so they neither hold a GPU slot
    # nor wait in a cluster's GPU queue.
    cpu_only: tuple[str, ...] = ()
    # Its family in the comparison figures: "nas" (architecture search), "non_nas" (a fixed architecture or
    # model: the paper's non-NAS baselines), "hpo" (a fixed architecture with tuned hyperparameters) or
    # "reference" (the trivial baseline, in no comparison).
    family: str = "nas"
    # Methods whose retrained run (same task and seed) this method's retrain reuses where its searched
    # configuration is exactly theirs: the same training, which on the CPU gives the same bits, is not run
    # twice (its cost is still charged to this method in the cost table).
    reuses: tuple[str, ...] = ()
    # The tasks it runs on, where it is task-specific (AMBER: the 1D tasks; Auto-DeepLab: the dense ones);
    # () = every task. The workflow runs it on no other task, and the table says "not applicable" there.
    tasks: tuple[str, ...] = ()

    def applies_to(self, task: str) -> bool:
        """Whether this method runs on ``task`` (a task-specific method runs on its own tasks only)."""
        return not self.tasks or task in self.tasks

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"method {self.name!r}: family {self.family!r}; families are {FAMILIES}")
        if self.search_workers and not self.searches:
            raise ValueError(f"method {self.name!r} has search workers but no search to collect them")
        if self.tunes and not self.searches:
            raise ValueError(f"method {self.name!r} tunes the hyper-parameters of a search it does not have")
        if self.reads and not self.searches:
            raise ValueError(f"method {self.name!r} reads searches but has no search of its own")
        if unknown := set(self.cpu_only) - set(STAGES):
            raise ValueError(f"method {self.name!r}: cpu_only {sorted(unknown)}; stages are {STAGES}")


# Every method, in the order of the tables' rows. A new method is one module plus one entry here.
METHODS: tuple[MethodInfo, ...] = (
    MethodInfo(
        "trivial",
        "nb360.methods.trivial",
        "Trivial",
        "majority class / label prior / training-mean field",
        cpu_only=("retrain",),  # counts labels, trains nothing
        family="reference",
    ),
    MethodInfo(
        "wrn",
        "nb360.methods.wrn",
        "WRN",
        "Wide ResNet baseline with the paper's default hyperparameters",
        family="non_nas",
    ),
    MethodInfo(
        "xgboost",
        "nb360.methods.xgboost",
        "XGBoost",
        "gradient-boosted trees on the flattened input (dense tasks: per pixel, on its neighbourhood)",
        family="non_nas",
    ),
    MethodInfo(
        "perceiver_io",
        "nb360.methods.perceiver_io",
        "Perceiver IO",
        "general-purpose attention architecture (32 latents x 128), AdamW, the best epoch on val loss",
        family="non_nas",
    ),
    MethodInfo(
        "expert",
        "nb360.methods.expert",
        "Expert",
        "each task's hand-designed model and training recipe (DenseNet-BC, FNO, PDNet, deepCR, ...)",
        family="non_nas",
    ),
    MethodInfo(
        "wrn_asha",
        "nb360.methods.wrn_asha",
        "WRN-ASHA",
        "WRN with learning rate, momentum, weight decay and dropout tuned by ASHA (optuna), then retrained",
        searches=True,
        search_workers=True,
        cpu_only=("search",),  # the search job only reads the study its workers filled
        family="hpo",
        reuses=("wrn",),  # trial 0 is the WRN's configuration; where it wins, the retrain is the WRN's
    ),
    MethodInfo(
        "random_search",
        "nb360.methods.random_search",
        "Random search",
        "random DARTS cells, each trained briefly, the best retrained",
        searches=True,
    ),
    MethodInfo(
        "densenas",
        "nb360.methods.densenas",
        "DenseNAS",
        "densely connected search space, FLOPs-aware",
        searches=True,
    ),
    MethodInfo(
        "densenas_random",
        "nb360.methods.densenas",
        "DenseNAS random",
        "random architectures of the DenseNAS space under its parameter cap, the best retrained",
        searches=True,
        reads=("densenas",),
    ),
    MethodInfo(
        "gaea",
        "nb360.methods.darts",
        "DARTS-GAEA",
        "GAEA PC-DARTS: partial channels, exponentiated gradient",
        searches=True,
    ),
    MethodInfo(
        "darts",
        "nb360.methods.darts",
        "DARTS (1st order)",
        "DARTS with first-order architecture gradients",
        searches=True,
    ),
    MethodInfo(
        "darts2",
        "nb360.methods.darts",
        "DARTS (2nd order)",
        "DARTS with the unrolled second-order gradient",
        searches=True,
    ),
    MethodInfo(
        "amber",
        "nb360.methods.amber",
        "AMBER",
        "ENAS-style search for 1D sequences: an LSTM controller samples ops and skips, AUROC reward",
        searches=True,
        tasks=("ecg", "satellite", "deepsea"),
    ),
    MethodInfo(
        "autodeeplab",
        "nb360.methods.autodeeplab",
        "Auto-DeepLab",
        "hierarchical search for dense prediction: DARTS cells and their path over four resolutions",
        searches=True,
        tasks=("darcy", "psicov", "cosmic"),
    ),
    # Not in the paper (designed on NAS-Bench-360 after it): after the paper's rows.
    MethodInfo(
        "dash",
        "nb360.methods.dash",
        "DASH",
        "kernel size and dilation of every WRN / 1D ResNet convolution by one mixture kernel, then tuned",
        searches=True,
        tunes=True,
    ),
)


def _by_name() -> dict[str, MethodInfo]:
    # Built on each call (nine entries) so that a test may extend METHODS.
    index: dict[str, MethodInfo] = {}
    for info in METHODS:
        if info.name in index:
            raise ValueError(f"method {info.name!r} has two entries in nb360/methods/registry.py")
        index[info.name] = info
    return index


def list_methods() -> list[str]:
    """Every registered method name, in table order."""
    return list(_by_name())


def method_info(name: str) -> MethodInfo:
    """The registry entry of ``name`` (imports nothing of the method's implementation)."""
    try:
        return _by_name()[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(list_methods())}") from None
