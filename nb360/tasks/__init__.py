"""Task registry. Importing this package registers every task (one module per task)."""

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

# One import per task, in the benchmark's order; each module calls register_task().
from nb360.tasks import (  # noqa: E402, F401, I001
    cifar100,
    spherical,
    ninapro,
    fsd50k,
    darcy,
    psicov,
    cosmic,
    ecg,
    satellite,
    deepsea,
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
