"""Every registered task, through the same loader: the contract of the task registry."""

import numpy as np
import pytest
import torch

from nb360.data.loader import ShardDataset, make_loader
from nb360.tasks import get_task, list_tasks

ALL = [
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
]
# The input shape of every task, as the benchmark defines it (channels first).
SHAPES = {
    "cifar100": (3, 32, 32),
    "spherical": (3, 60, 60),
    "ninapro": (1, 16, 52),
    "fsd50k": (1, 96, 101),
    "darcy": (3, 85, 85),
    "psicov": (57, 128, 128),
    "cosmic": (1, 128, 128),
    "ecg": (1, 1000),
    "satellite": (1, 46),
    "deepsea": (4, 1000),
}


def test_all_ten_tasks_are_registered_in_order():
    assert list_tasks() == ALL


def test_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="registered tasks: cifar100"):
        get_task("cifar10")


@pytest.mark.parametrize("task", ALL)
def test_spec_is_consistent(task):
    spec = get_task(task)
    assert spec.input_shape == SHAPES[task]
    assert spec.dim == len(spec.input_shape) - 1
    assert spec.output_kind in ("single_label", "multi_label", "dense")
    assert spec.raw_files and all(f.name for f in spec.raw_files)
    assert spec.splits.report == ("test",)
    assert "test" not in spec.splits.search_fit + spec.splits.search_select + spec.splits.retrain_fit


@pytest.mark.parametrize("task", ALL)
def test_loader_yields_the_task_shape_without_nan(embedded, task):
    spec = get_task(task)
    manifest = embedded.manifest(task)
    assert tuple(manifest["input_shape"]) == spec.input_shape
    loader = make_loader(manifest, spec.splits.retrain_fit, batch_size=4, train=True, seed=0)
    batch = next(iter(loader))
    x, y = batch["x"], batch["y"]
    assert x.dtype == torch.float32 and tuple(x.shape) == (4, *spec.input_shape)
    assert torch.isfinite(x).all() and torch.isfinite(y.float()).all()
    if spec.output_kind == "single_label":
        assert y.shape == (4,) and int(y.min()) >= 0 and int(y.max()) < spec.num_outputs
    elif spec.output_kind == "multi_label":
        assert y.shape == (4, spec.num_outputs) and set(y.unique().tolist()) <= {0, 1}
    # Evaluation batches come in a fixed order and repeat exactly.
    ds = ShardDataset(manifest, spec.splits.report, train=False)
    a, b = ds.batch(np.arange(min(2, len(ds)))), ds.batch(np.arange(min(2, len(ds))))
    assert all(torch.equal(a[k], b[k]) for k in a)
