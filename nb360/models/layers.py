"""Building blocks written once for 1D and 2D inputs.

Every helper takes ``dim`` (1: ``(B, C, L)``, 2: ``(B, C, H, W)``) and returns the matching torch module,
so an architecture is written once and serves both kinds of task (the WRN baselines here, the DARTS
operations later). Kernel sizes, strides and paddings are ints, applied along every spatial axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Lookup tables (constants, not state): the torch class of each operation per spatial dimensionality.
_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d}
_BATCH_NORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_MAX_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d}
_AVG_POOL: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d}
_ADAPTIVE_AVG_POOL: dict[int, type[nn.Module]] = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}
_ZERO_PAD: dict[int, type[nn.Module]] = {1: nn.ZeroPad1d, 2: nn.ZeroPad2d}

CONV_TYPES: tuple[type[nn.Module], ...] = tuple(_CONV.values())
BATCH_NORM_TYPES: tuple[type[nn.Module], ...] = tuple(_BATCH_NORM.values())


def check_dim(dim: int) -> int:
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 or 2, got {dim!r}")
    return dim


def same_padding(
    kernel_size: int, dilation: int = 1, *, stride: int = 1, length: int | None = None
) -> tuple[int, int]:
    """(left, right) zero padding of TensorFlow's "same": ceil(length / stride) outputs, an odd total with the
    extra element on the right, e.g. kernel 8 -> (3, 4). At stride 1 it keeps the length whatever it is; at a
    larger stride it depends on the input's ``length``."""
    field = dilation * (kernel_size - 1) + 1
    if stride == 1:
        total = field - 1
    elif length is None:
        raise ValueError(f"'same' padding at stride {stride} depends on the input length: give length")
    else:
        total = max(0, (-(-length // stride) - 1) * stride + field - length)
    return total // 2, total - total // 2


def reaching_taps(kernel_size: int, dilation: int, length: int) -> int:
    """Taps on each side of the centre of an odd kernel with centred padding (``dilation * (kernel_size -
    1) // 2``, any stride) that can reach an input of ``length``: tap ``j`` reads position ``o + j *
    dilation`` for outputs at ``o`` in ``[0, length)``, so one with ``|j| * dilation >= length`` reads only
    padding."""
    return min((kernel_size - 1) // 2, (length - 1) // dilation)


def crop_to_input(
    weight: torch.Tensor, dilation: Sequence[int], spatial: Sequence[int]
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The taps of an odd, centred-padded kernel ``(out, in, *k)`` that can reach an input of ``spatial``
    (:func:`reaching_taps` per axis), and the centred padding of that smaller kernel: the same convolution,
    without the products of padding zeros (a 9-tap kernel dilated by 15 on an 8-wide map is its centre
    tap)."""
    keep = [reaching_taps(k, d, n) for k, d, n in zip(weight.shape[2:], dilation, spatial, strict=True)]
    index = [slice(None), slice(None)]
    index += [
        slice((k - 1) // 2 - t, (k - 1) // 2 + t + 1) for k, t in zip(weight.shape[2:], keep, strict=True)
    ]
    padding = tuple(d * t for d, t in zip(dilation, keep, strict=True))
    return weight[tuple(index)], padding


class _ReachingConv:
    """A convolution with centred padding that applies only the taps that can reach its input
    (:func:`crop_to_input`): the same outputs and gradients as the full kernel (its other taps get zero
    gradients either way), at a fraction of the cost where large dilated kernels meet small maps (DASH's
    retrained networks)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    dilation: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, padding = crop_to_input(self.weight, self.dilation, x.shape[2:])
        op = F.conv1d if x.dim() == 3 else F.conv2d
        return op(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)


class ReachingConv1d(_ReachingConv, nn.Conv1d):
    pass


class ReachingConv2d(_ReachingConv, nn.Conv2d):
    pass


_REACHING_CONV: dict[int, type[nn.Module]] = {1: ReachingConv1d, 2: ReachingConv2d}


def conv(
    dim: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int | str | None = None,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
    reaching: bool = False,
) -> nn.Module:
    """A 1D or 2D convolution.

    ``padding``: an int; ``None`` (default) for the centred ``dilation * (kernel_size - 1) // 2`` used by
    odd kernels at any stride; or ``"same"`` for TensorFlow-style same padding at stride 1 (asymmetric for
    even kernels; then the module is a zero pad followed by an unpadded convolution, because torch's own
    ``padding="same"`` copies the input with a warning on every call). ``reaching``: an odd kernel with
    centred padding applies only the taps that can reach its input (:class:`ReachingConv2d`; the same
    numbers, cheaper for large dilated kernels on small maps).
    """
    cls = _CONV[check_dim(dim)]
    if padding == "same":
        if stride != 1:
            raise ValueError(f"'same' padding is defined here for stride 1 only, got stride {stride}")
        left, right = same_padding(kernel_size, dilation)
        if left != right:
            layer = cls(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups, bias=bias)
            return nn.Sequential(zero_pad(dim, left, right), layer)
        padding = left
    elif padding is None:
        padding = dilation * (kernel_size - 1) // 2
    elif isinstance(padding, str):
        raise ValueError(f"padding must be an int, None or 'same', got {padding!r}")
    if reaching and kernel_size % 2 and padding == dilation * (kernel_size - 1) // 2:
        cls = _REACHING_CONV[dim]
    return cls(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )


def zero_pad(dim: int, left: int, right: int) -> nn.Module:
    """Zero padding of ``left``/``right`` elements at the start/end of every spatial axis."""
    sides = (left, right) * check_dim(dim)
    return _ZERO_PAD[dim](sides)


def batch_norm(dim: int, num_features: int, *, affine: bool = True, momentum: float = 0.1) -> nn.Module:
    return _BATCH_NORM[check_dim(dim)](num_features, affine=affine, momentum=momentum)


def max_pool(dim: int, kernel_size: int, stride: int | None = None, padding: int = 0) -> nn.Module:
    return _MAX_POOL[check_dim(dim)](kernel_size, stride=stride, padding=padding)


def avg_pool(
    dim: int,
    kernel_size: int,
    stride: int | None = None,
    padding: int = 0,
    count_include_pad: bool = True,
) -> nn.Module:
    return _AVG_POOL[check_dim(dim)](
        kernel_size, stride=stride, padding=padding, count_include_pad=count_include_pad
    )


def adaptive_avg_pool(dim: int, output_size: int) -> nn.Module:
    return _ADAPTIVE_AVG_POOL[check_dim(dim)](output_size)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over all spatial axes: ``(B, C, *spatial)`` -> ``(B, C)``, for any input size."""
    return x.flatten(2).mean(dim=2)


def init_kaiming_fan_out(module: nn.Module) -> None:
    """The WRN initialisation: convolutions Kaiming-normal (fan_out, ReLU), batch norm weight 1 and bias 0,
    linear biases 0 (linear weights keep torch's default)."""
    for m in module.modules():
        if isinstance(m, CONV_TYPES):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, BATCH_NORM_TYPES) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
