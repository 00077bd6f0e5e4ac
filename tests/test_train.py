"""The training loop: protocol, determinism, resumption, losses, and the two baseline methods."""

import contextlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from nb360.data.loader import make_loader
from nb360.data.shards import read_manifest
from nb360.methods import RunContext, get_method
from nb360.models import create_model
from nb360.tasks import get_task
from nb360.train import TrainConfig, evaluate, fit, loop, seed_everything
from nb360.train.loop import _Accelerator, phase_splits, predict
from nb360.train.losses import make_loss

CFG = TrainConfig(epochs=3, lr=0.1, batch_size=256, max_batches_per_epoch=4)


def _model(task="satellite"):
    seed_everything(0)
    return create_model("wrn", get_task(task), width=0.25)


def test_resumed_run_ends_like_an_uninterrupted_one(embedded, tmp_path):
    manifest = embedded.build("satellite")[1]
    whole = fit(_model(), manifest, CFG, seed=3, device="cpu", checkpoint=tmp_path / "a.pt")
    first = fit(
        _model(), manifest, CFG, seed=3, device="cpu", checkpoint=tmp_path / "b.pt", stop_after_epochs=1
    )
    assert first.metrics == {} and len(first.history) == 1  # "killed" after one epoch
    resumed = fit(_model(), manifest, CFG, seed=3, device="cpu", checkpoint=tmp_path / "b.pt")
    assert resumed.metrics == whole.metrics
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    a = torch.load(tmp_path / "a.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_protocol_schedule_and_splits(embedded, tmp_path):
    manifest = embedded.build("satellite")[1]
    cfg = TrainConfig(epochs=10, lr=0.1, batch_size=256, max_batches_per_epoch=1)
    run = fit(_model(), manifest, cfg, phase="search", device="cpu")
    # x0.2 at 30/60/80 % of the epochs
    assert [h["lr"] for h in run.history] == pytest.approx(
        [0.1] * 3 + [0.02] * 3 + [0.004] * 2 + [0.0008] * 2
    )
    assert run.eval_splits == ("val",) and all(set(h["val"]) == {"error_pct"} for h in run.history)
    spec = get_task("satellite")
    assert phase_splits(spec, "retrain") == (("train", "val"), ("test",))
    for task in ("deepsea", "fsd50k"):  # the original retrains these on the training split only
        assert phase_splits(get_task(task), "retrain") == (("train",), ("test",))


def test_checkpoint_of_another_configuration_is_not_resumed(embedded, tmp_path, caplog):
    manifest = embedded.build("satellite")[1]
    fit(_model(), manifest, CFG, device="cpu", checkpoint=tmp_path / "c.pt", stop_after_epochs=1)
    other = TrainConfig(epochs=2, lr=0.05, batch_size=256, max_batches_per_epoch=4)
    run = fit(_model(), manifest, other, device="cpu", checkpoint=tmp_path / "c.pt")
    assert len(run.history) == 2 and "another configuration" in caplog.text


def test_corrupt_checkpoint_names_the_file(embedded, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"bad\.pt cannot be read .*delete it"):
        fit(_model(), embedded.build("satellite")[1], CFG, device="cpu", checkpoint=tmp_path / "bad.pt")


def test_losses_by_hand():
    darcy = get_task("darcy")
    s = 85
    stats = {"y_mean": np.full((s, s), 1.0), "y_std": np.full((s, s), 2.0)}
    normaliser = {"eps": 0.0, "ddof": 1, "train": stats}
    rel = make_loss(darcy, normaliser, ("train",))
    out = torch.zeros(2, 1, s, s)  # decodes to 1 everywhere
    y = torch.stack([torch.full((1, s, s), 2.0), torch.full((1, s, s), 4.0)])
    # ||1 - 2|| / ||2|| = 0.5 and ||1 - 4|| / ||4|| = 0.75: mean 0.625
    assert rel(out, {"y": y}).item() == pytest.approx(0.625)
    mse = make_loss(get_task("psicov"), {}, ("train",))
    out, y = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 100.0])
    assert mse(out, {"y": y, "mask": torch.tensor([True, True, False])}).item() == pytest.approx(2.5)
    bce = make_loss(get_task("cosmic"), {}, ("train",))
    logits, target = torch.tensor([0.0, 5.0]), torch.tensor([1.0, 0.0])
    # the second pixel is ignored: loss = -log(sigmoid(0)) = log 2
    assert bce(logits, {"y": target, "mask": torch.tensor([1.0, 0.0])}).item() == pytest.approx(np.log(2))


def test_trivial_method_scores_the_majority_class(embedded, tmp_path):
    ctx = RunContext(get_task("satellite"), embedded.build("satellite")[1], 0, "smoke", "cpu", tmp_path)
    run = get_method("trivial").retrain(ctx)
    from nb360.data.loader import ShardDataset

    train = ShardDataset(ctx.manifest, ["train", "val"], train=False)
    test = ShardDataset(ctx.manifest, ["test"], train=False)
    y_fit = train.batch(np.arange(len(train)))["y"].numpy()
    y_test = test.batch(np.arange(len(test)))["y"].numpy()
    majority = np.bincount(y_fit).argmax()
    assert run.metrics["error_pct"] == pytest.approx(100 * (1 - np.mean(y_test == majority)))
    assert run.params == 0 and run.eval_splits == ("test",)


def test_wrn_learns_satellite_beyond_trivial(embedded, tmp_path):
    ctx = RunContext(get_task("satellite"), embedded.build("satellite")[1], 0, "smoke", "cpu", tmp_path)
    wrn, trivial = get_method("wrn").retrain(ctx), get_method("trivial").retrain(ctx)
    assert wrn.metrics["error_pct"] < 0.6 * trivial.metrics["error_pct"]
    assert Path(tmp_path / "checkpoint.pt").exists() and wrn.params > 0


def test_a_checkpoint_of_another_architecture_is_not_resumed(embedded, tmp_path, caplog):
    """A rerun search reuses checkpoint names (trial0.pt) for new candidates: they start over."""
    manifest = embedded.build("satellite")[1]
    ckpt = tmp_path / "trial0.pt"
    fit(_model(), manifest, CFG, seed=3, device="cpu", checkpoint=ckpt)
    seed_everything(0)
    other = create_model("wrn", get_task("satellite"), width=0.5)
    result = fit(other, manifest, CFG, seed=3, device="cpu", checkpoint=ckpt)
    assert len(result.history) == CFG.epochs and "another architecture" in caplog.text
    assert torch.load(ckpt, weights_only=True)["model"].keys() == other.state_dict().keys()


class _Bf16OnCpu(_Accelerator):
    """The CUDA accelerator's mixed precision, emulated on the CPU: training forwards under bf16 autocast."""

    def __init__(self, device: torch.device, spatial_dim: int, amp: bool = True):
        super().__init__(device, spatial_dim, amp)
        self.amp = amp


def test_evaluation_outputs_are_float32_when_training_runs_under_bf16(embedded):
    spec, manifest = get_task("darcy"), embedded.manifest("darcy")
    seed_everything(0)
    model = create_model("wrn", spec, width=0.25).eval()
    fit_splits = phase_splits(spec, "search")[0]
    batches = list(
        itertools.islice(make_loader(manifest, ("val",), 4, train=False, fit_splits=fit_splits), 2)
    )
    accel = _Bf16OnCpu(torch.device("cpu"), spec.dim)
    model = accel.model(model)  # the float32 reference runs in the loop's memory layout (channels-last)
    with torch.no_grad():
        reference = torch.cat([model(accel.batch(b)["x"]) for b in batches])
        with accel.autocast():
            mixed = torch.cat([model(accel.batch(b)["x"]) for b in batches])
    assert mixed.dtype == torch.bfloat16  # the emulation is real: training forwards are bf16
    assert not torch.equal(mixed.float(), reference)
    norm = manifest["normaliser"]
    decoded = spec.decode_output(reference, norm, fit_splits).numpy()
    for outer in (contextlib.nullcontext(), accel.autocast()):  # also inside a caller's autocast region
        with outer:
            out = predict(model, spec, batches, norm, fit_splits, accel)
        assert out["pred"].dtype == np.float32
        np.testing.assert_array_equal(out["pred"], decoded)


def test_fit_under_bf16_reports_float32_metrics(embedded, monkeypatch):
    """Search validation and the final report of a bf16-trained model equal a float32 evaluation."""
    manifest = embedded.build("darcy")[1]
    spec = get_task("darcy")
    monkeypatch.setattr(loop, "_Accelerator", _Bf16OnCpu)
    seed_everything(0)
    model = create_model("wrn", spec, width=0.25)
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=4, max_batches_per_epoch=2, max_eval_batches=2)
    result = fit(model, manifest, cfg, phase="search", device="cpu")
    fit_splits, eval_splits = phase_splits(spec, "search")
    fp32 = _Accelerator(torch.device("cpu"), spec.dim)
    expected = evaluate(model, spec, read_manifest(manifest), eval_splits, fit_splits, 4, fp32, 2)
    assert result.history[0]["val"] == expected == result.metrics
    bf16 = loop._Accelerator(torch.device("cpu"), spec.dim)
    monkeypatch.setattr(bf16, "evaluation", bf16.autocast)  # what evaluation did before: bf16 outputs
    assert evaluate(model, spec, read_manifest(manifest), eval_splits, fit_splits, 4, bf16, 2) != expected


def test_an_unwritable_checkpoint_folder_stops_the_run_before_training(embedded, tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the checkpoint's folder should be")

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(loop, "make_loader", no_training)
    ckpt = blocker / "run" / "checkpoint.pt"
    with pytest.raises(RuntimeError, match=r"checkpoint .*not_a_folder/run/checkpoint\.pt cannot be written"):
        fit(_model(), embedded.build("satellite")[1], CFG, device="cpu", checkpoint=ckpt)


def test_a_failed_checkpoint_write_names_the_file(embedded, tmp_path, monkeypatch):
    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", disk_full)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(
        RuntimeError, match=r"checkpoint .*run/checkpoint\.pt cannot be written .*file write failed"
    ):
        fit(_model(), embedded.build("satellite")[1], CFG, device="cpu", checkpoint=ckpt)
    assert list(ckpt.parent.iterdir()) == []  # neither the partial temporary file nor the probe is left
