"""The expert method: each task's recipe as a training configuration, the Cutout augmentation, and a smoke run
that learns."""

import pytest
import torch

from nb360.methods import RunContext, expert, get_method
from nb360.tasks import get_task, list_tasks
from nb360.train.loop import make_optimizer, make_scheduler


@pytest.mark.parametrize("task", sorted(expert.RECIPES))
@pytest.mark.parametrize("budget", ["smoke", "paper"])
def test_every_recipe_is_a_training_configuration_that_selects_on_validation(task, budget):
    cfg = expert.train_config(task, budget)
    assert cfg.keep_best_val_loss  # validation chooses the epoch; test is reported once
    recipe = expert.RECIPES[task]
    assert (cfg.optimizer, cfg.schedule, cfg.loss) == (recipe.optimizer, recipe.schedule, recipe.loss)
    if budget == "paper":
        assert (cfg.epochs, cfg.lr, cfg.batch_size) == (recipe.epochs, recipe.lr, recipe.batch_size)
        assert cfg.max_batches_per_epoch is None and cfg.max_eval_batches is None
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    make_scheduler(opt, cfg)


def test_recipes_of_the_expert_scripts():
    cifar = expert.train_config("cifar100", "paper")
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], cifar)
    assert (cifar.lr, cifar.momentum, cifar.nesterov, cifar.weight_decay) == (0.1, 0.9, False, 1e-4)
    assert sorted(make_scheduler(opt, cifar).milestones) == [150, 225]
    darcy = expert.train_config("darcy", "paper")
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], darcy)
    assert sorted(make_scheduler(opt, darcy).milestones) == [100, 200, 300, 400] and darcy.gamma == 0.5
    ninapro = expert.train_config("ninapro", "paper")
    assert ninapro.loss == "focal" and dict(ninapro.loss_params) == {"gamma": 3.0, "alpha": 6.0}
    assert expert.train_config("psicov", "paper").loss == "log_cosh"
    assert set(expert.RECIPES) == set(expert.SMOKE) == set(expert.SMOKE_MODEL) == set(list_tasks())


def test_a_task_without_an_expert_recipe_says_where_to_add_it(monkeypatch):
    monkeypatch.delitem(expert.RECIPES, "ecg")
    with pytest.raises(KeyError, match=r"no expert recipe.*add its model and training to RECIPES"):
        expert.train_config("ecg", "smoke")


def test_cutout_zeroes_one_square_per_image_the_same_way_every_time():
    cut = expert.Cutout(16, seed=3)
    x = torch.ones(8, 3, 32, 32)
    batch = {"x": x}
    cut.before_step(2, 5, batch)
    zeros = (x == 0).all(dim=1)  # every channel of a cut pixel
    assert torch.equal((x == 0).any(dim=1), zeros)
    for img in zeros:
        rows, cols = img.any(dim=1).nonzero()[:, 0], img.any(dim=0).nonzero()[:, 0]
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16  # a square clipped at the borders
        assert img.sum() == len(rows) * len(cols)  # one rectangle
    again = torch.ones(8, 3, 32, 32)
    cut.before_step(2, 5, {"x": again})
    assert torch.equal(again, x)
    other = torch.ones(8, 3, 32, 32)
    cut.before_step(2, 6, {"x": other})
    assert not torch.equal(other, x)


def test_expert_learns_ninapro_beyond_trivial(embedded, tmp_path):
    manifest = embedded.build("ninapro")[1]
    ctx = RunContext(get_task("ninapro"), manifest, 0, "smoke", "cpu", tmp_path)
    result = get_method("expert").retrain(ctx)
    trivial = get_method("trivial").retrain(ctx)
    assert result.metrics["error_pct"] < 0.9 * trivial.metrics["error_pct"]
    assert result.selected_epoch is not None


def test_rocket_expert_chooses_its_learning_rate_by_one_step_and_learns_satellite(embedded, tmp_path):
    from nb360.data.shards import read_manifest
    from nb360.models import create_model

    manifest = read_manifest(embedded.build("satellite")[1])
    spec = get_task("satellite")
    torch.manual_seed(0)
    model = create_model("expert_rocket", spec, num_kernels=200)
    model.set_normalisation(expert.first_samples(manifest, ("train",), 512))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = expert.train_config("satellite", "smoke")
    assert expert.choose_lr(model, manifest, cfg, (1e-6, 1e-2), 0, "cpu") == 1e-2
    assert expert.choose_lr(model, manifest, cfg, (1e-6, 1e3), 0, "cpu") == 1e-6  # 1e3 overshoots
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # trials on copies

    ctx = RunContext(spec, embedded.build("satellite")[1], 0, "smoke", "cpu", tmp_path)
    result = get_method("expert").retrain(ctx)
    trivial = get_method("trivial").retrain(ctx)
    assert result.metrics["error_pct"] < 0.9 * trivial.metrics["error_pct"]
