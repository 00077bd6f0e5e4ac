"""Auto-DeepLab as a method: its search on a tiny dense task writes an arch.json (path and cell) that its
retraining builds, with the parameter count the file implies."""

from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from nb360.methods import RunContext, autodeeplab, get_method, method_info
from nb360.models import create_model
from nb360.runs import read_arch, write_arch
from nb360.search.autodeeplab_space import STEPS
from nb360.tasks import get_task
from nb360.train.loop import count_params


def test_autodeeplab_applies_to_the_dense_tasks_of_the_paper_only():
    info = method_info("autodeeplab")
    assert [t for t in ("darcy", "psicov", "cosmic", "cifar100", "ecg") if info.applies_to(t)] == [
        "darcy", "psicov", "cosmic"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="dense prediction on 2D inputs"):
        create_model("autodeeplab_search", get_task("cifar100"))


@pytest.mark.parametrize("task", ["darcy", "cosmic"])
def test_search_writes_an_arch_that_retraining_builds_with_its_parameter_count(
    task, embedded, tmp_path, monkeypatch
):
    tiny = replace(autodeeplab.SMOKE, layers=3, search_batches=1)
    monkeypatch.setattr(autodeeplab, "SMOKE", tiny)
    short = replace(autodeeplab.WRN_SMOKE[task], epochs=1, max_batches_per_epoch=2)
    monkeypatch.setitem(autodeeplab.WRN_SMOKE, task, short)
    spec = get_task(task)
    ctx = RunContext(spec, embedded.build(task)[1], 0, "smoke", "cpu", tmp_path / "search")
    found = get_method("autodeeplab").search(ctx)
    path, cell = found.arch["path"], found.arch["cell"]
    assert len(path) == 3 and path[0] in (0, 1) and all(abs(a - b) <= 1 for a, b in pairwise(path))
    assert len(cell) == 2 * STEPS and all(op != "none" for op, _ in cell)
    write_arch(found.kind, found.arch, found.summary, tmp_path / "arch.json", {})
    arch = read_arch(tmp_path / "arch.json", autodeeplab.KIND)["arch"]
    result = get_method("autodeeplab").retrain(
        replace(ctx, arch=tmp_path / "arch.json", workdir=tmp_path / "rt")
    )
    assert result.params == arch["params"] == count_params(autodeeplab._network(spec, arch, tiny))
    assert all(np.isfinite(v) for v in result.metrics.values())


def test_retraining_refuses_an_arch_of_another_budget(embedded, tmp_path):
    arch = {"path": [0, 1, 1], "cell": [["skip_connect", 0]] * (2 * STEPS), "params": 7}
    write_arch(autodeeplab.KIND, arch, "", tmp_path / "arch.json", {})
    ctx = RunContext(get_task("darcy"), embedded.build("darcy")[1], 0, "smoke", "cpu", tmp_path,
                     arch=tmp_path / "arch.json")  # fmt: skip
    with pytest.raises(ValueError, match="implies 7 parameters"):
        get_method("autodeeplab").retrain(ctx)
