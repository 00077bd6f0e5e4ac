"""NB201 precompute (nb201.md 6.2): cell records on tiny synthetic shards, chunked runs that resume."""

import json
import math

import numpy as np
import pytest
import torch

from nb360.data.shards import MANIFEST_FORMAT, SplitData, read_manifest, write_manifest, write_split_shards
from nb360.nb201 import precompute, space
from nb360.tasks import get_task
from nb360.train.loop import FitHook, TrainConfig, make_scheduler

TIMES = ("train_time", "eval_time")
TINY = {"C": 2, "N": 1, "batch_size": 8}


def _manifest(tmp_path, task, sizes, make_items, normaliser=None):
    out = tmp_path / task
    splits = {name: SplitData(items=make_items(n, k)) for k, (name, n) in enumerate(sizes.items())}
    entries = {name: write_split_shards(out, task, name, data, 1000) for name, data in splits.items()}
    norm = normaliser(splits) if normaliser else {}
    manifest = {
        "format": MANIFEST_FORMAT,
        "task": task,
        "splits": entries,
        "normaliser": json.loads(json.dumps(norm, default=lambda a: a.tolist())),
    }
    return read_manifest(write_manifest(out, manifest))


@pytest.fixture(scope="module")
def nina(tmp_path_factory):
    def items(n, k):
        rng = np.random.default_rng(k)
        y = rng.integers(0, 18, n)
        x = rng.normal(0, 1, (n, 1, 16, 52)).astype(np.float32) + y[:, None, None, None] * 0.1
        return {"x": x.astype(np.float32), "y": y.astype(np.int64)}

    return _manifest(tmp_path_factory.mktemp("nina"), "ninapro", {"train": 20, "val": 6, "test": 10}, items)


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    def items(n, k):
        rng = np.random.default_rng(k)
        coeff = rng.choice([3.0, 12.0], (n, 1, 85, 85)).astype(np.float32)
        sol = (rng.random((n, 1, 85, 85)) + 0.5).astype(np.float32)
        return {"coeff": coeff, "sol": sol}

    spec = get_task("darcy")
    sizes = {"train": 4, "val": 2, "test": 3}
    return _manifest(tmp_path_factory.mktemp("darcy"), "darcy", sizes, items, spec.fit_normaliser)


def _without_times(records):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in records]


def test_per_step_cosine_reaches_zero_at_the_last_step():
    cfg = precompute.protocol("ninapro", epochs=3)
    settings = (cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.batch_size, cfg.lr_min)
    assert settings == (0.1, 0.9, True, 5e-4, 256, 0.0)
    assert precompute.protocol("darcy", 12).batch_size == 16
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(opt, cfg, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # NB201: lr at step k of K = 0.1 * (1 + cos(pi k / K)) / 2, so it falls within an epoch as well
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * k / 12)) for k in range(12)])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="cosine"):
        make_scheduler(opt, TrainConfig(epochs=2, lr=0.1, batch_size=2, per_step_schedule=True))


def test_a_ninapro_cell_record_follows_the_contract(nina):
    record = precompute.train_cell("ninapro", 9, nina, epochs=2, seed=3, device="cpu", **TINY)
    assert tuple(record) == precompute.RECORD_KEYS
    assert record["arch"] == space.arch_strings()[9] and record["task"] == "ninapro"
    assert (record["epochs"], record["seed"], record["index"]) == (2, 3, 9)
    for key in precompute.PER_EPOCH:
        assert len(record[key]) == 2 and all(math.isfinite(v) for v in record[key])
    # accuracies are percentages of whole samples: 10 test samples, 26 training samples per epoch
    for acc in record["test_acc"]:
        assert 0 <= acc <= 100 and acc * 10 / 100 == pytest.approx(round(acc / 10))
    for acc in record["train_acc"]:
        assert 0 <= acc <= 100 and acc * 26 / 100 == pytest.approx(round(acc * 26 / 100))
    assert all(t > 0 for t in record["train_time"] + record["eval_time"])
    assert record["params"] > 0 and record["flops"] > 0
    assert record["test_loss"][0] > 0  # cross-entropy (determinism: the resumed-chunk test)


def test_a_darcy_cell_records_relative_l2(darcy):
    record = precompute.train_cell("darcy", 0, darcy, epochs=1, seed=0, device="cpu", C=2, N=1, batch_size=4)
    rel, acc = record["test_loss"][0], record["test_acc"][0]
    assert rel > 0 and acc == pytest.approx(1 - rel)  # the stored "accuracy" is 1 - relative L2
    assert record["train_acc"][0] == pytest.approx(1 - record["train_loss"][0])
    assert record["flops"] > 0


def test_eval_scores_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    y = np.array([0, 0, 0])
    loss, acc = precompute.eval_scores("ninapro", {"pred": logits, "y": y})
    ce = -np.mean([np.log(np.exp(r[0]) / np.exp(r).sum()) for r in logits])
    assert loss == pytest.approx(ce) and acc == pytest.approx(200 / 3)
    pred, target = np.array([[[1.0, 1.0]]]), np.array([[[1.0, 2.0]]])
    rel, one_minus = precompute.eval_scores("darcy", {"pred": pred, "y": target})
    assert rel == pytest.approx(1 / math.sqrt(5)) and one_minus == pytest.approx(1 - 1 / math.sqrt(5))


def test_chunks_cover_the_space_in_a_few_hundred_jobs():
    parts = precompute.chunks(range(space.NUM_ARCHS))
    assert 100 <= len(parts) <= 500
    assert [i for p in parts for i in p] == list(range(space.NUM_ARCHS))
    assert precompute.chunks([5, 6, 7], 2) == [[5, 6], [7]]
    with pytest.raises(ValueError):
        precompute.chunks([1], 0)


class _Kill(FitHook):
    """Raises at the end of epoch ``epoch`` of cell ``index``'s run, as a kill would stop the job."""

    def __init__(self, epoch):
        self.epoch = epoch

    def epoch_end(self, epoch, record):
        if epoch == self.epoch:
            raise KeyboardInterrupt("killed")


def test_a_killed_chunk_resumes_at_its_first_unfinished_cell(nina, tmp_path, monkeypatch, caplog):
    cells, kw = [0, 9, 123], dict(epochs=2, seed=1, device="cpu", **TINY)
    done = tmp_path / "done.json"
    whole = precompute.run_chunk("ninapro", cells, nina, tmp_path / "whole", done_path=done, **kw)
    assert [r["index"] for r in whole] == cells
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == [f"cell-{i:05d}.json" for i in cells]
    assert precompute.read_records(tmp_path / "whole") == whole
    assert json.loads(done.read_text()) == whole

    # Killed in the second cell's second epoch (its first epoch is checkpointed).
    out, trained = tmp_path / "killed", []
    real_train_cell = precompute.train_cell

    def spy(task, index, *args, **kwargs):
        trained.append(index)
        if index == 9 and trained.count(9) == 1:
            kwargs["hooks"] = [_Kill(epoch=1)]
        return real_train_cell(task, index, *args, **kwargs)

    monkeypatch.setattr(precompute, "train_cell", spy)
    with pytest.raises(KeyboardInterrupt):
        precompute.run_chunk("ninapro", cells, nina, out, **kw)
    assert [p.name for p in out.glob("cell-*.json")] == ["cell-00000.json"]
    assert (out / ".cell-00009.ckpt").exists()
    first = (out / "cell-00000.json").read_text()

    with caplog.at_level("INFO"):
        again = precompute.run_chunk("ninapro", cells, nina, out, **kw)
    assert trained == [0, 9, 9, 123]  # cell 0 is not trained again
    assert "1 finished, starting at cell 9" in caplog.text
    assert "resuming ninapro" in caplog.text  # cell 9 from its checkpoint, after epoch 1
    assert (out / "cell-00000.json").read_text() == first
    assert not list(out.glob(".cell-*"))  # checkpoints removed once their records are written
    assert _without_times(again) == _without_times(whole)
    assert _without_times(precompute.read_records(out)) == _without_times(whole)


def test_records_of_other_settings_are_not_mixed(nina, tmp_path):
    kw = dict(seed=1, device="cpu", **TINY)
    precompute.run_chunk("ninapro", [9], nina, tmp_path, epochs=1, **kw)
    with pytest.raises(RuntimeError, match="another out_dir"):
        precompute.run_chunk("ninapro", [9], nina, tmp_path, epochs=2, **kw)
    (tmp_path / "cell-00123.json").write_text("{")
    with pytest.raises(RuntimeError, match="delete it"):
        precompute.run_chunk("ninapro", [123], nina, tmp_path, epochs=1, **kw)
    with pytest.raises(ValueError, match="task"):
        precompute.train_cell("darcy", 0, nina, epochs=1, **kw)
