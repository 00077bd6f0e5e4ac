"""Perceiver IO: the model (shapes, weight sharing, the factorised token projection) and the method (it
learns a tiny task, keeps the epoch of lowest validation loss, and resumes where it was stopped)."""

import pytest
import torch
from torch import nn

from nb360.methods import RunContext, get_method, perceiver_io
from nb360.models import create_model
from nb360.models.perceiver import TokenProjection, fourier_features, patchify
from nb360.tasks import get_task
from nb360.train import TrainConfig, fit, seed_everything


def test_token_projection_equals_layernorm_and_linear_of_the_concatenated_tokens():
    torch.manual_seed(0)
    norm = nn.LayerNorm(3 + 130)
    proj = TokenProjection(3, 130, 64, norm)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x, pos = torch.randn(2, 100, 3) * 3 + 1, fourier_features((10, 10), 32)
    expected = proj.linear(norm(torch.cat([x, pos.expand(2, -1, -1)], dim=-1)))
    torch.testing.assert_close(proj(x, pos), expected, atol=1e-5, rtol=1e-4)


def test_fourier_features_of_a_grid():
    f = fourier_features((4, 6), 32)
    assert f.shape == (24, 2 * (2 * 32 + 1))
    assert f[0, :2].tolist() == [-1.0, -1.0] and f[-1, :2].tolist() == [1.0, 1.0]
    assert f[1, 0] == -1.0 and f[1, 1] > -1.0  # row-major: the second position moves along the last axis
    assert fourier_features((46,), 32).shape == (46, 65)  # 1D: one axis of features


def test_patchify_stacks_each_block_as_channels_and_pads_the_ends():
    x = torch.arange(2 * 3 * 5 * 7.0).reshape(2, 3, 5, 7)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 3 * 4, 3, 4)
    # block (1, 2), channel 1, offset (1, 0) in the block: pixel (3, 4) of channel 1
    assert tokens[0, 1 * 4 + 1 * 2 + 0, 1, 2] == x[0, 1, 3, 4]
    assert tokens[1, 0, 2, 3] == x[1, 0, 4, 6]  # the last block starts at the last pixel...
    assert tokens[1, 1, 2, 3] == 0 and tokens[1, 2, 2, 3] == 0  # ...and is zero beyond the edges
    line = patchify(torch.arange(10.0).reshape(1, 1, 10), 4)
    assert line[0, :, 2].tolist() == [8.0, 9.0, 0.0, 0.0]
    assert patchify(x, 1) is x


def test_patch_tokens_and_full_resolution_pixel_queries():
    model = create_model("perceiver_io", get_task("cifar100"), patch=4)
    assert model.pos.shape[0] == 8 * 8 and model.first.cross.kv_proj.in_channels == 3 * 16
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    dense = create_model("perceiver_io", get_task("darcy"), decoder="pixel", patch=5, latent_channels=32)
    assert dense.pos.shape[0] == 17 * 17 and dense.pixel_pos.shape[0] == 85 * 85
    assert dense(torch.randn(2, 3, 85, 85)).shape == (2, 1, 85, 85)


@pytest.mark.parametrize(
    ("task", "decoder", "shape"),
    [("satellite", "query", (24,)), ("ninapro", "query", (18,)), ("darcy", "pixel", (1, 85, 85))],
)
def test_output_shapes(task, decoder, shape):
    spec = get_task(task)
    model = create_model("perceiver_io", spec, decoder=decoder)
    assert model(torch.randn(2, *spec.input_shape)).shape == (2, *shape)


def test_the_original_sizes_and_the_shared_encoder_layer():
    model = create_model("perceiver_io", get_task("cifar100"))
    assert model.latents.shape == (32, 128) and model.query.shape == (1, 128)
    assert model.repeats == 2  # encoder layers 2 and 3: one module applied twice
    assert len(model.first.blocks) == len(model.shared.blocks) == 3
    assert model.head.out_features == 100
    # The original's dense head: one query, a linear map to the whole field.
    dense = create_model("perceiver_io", get_task("darcy"))
    assert dense.head.out_features == 85 * 85 and dense.pixel_decoder is None
    with pytest.raises(ValueError, match="pixel decoder needs a dense output"):
        create_model("perceiver_io", get_task("cifar100"), decoder="pixel")


def test_shared_layer_is_applied_with_the_same_weights():
    seed_everything(0)
    model = create_model("perceiver_io", get_task("satellite"), num_layers=3)
    calls = []
    model.shared.register_forward_hook(lambda *_: calls.append(1))
    model(torch.randn(2, 1, 46))
    assert len(calls) == 2
    from nb360.models.perceiver import EncoderLayer

    assert sum(isinstance(m, EncoderLayer) for m in model.modules()) == 2  # three layers, two modules


def test_method_learns_satellite_beyond_trivial_and_reports_its_best_epoch(embedded, tmp_path):
    manifest = embedded.build("satellite")[1]
    ctx = RunContext(get_task("satellite"), manifest, 0, "smoke", "cpu", tmp_path)
    result = get_method("perceiver_io").retrain(ctx)
    trivial = get_method("trivial").retrain(ctx)
    assert result.metrics["error_pct"] < 0.9 * trivial.metrics["error_pct"]
    losses = [h["val_loss"] for h in result.history]
    assert result.selected_epoch == 1 + losses.index(min(losses))
    assert result.eval_splits == ("test",)


def test_keep_best_trains_on_train_selects_on_val_and_resumes_exactly(embedded, tmp_path):
    manifest = embedded.build("satellite")[1]
    cfg = perceiver_io.train_config("satellite", perceiver_io.SMOKE["satellite"], smoke=True)
    cfg = TrainConfig(**{**cfg.__dict__, "epochs": 3, "max_batches_per_epoch": 3})

    def model():
        seed_everything(0)
        return create_model("perceiver_io", get_task("satellite"), num_layers=2, self_attention_layers=1)

    whole = fit(model(), manifest, cfg, seed=1, device="cpu", checkpoint=tmp_path / "a.pt")
    part = fit(
        model(), manifest, cfg, seed=1, device="cpu", checkpoint=tmp_path / "b.pt", stop_after_epochs=2
    )
    assert part.metrics == {} and len(part.history) == 2
    resumed = fit(model(), manifest, cfg, seed=1, device="cpu", checkpoint=tmp_path / "b.pt")
    assert resumed.metrics == whole.metrics and resumed.selected_epoch == whole.selected_epoch
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in whole.history]
    with pytest.raises(ValueError, match="retrain"):
        fit(model(), manifest, cfg, phase="search", device="cpu")


def test_adamw_and_the_constant_schedule():
    cfg = perceiver_io.train_config("cifar100", perceiver_io.PAPER, smoke=False)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule, cfg.epochs) == (
        "adamw",
        1e-3,
        0.01,
        "constant",
        200,
    )
    assert cfg.keep_best_val_loss and cfg.batch_size == 128 and cfg.max_eval_batches is None


def test_smoke_runs_read_patches_and_select_point_tasks_on_the_whole_of_val():
    point = perceiver_io.train_config("cifar100", perceiver_io.SMOKE["cifar100"], smoke=True)
    dense = perceiver_io.train_config("darcy", perceiver_io.SMOKE["darcy"], smoke=True)
    assert point.max_eval_batches is None and dense.max_eval_batches == 2
    assert set(perceiver_io.SMOKE_PATCH) == set(perceiver_io.SMOKE) == set(perceiver_io.PAPER_BATCH)
