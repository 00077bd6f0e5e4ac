"""Task registry. Importing this package registers every task (one module per task)."""

# One import per task, in the benchmark's order; each module calls register_task().
from nb360.tasks import (  # noqa: F401
    cifar100,
    cosmic,
    darcy,
    deepsea,
    ecg,
    fsd50k,
    ninapro,
    psicov,
    satellite,
    spherical,
)
from nb360.tasks.base import (
    DRIVE_FOLDER,
    S3_BASE,
    BatchContext,
    EmbeddedContext,
    RawFile,
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
    "Splits",
    "TaskSpec",
    "get_task",
    "list_tasks",
    "register_task",
]
