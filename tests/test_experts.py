"""The expert networks (nb360.models.experts): each one's output shape on its task, one training step on a
tiny batch (every parameter gets a finite gradient), and the structure the originals define."""

import pytest
import torch
import torch.nn.functional as F

from nb360.models import create_model
from nb360.models.experts.fno import SpectralConv2d
from nb360.models.experts.resnet1d_ecg import BasicBlock
from nb360.tasks import get_task

# (model, task, keyword arguments that shrink it for the test, or {} for the original's size)
EXPERTS = [
    ("expert_densenet_bc", "cifar100", {"depth": 40, "growth": 12}),
    ("expert_s2cnn", "spherical", {"features": (4, 6, 8), "degrees": (4, 3, 2), "mlp": (16,)}),
    ("expert_attention_mlp", "ninapro", {}),
    ("expert_vgglike", "fsd50k", {}),
    ("expert_fno", "darcy", {"width": 8}),
    ("expert_pdnet", "psicov", {}),
    ("expert_deepcr_unet", "cosmic", {"hidden": 8}),
    ("expert_resnet1d_ecg", "ecg", {"base_filters": 32, "groups": 8, "blocks": 14}),
    ("expert_rocket", "satellite", {"num_kernels": 50}),
    ("expert_deepsea", "deepsea", {"width": 0.1}),
]


def _loss(spec, out: torch.Tensor) -> torch.Tensor:
    if spec.output_kind == "single_label":
        return F.cross_entropy(out, torch.arange(len(out)) % spec.num_outputs)
    if spec.output_kind == "multi_label":
        return F.binary_cross_entropy_with_logits(out, (torch.rand_like(out) < 0.2).float())
    return F.mse_loss(out, torch.rand_like(out))


@pytest.mark.parametrize(("name", "task", "kwargs"), EXPERTS)
def test_expert_output_shape_and_one_training_step(name, task, kwargs):
    torch.manual_seed(0)
    spec = get_task(task)
    model = create_model(name, spec, **kwargs)
    x = torch.randn(3, *spec.input_shape)
    out = model(x)
    expected = (
        (3, spec.num_outputs, *spec.input_shape[1:]) if spec.output_kind == "dense" else (3, spec.num_outputs)
    )
    assert out.shape == expected
    loss = _loss(spec, out)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_densenet_bc_100_has_three_dense_blocks_of_16_bottlenecks_and_halves_channels():
    from nb360.models.experts.densenet import Bottleneck

    model = create_model("expert_densenet_bc", get_task("cifar100"))
    assert sum(isinstance(m, Bottleneck) for m in model.modules()) == 48
    # 48 channels + 16 x 24, halved (216), + 16 x 24 (600), halved (300), + 16 x 24 = 684 features
    assert model.head.in_features == 684
    with pytest.raises(ValueError, match="6n \\+ 4"):
        create_model("expert_densenet_bc", get_task("cifar100"), depth=101)


def test_fno_spectral_convolution_keeps_only_the_low_modes():
    torch.manual_seed(0)
    layer = SpectralConv2d(1, 1, modes=4)
    with torch.no_grad():
        for w in (layer.weight_pos, layer.weight_neg):
            w.fill_(1.0)  # identity on the kept modes
    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    low = torch.cos(2 * torch.pi * (2 * i + 3 * j) / 32)[None, None]
    high = torch.cos(2 * torch.pi * 9 * j / 32)[None, None]
    torch.testing.assert_close(layer(low), low, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer(high), torch.zeros_like(high), atol=1e-5, rtol=0)
    torch.testing.assert_close(layer(low + high), low, atol=1e-5, rtol=0)


def test_fno_paper_size_runs_at_full_resolution():
    model = create_model("expert_fno", get_task("darcy"))
    assert model(torch.randn(1, 3, 85, 85)).shape == (1, 1, 85, 85)
    assert len(model.spectral) == 4 and model.spectral[0].weight_pos.shape == (32, 32, 12, 12)


def test_resnet1d_ecg_strides_every_sixth_block_and_doubles_filters_every_twelfth():
    model = create_model("expert_resnet1d_ecg", get_task("ecg"))
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 48
    assert [i for i, b in enumerate(blocks) if b.stride == 2] == [1, 7, 13, 19, 25, 31, 37, 43]
    assert [b.out_channels for b in blocks[::12]] == [128, 256, 512, 1024]
    assert model.head.in_features == 1024
    assert model.blocks(model.stem(torch.randn(1, 1, 1000))).shape == (1, 1024, 4)  # 1000 / 2^8, rounded up


def test_deepsea_cnn_layer_sizes():
    model = create_model("expert_deepsea", get_task("deepsea"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [320, 480, 960] and all(c.kernel_size == (8,) for c in convs)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(960 * 62, 925), (925, 36)]


def test_rocket_features_are_sktimes_transform_cached_by_series():
    from sktime.transformations.panel.rocket import Rocket

    model = create_model("expert_rocket", get_task("satellite"), num_kernels=20, seed=5, cache_size=6)
    x = torch.randn(4, 1, 46)
    reference = Rocket(num_kernels=20, random_state=5).fit(x.numpy()).transform(x.numpy())
    torch.testing.assert_close(model.features(x), torch.tensor(reference.to_numpy(), dtype=torch.float32))
    calls = []
    transform = model.transform.transform
    model.transform.transform = lambda series: calls.append(len(series)) or transform(series)
    y = torch.cat([x[2:], torch.randn(3, 1, 46)])  # two seen series, three new
    again = model.features(y)
    assert calls == [3]
    torch.testing.assert_close(again[:2], model.features(x)[2:])
    assert len(model._cache) == 6  # least recently used series dropped beyond cache_size
    assert calls == [3, 1]  # of x only x[0], the least recently used, was dropped


def test_rocket_kernels_follow_the_seed_and_normalisation_is_state():
    spec = get_task("satellite")
    x = torch.randn(16, 1, 46)
    torch.manual_seed(1)
    a = create_model("expert_rocket", spec, num_kernels=30)
    torch.manual_seed(1)
    b = create_model("expert_rocket", spec, num_kernels=30)
    c = create_model("expert_rocket", spec, num_kernels=30)
    assert torch.equal(a.features(x), b.features(x)) and not torch.equal(a.features(x), c.features(x))
    a.set_normalisation(x)
    f = (a.features(x) - a.mean) / a.std
    varying = a.std > 1e-4
    torch.testing.assert_close(f.mean(0), torch.zeros(60), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        f.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-3, rtol=0
    )
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x))


def test_so3_grid_is_e3nns_built_from_per_axis_rotations():
    from e3nn.o3 import SO3Grid as E3nnGrid

    from nb360.models.experts.s2cnn import SO3Grid, so3_dim

    ours, theirs = SO3Grid(3, 4), E3nnGrid(3, 4)
    torch.testing.assert_close(ours.D, theirs.D, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.qw, theirs.qw, atol=1e-9, rtol=1e-5)
    coeffs = torch.randn(2, so3_dim(3))
    torch.testing.assert_close(ours.from_grid(ours.to_grid(coeffs)), coeffs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.to_grid(coeffs), theirs.to_grid(coeffs), atol=1e-4, rtol=0)


def test_s2cnn_is_invariant_to_rotating_the_sphere_about_its_axis():
    torch.manual_seed(0)
    spec = get_task("spherical")
    model = create_model("expert_s2cnn", spec, features=(4, 6, 8), degrees=(4, 3, 2), mlp=(16,)).eval()
    x = torch.randn(2, *spec.input_shape)
    # a quarter turn about the polar axis: alpha (the columns) shifted by 15 of 60, which is also a whole
    # number of steps of every SO(3) grid (4r alpha values): every layer is then exactly equivariant
    turned = torch.roll(x, 15, dims=-1)
    with torch.no_grad():
        out, out_turned = model(x), model(turned)
        shifted_rows = model(torch.roll(x, 15, dims=-2))  # not a rotation of the sphere
    torch.testing.assert_close(out_turned, out, atol=1e-6, rtol=0)
    assert (shifted_rows - out).abs().max() > 1e-4  # (3e-8 against 5e-4 when written)
