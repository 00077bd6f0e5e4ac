"""Bilevel search in the one training loop: hooks, data halves, schedules, GAEA and DARTS updates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nb360.data.loader import make_loader
from nb360.search.bilevel import ArchStep, ExpGrad
from nb360.search.darts_space import Supernet
from nb360.tasks import get_task
from nb360.train import TrainConfig, fit, seed_everything
from nb360.train.loop import FitHook, FitState, _Accelerator

SEARCH = TrainConfig(
    epochs=2,
    lr=0.05,
    batch_size=64,
    nesterov=False,
    weight_decay=3e-4,
    schedule="cosine",
    grad_clip=5.0,
    fit_subset=(0.0, 0.5),
    max_batches_per_epoch=3,
)


def _supernet(arch_norm: str = "simplex", k: int = 4) -> Supernet:
    seed_everything(0)
    return Supernet(get_task("satellite"), C=8, layers=3, k=k, arch_norm=arch_norm)


def test_exponentiated_gradient_by_hand() -> None:
    p = nn.Parameter(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    opt = ExpGrad([p], lr=math.log(2.0))
    p.grad = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    opt.step()
    # row 0: [0.25, 0.5] / 0.75; row 1: [0.25, 1.5] / 1.75
    assert torch.allclose(p.data, torch.tensor([[1 / 3, 2 / 3], [1 / 7, 6 / 7]]))


def test_subset_halves_are_disjoint_and_cover_the_data(embedded) -> None:
    manifest = embedded.manifest("satellite")
    halves = [
        make_loader(manifest, ["train"], 50, train=True, seed=1, subset=s) for s in [(0.0, 0.5), (0.5, 1.0)]
    ]
    seen = [np.concatenate([idx for _, idx in loader.sampler]) for loader in halves]
    n = len(halves[0].dataset)
    assert sorted(np.concatenate(seen).tolist()) == list(range(n))
    assert seen[0].max() < n // 2 + 1 <= seen[1].min() + 1
    with pytest.raises(ValueError, match="subset"):
        make_loader(manifest, ["train"], 50, train=True, subset=(0.5, 0.5))


class _Recorder(FitHook):
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.restored: dict | None = None

    def setup(self, state: FitState) -> None:
        self.calls.append(("setup", state.fit_splits))

    def epoch_start(self, epoch: int) -> None:
        self.calls.append(("start", epoch))

    def before_step(self, epoch: int, step: int, batch) -> None:
        self.calls.append(("step", epoch, step, len(batch["x"])))

    def epoch_end(self, epoch: int, record: dict) -> None:
        record["marked"] = epoch
        self.calls.append(("end", epoch))

    def state_dict(self) -> dict:
        return {"ends": sum(c[0] == "end" for c in self.calls)}

    def load_state_dict(self, state) -> None:
        self.restored = dict(state)


def test_hooks_are_called_in_order_and_checkpointed(embedded, tmp_path) -> None:
    manifest = embedded.build("satellite")[1]
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=64, max_batches_per_epoch=2)
    hook = _Recorder()
    model = _supernet("softmax")
    fit(model, manifest, cfg, "search", 0, "cpu", tmp_path / "c.pt", stop_after_epochs=1, hooks=[hook])
    assert hook.calls == [
        ("setup", ("train",)),
        ("start", 0),
        ("step", 0, 0, 64),
        ("step", 0, 1, 64),
        ("end", 0),
    ]
    again = _Recorder()
    result = fit(model, manifest, cfg, "search", 0, "cpu", tmp_path / "c.pt", hooks=[again])
    assert again.restored == {"ends": 1}  # the first call's hook state, from the checkpoint
    assert [c[0] for c in again.calls] == ["setup", "start", "step", "step", "end"]
    assert [r["marked"] for r in result.history] == [0, 1]


def test_cosine_schedule(embedded) -> None:
    manifest = embedded.build("satellite")[1]
    cfg = TrainConfig(
        epochs=4, lr=0.1, batch_size=64, schedule="cosine", lr_min=0.01, max_batches_per_epoch=1
    )
    seed_everything(0)
    from nb360.models import create_model

    result = fit(create_model("wrn", get_task("satellite"), width=0.25), manifest, cfg, device="cpu")
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [r["lr"] for r in result.history] == pytest.approx(expected)


def test_gaea_updates_architecture_only_after_warmup_and_stays_on_simplex(embedded) -> None:
    manifest = embedded.build("satellite")[1]
    model = _supernet("simplex")
    initial = [p.detach().clone() for p in model.arch_parameters()]
    snapshots: list[list[torch.Tensor]] = []

    class Snap(FitHook):
        def epoch_end(self, epoch: int, record: dict) -> None:
            snapshots.append([p.detach().clone() for p in model.arch_parameters()])

    step = ArchStep("eg", 0.5, warmup_epochs=1)
    result = fit(model, manifest, SEARCH, "search", 0, "cpu", hooks=[step, Snap()])
    assert all(torch.equal(a, b) for a, b in zip(initial, snapshots[0], strict=True))  # warm-up epoch
    assert not all(torch.equal(a, b) for a, b in zip(initial, snapshots[1], strict=True))
    assert result.history[-1]["arch_updates"] == 3
    for name, p in model.arch.items():
        if name.startswith("alphas"):
            assert torch.allclose(p.sum(dim=-1), torch.ones(p.shape[0]), atol=1e-5)
            assert (p > 0).all()
    assert "genotype" in result.history[-1]


def test_weight_optimizer_never_moves_architecture(embedded) -> None:
    manifest = embedded.build("satellite")[1]
    model = _supernet("softmax", k=1)
    initial = [p.detach().clone() for p in model.arch_parameters()]
    fit(model, manifest, SEARCH, "search", 0, "cpu")
    assert all(torch.equal(a, p) for a, p in zip(initial, model.arch_parameters(), strict=True))


def test_eg_refuses_a_softmax_supernet(embedded) -> None:
    with pytest.raises(ValueError, match="simplex"):
        fit(
            _supernet("softmax"),
            embedded.build("satellite")[1],
            SEARCH,
            "search",
            0,
            "cpu",
            hooks=[ArchStep("eg", 0.1)],
        )


class _Toy(nn.Module):
    """A two-op "supernet" without batch norm: y = sum_o softmax(a)_o * W_o x."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = nn.ModuleList(nn.Linear(3, 2) for _ in range(2))
        self.arch = nn.ParameterDict({"a": nn.Parameter(torch.tensor([0.3, -0.2]))})

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.arch["a"]]

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.ops.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.arch["a"], 0)
        return w[0] * self.ops[0](x) + w[1] * self.ops[1](x)


def test_second_order_gradient_matches_the_exact_unrolled_gradient() -> None:
    torch.manual_seed(0)
    model = _Toy().double()
    train = {"x": torch.randn(8, 3, dtype=torch.float64), "y": torch.randn(8, 2, dtype=torch.float64)}
    val = {"x": torch.randn(8, 3, dtype=torch.float64), "y": torch.randn(8, 2, dtype=torch.float64)}

    def loss_fn(out, batch):
        return ((out - batch["y"]) ** 2).mean()

    xi, wd = 0.1, 1e-3
    cfg = TrainConfig(epochs=1, lr=xi, batch_size=8, weight_decay=wd)
    step = ArchStep("darts2", 3e-4)
    step.state = FitState(
        model, get_task("satellite"), {}, cfg, 0, ("train",), loss_fn, _Accelerator(torch.device("cpu"), 1)
    )
    step.arch_params = model.arch_parameters()
    approx = step._second_order_grads(train, val)

    # Exact: d/da L_val(w - xi * (grad_w L_train(w, a) + wd * w), a), by double backward.
    weights = model.weight_parameters()
    g = torch.autograd.grad(loss_fn(model(train["x"]), train), weights, create_graph=True)
    virtual = {n: w - xi * (gi + wd * w) for (n, w), gi in zip(model.ops.named_parameters(), g, strict=True)}
    out = torch.func.functional_call(model, {f"ops.{n}": v for n, v in virtual.items()}, (val["x"],))
    exact = torch.autograd.grad(loss_fn(out, val), model.arch_parameters())
    assert torch.allclose(approx[0], exact[0], rtol=1e-4, atol=1e-8), (approx[0], exact[0])
