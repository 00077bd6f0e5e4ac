"""What the expert recipes need from the loop: their losses (focal, log-cosh), optimisers (Adam, RMSprop,
Ranger = RAdam + Lookahead) and the plateau schedule on the validation loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from nb360.models import create_model
from nb360.tasks import get_task
from nb360.train import TrainConfig, fit, seed_everything
from nb360.train.loop import Ranger, make_optimizer
from nb360.train.losses import make_loss


def test_focal_loss_by_hand_and_cross_entropy_at_gamma_0():
    spec = get_task("ninapro")
    out, y = torch.randn(5, 18), torch.tensor([0, 3, 17, 3, 9])
    focal = make_loss(spec, {}, ("train",), "focal", {"gamma": 3.0, "alpha": 6.0})
    p_t = torch.softmax(out, dim=1)[torch.arange(5), y]
    expected = (-6.0 * (1 - p_t) ** 3 * p_t.log()).mean()
    torch.testing.assert_close(focal(out, {"y": y}), expected)
    plain = make_loss(spec, {}, ("train",), "focal", {"gamma": 0.0, "alpha": 1.0})
    torch.testing.assert_close(plain(out, {"y": y}), F.cross_entropy(out, y))


def test_log_cosh_is_stable_and_masked():
    spec = get_task("psicov")
    loss = make_loss(spec, {}, ("train",), "log_cosh")
    d = torch.tensor([[0.01, 3.0, 1000.0, -1000.0]], dtype=torch.float64)
    y = torch.zeros_like(d)
    values = [math.log(math.cosh(0.01)), math.log(math.cosh(3.0)), 1000 - math.log(2), 1000 - math.log(2)]
    assert loss(d, {"y": y}).item() == pytest.approx(sum(values) / 4, rel=1e-12)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    assert loss(d, {"y": y, "mask": mask}).item() == pytest.approx(sum(values[:2]) / 2, rel=1e-12)


def test_loss_overrides_refuse_the_wrong_task_or_name():
    with pytest.raises(ValueError, match="single-label"):
        make_loss(get_task("darcy"), {}, ("train",), "focal")
    with pytest.raises(ValueError, match="regression"):
        make_loss(get_task("cifar100"), {}, ("train",), "log_cosh")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_loss(get_task("cifar100"), {}, ("train",), "hinge")
    with pytest.raises(ValueError, match="no parameter"):
        make_loss(get_task("cifar100"), {}, ("train",), "focal", {"beta": 1.0})


def _quadratic_steps(opt_factory, steps, start=None):
    torch.manual_seed(0)
    target = torch.randn(4)
    p = torch.nn.Parameter(torch.zeros(4) if start is None else start.clone())
    opt = opt_factory([p])
    for _ in range(steps):
        opt.zero_grad()
        ((p - target) ** 2).sum().backward()
        opt.step()
    return p.detach(), opt, target


def test_ranger_is_radam_with_lookahead_every_k_steps():
    settings = {"lr": 0.1, "betas": (0.95, 0.999), "eps": 1e-5}
    fast, _, _ = _quadratic_steps(lambda ps: torch.optim.RAdam(ps, **settings), 6)
    ranger, _, _ = _quadratic_steps(lambda ps: Ranger(ps, lr=0.1), 6)
    torch.testing.assert_close(ranger, 0.5 * fast)  # slow = start (0) + 0.5 (fast - start)
    five_fast, _, _ = _quadratic_steps(lambda ps: torch.optim.RAdam(ps, **settings), 5)
    five, _, _ = _quadratic_steps(lambda ps: Ranger(ps, lr=0.1), 5)
    torch.testing.assert_close(five, five_fast)  # between synchronisations: plain RAdam


def test_ranger_resumes_from_its_state_dict():
    whole, _, target = _quadratic_steps(lambda ps: Ranger(ps, lr=0.1), 10)
    half, opt, _ = _quadratic_steps(lambda ps: Ranger(ps, lr=0.1), 4)
    p = torch.nn.Parameter(half.clone())
    resumed = Ranger([p], lr=0.1)
    resumed.load_state_dict(opt.state_dict())
    for _ in range(6):
        resumed.zero_grad()
        ((p - target) ** 2).sum().backward()
        resumed.step()
    torch.testing.assert_close(p.detach(), whole)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "ranger"])
def test_make_optimizer_builds_each_recipe_optimiser(name):
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=2, optimizer=name, weight_decay=1e-4)
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="optimizer must be"):
        make_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainConfig(1, 0.01, 2, optimizer="lbfgs"))


def test_plateau_schedule_cuts_the_rate_after_epochs_without_a_better_validation_loss(embedded, tmp_path):
    manifest = embedded.build("satellite")[1]
    cfg = TrainConfig(
        epochs=6, lr=0.05, batch_size=64, optimizer="adam", weight_decay=0.0, schedule="plateau",
        gamma=0.5, patience=0, max_batches_per_epoch=3, keep_best_val_loss=True,
    )  # fmt: skip
    seed_everything(0)
    model = create_model("wrn", get_task("satellite"), width=0.25)
    result = fit(model, manifest, cfg, seed=0, device="cpu", checkpoint=tmp_path / "c.pt")
    lrs, losses = [h["lr"] for h in result.history], [h["val_loss"] for h in result.history]
    best = math.inf
    for i in range(1, len(lrs)):
        improved = losses[i - 1] < best * (1 - 1e-4)  # torch's default relative threshold
        best = min(best, losses[i - 1]) if improved else best
        assert lrs[i] == pytest.approx(lrs[i - 1] * (1.0 if improved else 0.5))
    assert min(lrs) < lrs[0]  # the run did have epochs without improvement
    with pytest.raises(ValueError, match="keep_best_val_loss"):
        fit(model, manifest, TrainConfig(1, 0.01, 64, schedule="plateau"), device="cpu")
