"""AMBER: its space and networks, the controller's REINFORCE update on hand-made rewards, and the search on a
tiny task handing its architecture, with the parameter count it implies, to the retraining."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from nb360 import metrics
from nb360.methods import RunContext, amber, get_method, method_info
from nb360.models import create_model
from nb360.runs import read_arch, write_arch
from nb360.search.amber_space import (
    LAYERS,
    OPS,
    AmberArch,
    AmberNet,
    Controller,
    ControllerConfig,
    reinforce_update,
    sample_uniform,
)
from nb360.tasks import get_task
from nb360.train.loop import count_params


def _arch(op: int, skip_every: bool) -> AmberArch:
    return AmberArch((op,) * LAYERS, tuple((int(skip_every),) * i for i in range(LAYERS)))


def test_architecture_json_round_trip_and_invalid_ones():
    arch = sample_uniform(torch.Generator().manual_seed(0))
    assert AmberArch.from_json(arch.to_json()) == arch
    assert arch.to_json()["ops"][0] in OPS
    with pytest.raises(ValueError, match="layer 2: skips"):
        AmberArch((0, 0, 0), ((), (1,), (1,)))
    with pytest.raises(ValueError, match="unknown AMBER op"):
        AmberArch.from_json({"ops": ["conv3"], "skips": [[]]})


@pytest.mark.parametrize("length", [1000, 46])
def test_every_op_and_every_skip_runs_at_every_width(length):
    """Skips reach across the width doublings (each earlier output is reduced with them), on ECG's and
    Satellite's lengths; the shared child runs any sampled architecture with one set of weights."""
    x = torch.randn(2, 1, length)
    shared = AmberNet(1, length, 4, filters=4, fc=8, shared=True)
    for op in range(len(OPS)):
        for skip in (False, True):
            shared.arch = _arch(op, skip)
            assert shared(x).shape == (2, 4)
            alone = AmberNet(1, length, 4, filters=4, fc=8, arch=_arch(op, skip), head="gap")
            assert alone(x).shape == (2, 4)
    assert count_params(AmberNet(1, length, 4, filters=4, fc=8, arch=_arch(0, True))) < count_params(shared)


def test_identity_layers_pass_the_stem_through():
    """An all-identity architecture without skips is the stem, batch norms and the head: the ops add
    nothing and take no weights."""
    net = AmberNet(1, 46, 3, filters=4, fc=8, arch=_arch(OPS.index("identity"), False), head="gap")
    assert all(count_params(layer) == 0 for layer in net.layers)


def test_reinforce_raises_the_probability_of_rewarded_architectures():
    torch.manual_seed(0)
    controller = Controller(ControllerConfig(train_pi_iter=1, kl_threshold=1e9))
    optimizer = torch.optim.Adam(controller.parameters(), lr=0.05)
    good, bad = _arch(3, False), _arch(5, True)
    before = [controller(arch=a).log_prob.item() for a in (good, bad)]
    reinforce_update(controller, optimizer, [good, bad], [1.0, 0.0], baseline=0.5)
    after = [controller(arch=a).log_prob.item() for a in (good, bad)]
    assert after[0] > before[0] and after[1] < before[1]


def test_controller_learns_a_hand_made_reward():
    """Reward 1 for the op "dilconv8" at the first layer, 0 otherwise: a few episodes of sampling and
    updating make the controller choose it far more often than 1 in 7."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    controller = Controller()
    optimizer = torch.optim.Adam(controller.parameters(), lr=0.02)
    target = OPS.index("dilconv8")
    for _ in range(15):
        archs = [controller.sample(gen) for _ in range(20)]
        rewards = [float(a.ops[0] == target) for a in archs]
        reinforce_update(controller, optimizer, archs, rewards, baseline=sum(rewards) / len(rewards))
    share = np.mean([controller.sample(gen).ops[0] == target for _ in range(200)])
    assert share > 0.5


def test_kl_threshold_stops_the_passes_early():
    controller = Controller(ControllerConfig(train_pi_iter=10, kl_threshold=0.0))
    optimizer = torch.optim.Adam(controller.parameters(), lr=0.05)
    archs = [_arch(0, False), _arch(1, True)]
    update = reinforce_update(controller, optimizer, archs, [1.0, 0.0], baseline=0.5)
    assert update["passes"] == 1 and update["kl"] > 0


def test_skip_penalty_pulls_towards_the_target():
    """Without reward differences the KL term alone moves the skip probability towards 0.4."""
    torch.manual_seed(0)
    cfg = ControllerConfig(skip_target=0.9, train_pi_iter=1, kl_threshold=1e9)
    controller = Controller(cfg)
    optimizer = torch.optim.Adam(controller.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    share = np.mean([np.mean([b for row in controller.sample(gen).skips for b in row]) for _ in range(50)])
    for _ in range(30):
        archs = [controller.sample(gen) for _ in range(5)]
        reinforce_update(controller, optimizer, archs, [0.0] * 5, baseline=0.0)
    after = np.mean([np.mean([b for row in controller.sample(gen).skips for b in row]) for _ in range(50)])
    assert share < 0.7 < after


def test_reward_is_one_against_the_rest_auroc_on_the_softmax():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(60, 4)), rng.integers(0, 4, 60)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert metrics.mean_auroc(logits, y) == pytest.approx(expected)
    labels = (rng.random((60, 3)) > 0.5).astype(float)
    assert metrics.mean_auroc(logits[:, :3], labels) == pytest.approx(
        1 - metrics.deepsea_one_minus_auroc(logits[:, :3], labels)
    )


def test_amber_applies_to_the_1d_tasks_of_the_paper_only():
    info = method_info("amber")
    assert [t for t in ("ecg", "satellite", "deepsea", "cifar100", "darcy") if info.applies_to(t)] == [
        "ecg", "satellite", "deepsea"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="AMBER's space is for 1D sequences"):
        create_model("amber_net", get_task("cifar100"), shared=True)


@pytest.mark.parametrize("task", ["satellite", "deepsea"])
def test_search_writes_an_arch_that_retraining_builds_with_its_parameter_count(
    task, embedded, tmp_path, monkeypatch
):
    tiny = replace(amber.SMOKE, episodes=2, steps=2, archs=3)
    monkeypatch.setattr(amber, "SMOKE", tiny)
    monkeypatch.setitem(
        amber.WRN_SMOKE, task, replace(amber.WRN_SMOKE[task], epochs=1, max_batches_per_epoch=2)
    )
    spec = get_task(task)
    manifest = embedded.build(task)[1]
    ctx = RunContext(spec, manifest, 0, "smoke", "cpu", tmp_path / "search")
    found = get_method("amber").search(ctx)
    scored = [r for r in found.history if "reward" in r]
    assert len(scored) == 2 * 3 and found.arch["reward"] == max(r["reward"] for r in scored)
    write_arch(found.kind, found.arch, found.summary, tmp_path / "arch.json", {})
    arch = AmberArch.from_json(read_arch(tmp_path / "arch.json", amber.KIND)["arch"])
    result = get_method("amber").retrain(replace(ctx, arch=tmp_path / "arch.json", workdir=tmp_path / "rt"))
    assert result.params == found.arch["params"] == count_params(amber._retrain_network(spec, arch, tiny))
    assert all(np.isfinite(v) for v in result.metrics.values())
    # The search is a function of the seed: run again from scratch, the same architecture; run again on its
    # finished checkpoint (a job rerun after its last epoch), the same result without training.
    again = get_method("amber").search(replace(ctx, workdir=tmp_path / "again"))
    assert again.arch == found.arch
    resumed = get_method("amber").search(ctx)
    assert resumed.arch == found.arch and resumed.history == found.history


def test_retraining_refuses_an_arch_of_another_budget(embedded, tmp_path):
    spec = get_task("satellite")
    arch = _arch(0, False)
    write_arch(amber.KIND, {**arch.to_json(), "params": 1, "reward": 0.5}, "", tmp_path / "arch.json", {})
    ctx = RunContext(
        spec, embedded.build("satellite")[1], 0, "smoke", "cpu", tmp_path, arch=tmp_path / "arch.json"
    )
    with pytest.raises(ValueError, match="implies 1 parameters"):
        get_method("amber").retrain(ctx)
    with pytest.raises(ValueError, match="AMBER runs on ecg, satellite, deepsea"):
        get_method("amber").retrain(replace(ctx, task=get_task("ninapro")))
