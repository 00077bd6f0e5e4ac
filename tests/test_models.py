"""The model registry, the shared 1D/2D layers, the WRN / 1D ResNet baselines and the trivial baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nb360.data.loader import make_loader
from nb360.models import (
    ResNet1D,
    TrivialModel,
    WideResNet,
    create_model,
    fit_trivial,
    layers,
    list_models,
    output_shape,
    register_model,
    registry,
)
from nb360.tasks import darcy, get_task, list_tasks

# Trainable parameters of the official baselines (nb360.md 3.1, instantiated from the benchmark's code at
# 587bb09). Dense: without the input batch norm and out_conv the original never used in its forward pass.
OFFICIAL_PARAMS = {
    "cifar100": 2_772_020,
    "spherical": 2_772_020,
    "ninapro": 2_750_658,
    "fsd50k": 2_797_432,  # the original's adaptive-pool variant: the same network as the global-pool WRN
    "darcy": 2_746_577,
    "psicov": 2_754_353,
    "cosmic": 2_746_289,
    "ecg": 504_260,
    "satellite": 506_840,
    "deepsea": 510_116,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------- registry


BUILTIN = ["resnet1d", "trivial", "wrn", "wrn_dense", "wrn_point"]


def test_builtin_models_are_registered() -> None:
    names = list_models()
    assert set(BUILTIN) <= set(names) and names == sorted(names)


def test_unknown_model_names_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="unknown model 'nope'") as err:
        create_model("nope", get_task("cifar100"))
    assert all(name in str(err.value) for name in BUILTIN)


def test_none_kwargs_fall_back_to_defaults_and_unknown_kwargs_fail() -> None:
    spec = get_task("ninapro")
    model = create_model("wrn_point", spec, widen=None, depth=None, dropout=None)
    assert n_params(model) == OFFICIAL_PARAMS["ninapro"]
    with pytest.raises(TypeError):
        create_model("wrn_point", spec, width=2)


def test_register_and_create_a_new_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))  # leave the real registry untouched

    @register_model("linear_probe")
    def linear_probe(spec, *, bias: bool = True) -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(spec.input_shape), spec.num_outputs, bias=bias)
        )

    spec = get_task("satellite")
    model = create_model("linear_probe", spec, bias=None)
    assert model[1].bias is not None
    assert model(torch.zeros(2, *spec.input_shape)).shape == (2, 24)
    assert "linear_probe" in list_models()
    with pytest.raises(ValueError, match="registered twice"):
        register_model("linear_probe")(linear_probe)


@pytest.mark.parametrize(
    ("name", "task", "message"),
    [
        ("wrn_point", "darcy", "dense"),
        ("wrn_dense", "cifar100", "single_label"),
        ("wrn_point", "ecg", "2D network"),
        ("resnet1d", "cifar100", "1D network"),
    ],
)
def test_variant_refuses_the_wrong_task(name: str, task: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(name, get_task(task))


def test_wrn_dispatches_on_the_task() -> None:
    assert isinstance(create_model("wrn", get_task("ecg"), widen=1), ResNet1D)
    point = create_model("wrn", get_task("ninapro"), widen=1)
    dense = create_model("wrn", get_task("cosmic"), widen=1)
    assert isinstance(point, WideResNet) and not point.dense
    assert isinstance(dense, WideResNet) and dense.dense


def test_wrn_widen_scales_the_1d_resnet_and_rejects_2d_only_settings() -> None:
    spec = get_task("ecg")
    assert create_model("wrn", spec).head.in_features == 128
    assert create_model("wrn", spec, widen=1).head.in_features == 32  # widen / 4 of 64/128/128
    assert create_model("wrn", spec, dropout=0.0).head.in_features == 128
    with pytest.raises(ValueError, match="no depth or dropout"):
        create_model("wrn", spec, depth=10)
    with pytest.raises(ValueError, match="no depth or dropout"):
        create_model("wrn", spec, dropout=0.3)


def test_wrn_width_multiplier_sizes_both_families() -> None:
    assert create_model("wrn", get_task("deepsea"), width=0.5).head.in_features == 64
    assert create_model("wrn", get_task("cifar100"), width=0.25).head.in_features == 64  # widen 1
    assert create_model("wrn", get_task("darcy"), width=0.5).head.in_channels == 128  # widen 2
    assert n_params(create_model("wrn", get_task("psicov"), width=1.0)) == OFFICIAL_PARAMS["psicov"]
    with pytest.raises(ValueError, match="not both"):
        create_model("wrn", get_task("cifar100"), widen=1, width=0.25)


# ------------------------------------------------------------------------------------ parameter counts


@pytest.mark.parametrize("task", list(OFFICIAL_PARAMS))
def test_parameter_counts_match_the_official_baselines(task: str) -> None:
    assert n_params(create_model("wrn", get_task(task))) == OFFICIAL_PARAMS[task]


def test_wrn_depth_and_widen_change_the_network() -> None:
    spec = get_task("cifar100")
    # WRN-10-1: stem 16*27, groups 16/32/64 with one block each, BN 64 and a 64 -> 100 head.
    small = create_model("wrn_point", spec, depth=10, widen=1)
    assert len(small.groups) == 3 and all(len(g) == 1 for g in small.groups)
    assert small.head.in_features == 64
    with pytest.raises(ValueError, match="6n \\+ 4"):
        create_model("wrn_point", spec, depth=12)


# ------------------------------------------------------------------------------------- output shapes


@pytest.mark.parametrize("task", list_tasks())
def test_every_task_gets_outputs_of_its_shape(task: str) -> None:
    spec = get_task(task)
    batch = 1 if spec.output_kind == "dense" else 2
    x = torch.randn(batch, *spec.input_shape)
    torch.manual_seed(0)
    model = create_model("wrn", spec, widen=1).eval()
    with torch.no_grad():
        out = model(x)
        trivial = create_model("trivial", spec)(x)
    assert out.shape == (batch, *output_shape(spec))
    assert trivial.shape == out.shape
    assert torch.isfinite(out).all()


def test_output_shape_of_point_and_dense_tasks() -> None:
    assert output_shape(get_task("fsd50k")) == (200,)
    assert output_shape(get_task("psicov")) == (1, 128, 128)


def test_spherical_pool_is_global() -> None:
    # The original averaged only the top-left 8x8 of the 15x15 final map, whose receptive field ends at input
    # row/column 54, so the bottom-right 5x5 corner of the 60x60 input never reached the output; here it must.
    torch.manual_seed(0)
    model = create_model("wrn", get_task("spherical"), widen=1).eval()
    x = torch.randn(1, 3, 60, 60)
    y = x.clone()
    y[..., 55:, 55:] = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(y))


def test_point_wrn_accepts_any_input_size() -> None:
    model = create_model("wrn_point", get_task("ninapro"), widen=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 52)).shape == (2, 18)
        assert model(torch.randn(1, 1, 9, 23)).shape == (1, 18)


def test_dense_wrn_keeps_resolution_and_is_per_pixel() -> None:
    spec = get_task("darcy")
    model = create_model("wrn_dense", spec, depth=10, widen=1).eval()
    assert all(
        isinstance(m, nn.Conv2d) and m.stride == (1, 1) for m in model.modules() if isinstance(m, nn.Conv2d)
    )
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(model.head, nn.Conv2d) and model.head.kernel_size == (1, 1)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 21, 17)).shape == (1, 1, 21, 17)


def test_dropout_acts_between_the_convolutions_in_training_only() -> None:
    torch.manual_seed(0)
    model = create_model("wrn_point", get_task("ninapro"), depth=10, widen=1, dropout=0.5)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5, 0.5]
    x = torch.randn(2, 1, 16, 52)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# ------------------------------------------------------------------------------------ initialisation


def test_init_is_deterministic_under_manual_seed() -> None:
    def build(seed: int, name: str, task: str) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return create_model(name, get_task(task), widen=1).state_dict()

    for name, task in (("wrn", "cifar100"), ("wrn", "cosmic"), ("wrn", "deepsea")):
        a, b, c = build(0, name, task), build(0, name, task), build(1, name, task)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert any(not torch.equal(a[k], c[k]) for k in a)


def test_wrn_initialisation_follows_the_original() -> None:
    torch.manual_seed(0)
    model = create_model("wrn", get_task("cifar100"))
    big = model.groups[2][1].conv2  # 256 -> 256, 3x3: fan_out 2304
    assert float(big.weight.detach().std()) == pytest.approx(math.sqrt(2 / 2304), rel=0.02)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    assert torch.all(model.head.bias == 0)
    dense = create_model("wrn", get_task("darcy"))
    # The per-pixel head keeps nn.Linear's default weights (bound 1/sqrt(256)), not the conv init.
    assert float(dense.head.weight.detach().abs().max()) <= 1 / 16
    assert torch.all(dense.head.bias == 0)


# ------------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5, 8])
def test_same_padding_keeps_length_tf_style(kernel: int) -> None:
    torch.manual_seed(0)
    layer = layers.conv(1, 2, 3, kernel, padding="same", bias=True)
    x = torch.randn(2, 2, 11)
    out = layer(x)
    assert out.shape == (2, 3, 11)
    inner = layer[-1] if isinstance(layer, nn.Sequential) else layer
    assert isinstance(layer, nn.Sequential) == (kernel % 2 == 0)  # only even kernels pad asymmetrically
    left, right = (kernel - 1) // 2, kernel // 2  # TensorFlow: the extra element on the right
    ref = F.conv1d(F.pad(x, [left, right]), inner.weight, inner.bias)
    assert torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize(
    ("length", "kernel", "stride"), [(11, 16, 2), (12, 16, 2), (10, 3, 3), (9, 2, 2), (7, 5, 4)]
)
def test_strided_same_padding_gives_ceil_length_over_stride_outputs(
    length: int, kernel: int, stride: int
) -> None:
    left, right = layers.same_padding(kernel, stride=stride, length=length)
    assert 0 <= right - left <= 1  # the extra element on the right
    out = F.conv1d(torch.zeros(1, 1, length + left + right), torch.zeros(1, 1, kernel), stride=stride)
    assert out.shape[-1] == -(-length // stride)
    assert left + right == max(0, (-(-length // stride) - 1) * stride + kernel - length)  # TensorFlow's rule
    with pytest.raises(ValueError, match="give length"):
        layers.same_padding(kernel, stride=stride)


def test_same_padding_in_2d_and_errors() -> None:
    layer = layers.conv(2, 1, 1, 4, padding="same")
    assert layer(torch.randn(1, 1, 7, 6)).shape == (1, 1, 7, 6)
    with pytest.raises(ValueError, match="stride 1"):
        layers.conv(1, 1, 1, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="dim must be 1 or 2"):
        layers.conv(3, 1, 1, 3)


def test_layers_build_the_module_of_each_dimension() -> None:
    for dim, shape in ((1, (2, 4, 12)), (2, (2, 4, 12, 10))):
        x = torch.randn(*shape)
        conv = layers.conv(dim, 4, 6, 3, stride=2)
        assert conv(x).shape == (2, 6, *(math.ceil(s / 2) for s in shape[2:]))
        assert layers.batch_norm(dim, 4)(x).shape == x.shape
        assert layers.max_pool(dim, 3, 1, 1)(x).shape == x.shape
        assert layers.avg_pool(dim, 3, 1, 1, count_include_pad=False)(x).shape == x.shape
        assert layers.adaptive_avg_pool(dim, 1)(x).flatten(1).shape == (2, 4)
        assert torch.allclose(layers.global_avg_pool(x), layers.adaptive_avg_pool(dim, 1)(x).flatten(1))
        assert torch.allclose(layers.global_avg_pool(x), x.mean(dim=tuple(range(2, x.dim()))))
    assert isinstance(layers.batch_norm(1, 3), nn.BatchNorm1d)
    assert isinstance(layers.conv(2, 1, 1, 3), nn.Conv2d)


@pytest.mark.parametrize("length", [7, 46, 1000])
def test_resnet1d_keeps_length_until_the_pool(length: int) -> None:
    model = ResNet1D(4, 36, width=0.25).eval()
    feats = model.blocks(torch.randn(2, 4, length))
    assert feats.shape == (2, 32, length)
    assert model(torch.randn(2, 4, length)).shape == (2, 36)


def test_resnet1d_shortcuts_only_where_channels_change() -> None:
    model = ResNet1D(1, 4)
    assert [b.shortcut is not None for b in model.blocks] == [True, True, False]
    kernels = [m.kernel_size[0] for m in model.blocks[0].layers.modules() if isinstance(m, nn.Conv1d)]
    assert kernels == [8, 5, 3]


# -------------------------------------------------------------------------------------- trivial model


def test_trivial_single_label_is_one_hot_of_the_majority() -> None:
    spec = get_task("ninapro")
    batches = [{"x": torch.zeros(3, 1, 16, 52), "y": torch.tensor([4, 7, 7])}, {"y": torch.tensor([4, 7, 1])}]
    model = fit_trivial(spec, batches)
    out = model(torch.zeros(5, 1, 16, 52))
    expected = torch.zeros(18)
    expected[7] = 1.0
    assert out.shape == (5, 18) and torch.equal(out, expected.expand(5, 18))
    # A tie goes to the lowest class index, deterministically.
    tie = fit_trivial(spec, [{"y": torch.tensor([9, 3, 9, 3])}])
    assert int(tie.constant.argmax()) == 3 and float(tie.constant.sum()) == 1.0


def test_trivial_rejects_bad_labels_and_empty_data() -> None:
    spec = get_task("ecg")
    with pytest.raises(ValueError, match="class labels"):
        fit_trivial(spec, [{"y": torch.tensor([0, 4])}])
    with pytest.raises(ValueError, match="no training samples"):
        fit_trivial(spec, [])
    with pytest.raises(ValueError, match="dense regression"):
        fit_trivial(spec, [{"y": torch.tensor([0])}], to_output_space=lambda f: f)


def test_trivial_multi_label_predicts_the_prior_logit() -> None:
    spec = get_task("deepsea")
    y = torch.zeros(8, 36)
    y[:2, 0] = 1  # prior 0.25
    y[:, 1] = 1  # always positive
    model = fit_trivial(spec, [{"y": y[:5]}, {"y": y[5:]}])  # label 2..35: never positive
    out = model(torch.zeros(3, 4, 1000))
    assert out.shape == (3, 36) and torch.isfinite(out).all()
    prob = torch.sigmoid(out[0].double())
    assert float(prob[0]) == pytest.approx(0.25, rel=1e-6)
    assert float(prob[1]) > 0.999 and float(prob[2]) < 1e-3


def test_trivial_dense_regression_is_the_masked_mean_field() -> None:
    spec = get_task("psicov")
    y1, y2 = torch.full((1, 1, 128, 128), 4.0), torch.full((1, 1, 128, 128), 10.0)
    m1, m2 = torch.ones(1, 1, 128, 128, dtype=torch.bool), torch.ones(1, 1, 128, 128, dtype=torch.bool)
    m2[..., :64, :] = False  # second sample counts only in the bottom half
    m1[..., -1, -1] = m2[..., -1, -1] = False  # no sample covers this pixel
    y2[..., :64, :] = float("nan")  # masked-out targets do not leak in, even NaN
    model = fit_trivial(spec, [{"y": y1, "mask": m1}, {"y": y2, "mask": m2}])
    field = model.constant[0]
    assert float(field[0, 0]) == pytest.approx(4.0)
    assert float(field[100, 0]) == pytest.approx(7.0)
    n1, n2 = 128 * 128 - 1, 64 * 128 - 1  # counted pixels of each sample
    assert float(field[-1, -1]) == pytest.approx((4.0 * n1 + 10.0 * n2) / (n1 + n2))
    assert model(torch.zeros(2, 57, 128, 128)).shape == (2, 1, 128, 128)
    with pytest.raises(ValueError, match="spatial size"):
        model(torch.zeros(1, 57, 512, 512))


def test_trivial_dense_regression_in_the_network_output_space() -> None:
    # Darcy: y is raw, the network's output is decoded before the loss; the trivial field is mapped into
    # the output space by the inverse of that decoding, here a stand-in affine normaliser.
    spec = get_task("darcy")
    y = torch.arange(2 * 85 * 85, dtype=torch.float32).reshape(2, 1, 85, 85)
    raw = fit_trivial(spec, [{"y": y}])
    encoded = fit_trivial(spec, [{"y": y}], to_output_space=lambda f: (f - 3.0) / 2.0)
    assert torch.allclose(raw.constant, y.mean(dim=0))
    assert torch.allclose(encoded.constant, (raw.constant - 3.0) / 2.0)
    with pytest.raises(ValueError, match="returned shape"):
        fit_trivial(spec, [{"y": y}], to_output_space=lambda f: f[0])


def test_trivial_cosmic_predicts_no_cosmic_ray() -> None:
    spec = get_task("cosmic")
    y = torch.zeros(2, 1, 128, 128)
    y[0, 0, :8, :8] = 1.0  # 64 of the counted pixels are positive
    mask = torch.ones_like(y)
    mask[1, 0, :8, :8] = 0.0  # ignored pixels do not count
    model = fit_trivial(spec, [{"y": y, "mask": mask}])
    prior = 64 / (2 * 128 * 128 - 64)
    assert torch.allclose(model.constant, torch.full((1, 128, 128), math.log(prior / (1 - prior))))
    out = model(torch.zeros(2, 1, 128, 128))
    assert not (out > 0.5).any()  # the metric's threshold on the raw logit: all predicted negative


def test_trivial_state_dict_round_trips_through_the_registry() -> None:
    spec = get_task("satellite")
    fitted = fit_trivial(spec, [{"y": torch.tensor([3, 3, 5])}])
    fresh = create_model("trivial", spec)
    assert isinstance(fresh, TrivialModel) and torch.all(fresh.constant == 0)
    assert n_params(fresh) == 0
    fresh.load_state_dict(fitted.state_dict())
    assert torch.equal(fresh(torch.zeros(1, 1, 46)), fitted(torch.zeros(1, 1, 46)))
    assert int(fresh(torch.zeros(1, 1, 46)).argmax()) == 3


def test_trivial_output_is_not_shared_between_calls() -> None:
    model = fit_trivial(get_task("satellite"), [{"y": np.array([1, 1])}])
    out = model(torch.zeros(2, 1, 46))
    out += 1  # a caller that modifies the output must not change the model
    assert float(model.constant.sum()) == 1.0


# ------------------------------------------------------------------- trivial model on the embedded shards


def test_trivial_fits_loader_batches_of_a_classification_task(embedded) -> None:
    manifest = embedded.manifest("ninapro")
    labels = np.concatenate([b["y"].numpy() for b in make_loader(manifest, ["train"], 64, train=False)])
    model = fit_trivial(get_task("ninapro"), make_loader(manifest, ["train"], 64, train=True, seed=0))
    assert int(model.constant.argmax()) == int(np.argmax(np.bincount(labels, minlength=18)))


def test_trivial_darcy_is_decoded_like_a_network(embedded) -> None:
    # The loader yields raw solutions; the training loop decodes network outputs with the training
    # normaliser. Mapped with encode_y, the trivial output decodes to the training-mean solution.
    manifest = embedded.manifest("darcy")
    normaliser, fit = manifest["normaliser"], ("train",)
    spec = get_task("darcy")
    batches = list(make_loader(manifest, ["train"], 8, train=True, seed=0, fit_splits=fit))
    model = fit_trivial(spec, batches, to_output_space=lambda f: darcy.encode_y(f, normaliser, fit))
    out = model(batches[0]["x"])
    # The pointwise normaliser's mean is the same training mean, so in normalised units the field is ~0.
    assert float(out.abs().max()) < 1e-3
    decoded = darcy.decode_output(out, normaliser, fit)
    mean = torch.cat([b["y"] for b in batches]).double().mean(dim=0)
    assert torch.allclose(decoded[0].double(), mean, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_a_reaching_convolution_is_the_full_kernels_convolution(dim, stride):
    """A kernel whose dilated taps overhang a small map applies only the taps that reach it: outputs and
    gradients equal the full kernel's in float64 (taps cut on the short axis, kept on the long one)."""
    from nb360.models.layers import ReachingConv1d, ReachingConv2d, conv

    torch.manual_seed(0)
    full = conv(dim, 3, 4, 9, stride=stride, dilation=5).double()
    reaching = conv(dim, 3, 4, 9, stride=stride, dilation=5, reaching=True).double()
    assert isinstance(reaching, (ReachingConv1d, ReachingConv2d)) and type(full) is not type(reaching)
    reaching.load_state_dict(full.state_dict())
    x = torch.randn(2, 3, *((7, 30) if dim == 2 else (11,)), dtype=torch.float64)
    outs = [m(x) for m in (full, reaching)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    grads = [
        torch.autograd.grad(o.square().sum(), m.weight)[0]
        for o, m in zip(outs, (full, reaching), strict=True)
    ]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)
    short_axis = 2  # the first spatial axis: 7 or 11 long, where taps 2 or 3 steps of 5 out read only padding
    assert grads[1].select(short_axis, 0).abs().sum() == 0 and grads[1].select(short_axis, 4).abs().sum() > 0


def test_only_chosen_kernels_are_built_as_reaching_convolutions():
    from nb360.models.layers import ReachingConv1d, ReachingConv2d

    reaching = (ReachingConv1d, ReachingConv2d)
    for task in ("cifar100", "satellite"):
        spec = get_task(task)
        default = create_model("wrn", spec, width=0.25)
        assert not any(isinstance(m, reaching) for m in default.modules())
        convs = [(9, 7)] + [(3, 1)] * (len(default.searched_convs()) - 1)
        chosen = create_model("wrn", spec, width=0.25, convs=convs)
        assert sum(isinstance(m, reaching) for m in chosen.modules()) == 1
