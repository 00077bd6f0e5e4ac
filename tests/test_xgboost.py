"""XGBoost: per-pixel features of the dense tasks, outputs as logits, the device choice, and the method
learning a point task and a dense (per-pixel) task beyond the trivial baseline."""

import logging

import numpy as np
import pytest

from nb360.methods import RunContext, get_method
from nb360.methods import xgboost as xgb_method
from nb360.tasks import get_task


def test_pixel_features_hold_the_neighbourhood_coarse_context_and_position():
    x = np.arange(2 * 2 * 4 * 5, dtype=np.float32).reshape(2, 2, 4, 5)
    f = xgb_method.pixel_features(x, radius=1, scales=(2,))
    # 2 channels x 3 x 3, 2 channels x 3 x 3 of the 2x-pooled input, 2 positions; one row per pixel.
    assert f.shape == (2 * 4 * 5, 18 + 18 + 2)
    row = f[20 + 2 * 5 + 3]  # sample 1, pixel (2, 3)
    np.testing.assert_array_equal(row[:9].reshape(3, 3), x[1, 0, 1:4, 2:5])
    np.testing.assert_array_equal(row[9:18].reshape(3, 3), x[1, 1, 1:4, 2:5])
    np.testing.assert_allclose(row[-2:], [2 / 3, 3 / 4])
    corner = f[0, :9].reshape(3, 3)  # zero padding outside the image
    assert corner[0].tolist() == [0, 0, 0] and corner[1, 1] == x[0, 0, 0, 0]
    # The coarse context: the 2x2 mean around the pixel's cell, at the cell's centre of the 3 x 3 window.
    assert row[18 + 4] == x[1, 0, 2:4, 2:4].mean()


def test_pixel_features_in_one_dimension():
    f = xgb_method.pixel_features(np.arange(12, dtype=np.float32).reshape(1, 2, 6), radius=1, scales=())
    assert f.shape == (6, 2 * 3 + 1)
    assert f[0].tolist() == [0, 0, 1, 0, 6, 7, 0]


def test_outputs_are_logits_with_the_probabilities_ranking():
    softmax, labels = get_task("satellite"), get_task("deepsea")
    p = np.array([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]], dtype=np.float32)
    out = xgb_method.to_outputs(softmax, p)
    np.testing.assert_allclose(np.exp(out), p, rtol=1e-6)
    q = np.array([[0.1, 0.9], [0.5, 0.3]], dtype=np.float32)
    logits = xgb_method.to_outputs(labels, q)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), q, rtol=1e-5)
    assert out.dtype == logits.dtype == np.float32


def test_a_gpu_job_with_the_cpu_build_trains_on_the_cpu_and_says_so(caplog):
    import xgboost

    caplog.set_level(logging.WARNING)
    expected = "cuda:1" if xgboost.build_info().get("USE_CUDA") else "cpu"
    assert xgb_method.xgb_device("cuda:1") == expected
    assert xgb_method.xgb_device("cpu") == "cpu"
    if expected == "cpu":
        assert "pip install xgboost==" in caplog.text


@pytest.mark.parametrize("task", ["satellite", "darcy"])
def test_method_learns_beyond_trivial(embedded, tmp_path, task):
    ctx = RunContext(get_task(task), embedded.build(task)[1], 0, "smoke", "cpu", tmp_path)
    result = get_method("xgboost").retrain(ctx)
    trivial = get_method("trivial").retrain(ctx)
    metric = get_task(task).paper_metric
    assert result.metrics[metric] < 0.9 * trivial.metrics[metric]
    assert result.eval_splits == ("test",) and result.params == 0
    assert 1 <= result.selected_epoch <= len(result.history) <= xgb_method.SMOKE[task].rounds
    assert all(h["val_loss"] is not None for h in result.history)
    again = get_method("xgboost").retrain(ctx)
    assert again.metrics == result.metrics  # seeded: runs repeat


def test_psicov_predicts_only_each_proteins_block(monkeypatch):
    class Booster:
        def predict(self, features):  # the pixel's own first channel (the centre of its 3 x 3 window)
            return features[:, 4]

    spec = get_task("psicov")
    budget = xgb_method.XGBBudget(radius=1, scales=())
    x = np.ones((2, 2, 8, 8), dtype=np.float32)
    x[1] *= 2
    calls = []
    monkeypatch.setattr(
        xgb_method, "predict", lambda booster, f: (calls.append(len(f)), booster.predict(f))[1]
    )
    out = xgb_method._dense_predict(spec, Booster(), x, budget, lengths=np.array([3, 8]))
    assert calls == [9, 64] and out.shape == (2, 1, 8, 8)
    assert (out[0, 0, :3, :3] == 1).all() and (out[0, 0, 3:, :] == 0).all() and (out[1, 0] == 2).all()
