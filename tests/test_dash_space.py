"""DASH's mixture operation (nb360.search.dash_space): the aggregated kernel is the weighted sum of the
dilated candidates, the FFT path is the direct convolution, and the architecture gradient is DASH's."""

import pytest
import torch
import torch.nn.functional as F

from nb360.models.layers import CONV_TYPES
from nb360.search.dash_space import MixedConv, aggregate_kernel, dilate, fft_conv, receptive_field

CONV = {1: F.conv1d, 2: F.conv2d}


def test_dilate_puts_zeros_between_the_taps():
    w = torch.arange(1.0, 4.0).reshape(1, 1, 3)
    assert dilate(w, 3, 1).flatten().tolist() == [1, 0, 0, 2, 0, 0, 3]
    w2 = torch.ones(1, 1, 3, 3)
    d2 = dilate(w2, 2, 2)
    assert d2.shape == (1, 1, 5, 5) and d2.sum() == 9 and d2[0, 0, 1].sum() == 0 and d2[0, 0, :, 3].sum() == 0
    assert receptive_field(9, 15) == 121 and receptive_field(19, 15) == 271


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_aggregated_kernel_is_the_weighted_sum_of_the_candidates_applied_separately(dim, stride):
    torch.manual_seed(0)
    op = MixedConv(dim, 3, 4, (3, 5), (1, 3), stride=stride).double()
    x = torch.randn(2, 3, *(17,) * dim, dtype=torch.float64)
    probs = torch.softmax(torch.randn(4, dtype=torch.float64), 0)
    separate = sum(
        p * CONV[dim](x, w, stride=stride, dilation=d, padding=d * (k - 1) // 2)
        for p, w, (k, d) in zip(probs, op.weights, op.candidates, strict=True)
    )
    assert op.size == 13  # kernel 5 at dilation 3
    mixed = CONV[dim](x, op.kernel(probs), stride=stride, padding=op.size // 2)
    torch.testing.assert_close(mixed, separate, rtol=1e-12, atol=1e-12)
    # the module's forward (evaluation: the softmax of its logits) is the same operation
    op.eval()
    with torch.no_grad():
        op.alpha.copy_(probs.log())
    torch.testing.assert_close(op(x), separate, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize(("stride", "groups"), [(1, 1), (2, 1), (1, 4), (2, 4)])
def test_fft_convolution_equals_direct_convolution(dim, stride, groups):
    torch.manual_seed(1)
    x = torch.randn(2, 4, *((23, 10) if dim == 2 else (31,)), dtype=torch.float64)
    w = torch.randn(8, 4 // groups, *(7,) * dim, dtype=torch.float64)
    direct = CONV[dim](x, w, stride=stride, padding=3, groups=groups)
    torch.testing.assert_close(fft_conv(x, w, 3, stride, groups), direct, rtol=1e-10, atol=1e-10)
    op = MixedConv(dim, 4, 8, (3,), (1, 3), stride=stride, groups=groups).double().eval()
    fast = MixedConv(dim, 4, 8, (3,), (1, 3), stride=stride, groups=groups, use_fft=True).double().eval()
    fast.load_state_dict(op.state_dict())
    torch.testing.assert_close(fast(x), op(x), rtol=1e-10, atol=1e-10)


def test_architecture_gradient_is_normalised_with_a_receptive_field_penalty():
    op = MixedConv(1, 2, 2, (3, 7), (1, 15), grad_scale=10.0)
    g = torch.tensor([3.0, 0.0, 0.0, 4.0])  # norm 5
    fields = torch.tensor([3.0, 31.0, 7.0, 91.0])  # (3, 1), (3, 15), (7, 1), (7, 15)
    torch.testing.assert_close(op.arch_gradient(g), g / 50 + 1e-5 * fields)
    x = torch.randn(2, 2, 40)
    op(x).square().sum().backward()
    assert op.alpha.grad is not None
    raw = op.alpha.grad - 1e-5 * fields
    torch.testing.assert_close(raw.norm(), torch.tensor(0.1), rtol=1e-4, atol=0)  # 1 / grad_scale


def test_chosen_candidate_follows_dashs_index_order():
    op = MixedConv(2, 1, 1, (3, 5, 7, 9), (1, 3, 7, 15))
    with torch.no_grad():
        op.alpha.zero_()
        op.alpha[9] = 1.0  # kernel index 9 // 4 = 2, dilation index 9 % 4 = 1
    assert op.chosen() == (7, 3)
    with pytest.raises(ValueError, match="odd"):
        MixedConv(1, 1, 1, (4,), (1,))


def test_training_samples_gumbel_weights_that_sum_to_one():
    torch.manual_seed(0)
    op = MixedConv(1, 1, 1, (3, 5), (1, 3))
    a, b = op.probs(), op.probs()
    assert not torch.equal(a, b)
    torch.testing.assert_close(a.sum(), torch.tensor(1.0))
    op.eval()
    assert torch.equal(op.probs(), op.probs())
    assert aggregate_kernel(list(op.weights), op.probs(), [1, 3, 1, 3], op.size, 1).shape == (1, 1, 13)


@pytest.mark.parametrize(("task", "n_convs"), [("cifar100", 13), ("darcy", 13), ("satellite", 9)])
def test_supernet_replaces_the_searched_convolutions_and_the_retrained_network_has_the_chosen_ones(
    task, n_convs
):
    from nb360.models import create_model
    from nb360.models.wrn import WideResNet
    from nb360.search.dash_space import SPACE_1D, SPACE_2D, to_supernet
    from nb360.tasks import get_task

    torch.manual_seed(0)
    spec = get_task(task)
    width = {"widen": 1} if spec.dim == 2 else {"width": 0.25}
    supernet = create_model("wrn", spec, **width)
    kernels, dilations = SPACE_2D if spec.dim == 2 else SPACE_1D
    mixed = to_supernet(supernet, kernels, dilations)
    assert len(mixed) == n_convs
    x = torch.randn(2, *spec.input_shape)
    out = supernet(x)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert all(m.alpha.grad is not None for m in mixed)
    if spec.dim == 2:
        assert sum(m.groups > 1 for m in mixed) == 10  # depthwise wherever channels stay (all but 3)
        assert not isinstance(supernet, WideResNet) or supernet.searched_convs()[0][1] == "stem"
    chosen = [(kernels[i % len(kernels)], dilations[(i * 3) % len(dilations)]) for i in range(n_convs)]
    retrained = create_model("wrn", spec, convs=chosen)
    layers = [
        next(m for m in getattr(p, n).modules() if isinstance(m, CONV_TYPES))
        for p, n in retrained.searched_convs()
    ]
    assert [(c.kernel_size[0], c.dilation[0]) for c in layers] == chosen
    assert retrained(x).shape == out.shape


@pytest.mark.parametrize("dim", [1, 2])
def test_the_layers_scatter_added_kernel_is_the_padded_sum(dim):
    torch.manual_seed(2)
    op = MixedConv(dim, 2, 3, (3, 5, 7), (1, 3, 7)).double()
    probs = torch.softmax(torch.randn(9, dtype=torch.float64), 0)
    expected = aggregate_kernel(list(op.weights), probs, [d for _, d in op.candidates], op.size, dim)
    torch.testing.assert_close(op.kernel(probs), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("use_fft", [False, True])
def test_a_kernel_wider_than_the_input_is_cropped_to_the_taps_that_reach_it(dim, stride, use_fft):
    """A mixture wider than its input (a 121-wide kernel on an 8 x 8 map) applies only the taps that can
    reach the input: outputs and every gradient equal the full kernel's direct convolution in float64, on
    a map narrower than the kernel along one axis and wider along the other."""
    from nb360.models.layers import crop_to_input

    cropped, padding = crop_to_input(torch.zeros(1, 1, 121, 121), (1, 1), (8, 32))
    assert cropped.shape[2:] == (15, 63) and padding == (7, 31)
    assert crop_to_input(torch.zeros(1, 1, 121), (1,), (80,))[0].shape[2:] == (121,)
    torch.manual_seed(2)
    op = MixedConv(dim, 3, 4, (3, 5), (1, 7), stride=stride, use_fft=use_fft).double()
    assert op.size == 29
    spatial = (6, 40) if dim == 2 else (9,)
    x = torch.randn(2, 3, *spatial, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(torch.randn(4, dtype=torch.float64), 0)
    op.eval()
    with torch.no_grad():
        op.alpha.copy_(probs.log())
    out = op(x)
    full = CONV[dim](x, op.kernel(), stride=stride, padding=op.size // 2)
    torch.testing.assert_close(out, full, rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad(y.square().sum(), [x, op.alpha, *op.weights]) for y in (out, full)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dim", [1, 2])
def test_the_reaching_kernel_is_built_from_the_reaching_taps_of_the_full_kernel(dim):
    """Built from the candidates' reaching taps alone, the kernel is the full aggregated kernel cropped to
    the input (the same numbers, the same padding), on maps narrower than some candidates, narrower than
    all of them but the centre tap, and wider than the kernel, per axis."""
    from nb360.models.layers import crop_to_input

    torch.manual_seed(3)
    op = MixedConv(dim, 2, 3, (3, 5, 7), (1, 3, 7)).double()
    assert op.size == 43
    probs = torch.softmax(torch.randn(9, dtype=torch.float64), 0)
    shapes = [(1,), (4,), (9,), (22,), (50,)] if dim == 1 else [(1, 50), (8, 8), (20, 3), (22, 22), (60, 10)]
    for spatial in shapes:
        weight, padding = op.reaching_kernel(spatial, probs)
        expected, expected_padding = crop_to_input(op.kernel(probs), (1,) * dim, spatial)
        assert padding == expected_padding
        assert weight.shape == expected.shape
        torch.testing.assert_close(weight, expected, rtol=1e-15, atol=0)
