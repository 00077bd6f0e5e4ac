"""The DASH method: its search writes the chosen (kernel, dilation) of every searched convolution, its tune
stage chooses hyper-parameters on validation for that network, and its retraining builds exactly that
network with those hyper-parameters."""

from dataclasses import replace

import pytest
import torch

from nb360.methods import RunContext, dash, get_method
from nb360.models import create_model
from nb360.models.layers import CONV_TYPES
from nb360.runs import read_arch, read_hparams, write_arch, write_hparams
from nb360.tasks import get_task
from nb360.train.loop import count_params


def test_hyperparameter_grids_are_dashs():
    assert len(dash.hp_grid("cifar100", dash.PAPER)) == 24
    assert [hp["lr"] for hp in dash.hp_grid("cosmic", dash.PAPER)] == [1e-2, 1e-3, 1e-4]
    assert dash.space_for(get_task("ninapro")) == ((3, 5, 7), (1, 3, 7))
    assert dash.space_for(get_task("ecg"))[0] == (3, 7, 11, 15, 19)


@pytest.mark.parametrize("task", ["satellite", "ninapro"])
def test_search_writes_the_chosen_convolutions_and_retraining_builds_them(
    task, embedded, tmp_path, monkeypatch
):
    tiny = replace(dash.SMOKE, search_epochs=1, max_batches=2, hp_grid={"lr": (0.1, 0.01), "dropout": (0.0,),
                   "weight_decay": (5e-4,), "momentum": (0.9,)})  # fmt: skip
    monkeypatch.setattr(dash, "SMOKE", tiny)
    monkeypatch.setitem(
        dash.WRN_SMOKE, task, replace(dash.WRN_SMOKE[task], epochs=1, max_batches_per_epoch=2)
    )
    spec = get_task(task)
    manifest = embedded.build(task)[1]
    ctx = RunContext(spec, manifest, 0, "smoke", "cpu", tmp_path)
    found = get_method("dash").search(ctx)
    convs = [tuple(c) for c in found.arch["convs"]]
    kernels, dilations = dash.space_for(spec)
    assert len(convs) == (13 if spec.dim == 2 else 9)
    assert all(k in kernels and d in dilations for k, d in convs)
    write_arch(found.kind, found.arch, found.summary, tmp_path / "arch.json", {})
    assert [tuple(c) for c in read_arch(tmp_path / "arch.json", dash.KIND)["arch"]["convs"]] == convs
    ctx = replace(ctx, arch=tmp_path / "arch.json")
    tuned = get_method("dash").tune(ctx)
    assert [t["lr"] for t in tuned.trials] in ([0.1], [0.1, 0.01])  # a group that does not improve ends it
    best = min(tuned.trials, key=lambda t: t["value"])
    assert tuned.hparams == {k: v for k, v in best.items() if k != "value"}
    write_hparams(tuned, tmp_path / "hparams.json", {"task": task})
    assert read_hparams(tmp_path / "hparams.json", dash.HP_GRID)["hparams"] == tuned.hparams
    with pytest.raises(ValueError, match=r"needs its hparams\.json"):
        get_method("dash").retrain(ctx)
    result = get_method("dash").retrain(
        replace(ctx, hparams=tmp_path / "hparams.json", workdir=tmp_path / "retrain")
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    network = create_model("wrn", spec, width=tiny.retrain_width, convs=convs)
    assert result.params == count_params(network)
    layers = [
        next(m for m in getattr(p, n).modules() if isinstance(m, CONV_TYPES))
        for p, n in network.searched_convs()
    ]
    assert [(c.kernel_size[0], c.dilation[0]) for c in layers] == convs


def test_architecture_learning_rate_decays_with_the_weights_schedule():
    from nb360.train import TrainConfig
    from nb360.train.loop import FitState

    torch.manual_seed(0)
    model = dash.search_supernet(get_task("satellite"), width=0.1)
    cfg = TrainConfig(epochs=10, lr=0.1, batch_size=4, milestones=(0.3, 0.6, 0.9))
    step = dash.SingleLevelArchStep(0.05)
    step.setup(FitState(model, get_task("satellite"), {}, cfg, 0, ("train",), None, None))
    lrs = []
    for epoch in range(10):
        lrs.append(step.optimizer.param_groups[0]["lr"])
        step.optimizer.step()  # an epoch's steps (no gradients: nothing moves)
        step.epoch_end(epoch, {})
    assert lrs == pytest.approx([0.05] * 3 + [0.01] * 3 + [0.002] * 3 + [0.0004])
    resumed = dash.SingleLevelArchStep(0.05)
    resumed.setup(FitState(model, get_task("satellite"), {}, cfg, 0, ("train",), None, None))
    resumed.load_state_dict(step.state_dict())
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.0004)


def test_a_hyperparameter_file_without_what_retraining_needs_is_refused(tmp_path):
    from nb360.methods import TuneResult

    write_hparams(TuneResult({"lr": 0.1}, "lr 0.1"), tmp_path / "hparams.json", {})
    with pytest.raises(ValueError, match=r"hparams\.json: hyper-parameter\(s\) dropout, weight_decay"):
        read_hparams(tmp_path / "hparams.json", dash.HP_GRID)
    (tmp_path / "arch.json").write_text("{}")
    with pytest.raises(ValueError, match="not an nb360 hyper-parameter file"):
        read_hparams(tmp_path / "arch.json")
    with pytest.raises(FileNotFoundError, match="run the method's tune stage first"):
        read_hparams(tmp_path / "missing.json")


def test_the_smoke_tune_stage_takes_the_wrns_smoke_training_without_training(tmp_path, monkeypatch):
    """At the smoke budget the grid is one configuration, the WRN's smoke training's (its per-task learning
    rate, its momentum and weight decay): the tune stage writes it without training anything."""
    from nb360.methods.wrn import smoke_config

    assert [hp["lr"] for hp in dash.hp_grid("fsd50k", dash.SMOKE)] == [smoke_config("fsd50k").lr] == [1.0]
    assert dash.hp_grid("darcy", dash.SMOKE) == [
        {"lr": 0.02, "dropout": 0.0, "weight_decay": 5e-4, "momentum": 0.9}
    ]
    # an explicit grid still wins over the WRN's configuration
    assert len(dash.hp_grid("cifar100", replace(dash.SMOKE, hp_grid=dash.HP_GRID))) == 24

    def no_training(*args, **kwargs):
        raise AssertionError("a one-configuration grid must not train")

    monkeypatch.setattr(dash, "fit", no_training)
    spec = get_task("darcy")
    write_arch(dash.KIND, {"convs": [[3, 1]] * 13, "backbone": "wrn"}, "", tmp_path / "arch.json", {})
    ctx = RunContext(spec, tmp_path / "unused.json", 0, "smoke", "cpu", tmp_path, arch=tmp_path / "arch.json")
    tuned = get_method("dash").tune(ctx)
    assert tuned.hparams == dash.hp_grid("darcy", dash.SMOKE)[0] and tuned.trials == []
    write_hparams(tuned, tmp_path / "hparams.json", {"task": "darcy"})
    assert read_hparams(tmp_path / "hparams.json", dash.HP_GRID)["hparams"] == tuned.hparams
