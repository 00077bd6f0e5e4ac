"""Task registry. Importing this package registers every task (one module per task)."""

import importlib

from nb360.tasks.base import (
    DRIVE_FOLDER,
    S3_BASE,
    BatchContext,
    EmbeddedContext,
    RawFile,
    RealCounts,
    Splits,
    TaskSpec,
    get_task,
    list_tasks,
    register_task,
)

__all__ = [
    "DRIVE_FOLDER",
    "S3_BASE",
    "BatchContext",
    "EmbeddedContext",
    "RawFile",
    "RealCounts",
    "Splits",
    "TaskSpec",
    "get_task",
    "list_tasks",
    "register_task",
]

# The task modules, in the benchmark's order (the order of tables and of list_tasks()). Each module calls
# register_task() when imported; a new task is one module plus one entry here.
TASK_MODULES = (
    "cifar100",
    "spherical",
    "ninapro",
    "fsd50k",
    "darcy",
    "psicov",
    "cosmic",
    "ecg",
    "satellite",
    "deepsea",
)
for _module in TASK_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
