"""Building blocks written once for 1D and 2D inputs.

Every helper takes ``dim`` (1: ``(B, C, L)``, 2: ``(B, C, H, W)``) and returns the matching torch module,
so an architecture is written once and serves both kinds of task (the WRN baselines here, the DARTS
operations later). Kernel sizes, strides and paddings are ints, applied along every spatial axis.
"""

from __future__ import annotations

import torch
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
) -> nn.Module:
    """A 1D or 2D convolution.

    ``padding``: an int; ``None`` (default) for the centred ``dilation * (kernel_size - 1) // 2`` used by
    odd kernels at any stride; or ``"same"`` for TensorFlow-style same padding at stride 1 (asymmetric for
    even kernels; then the module is a zero pad followed by an unpadded convolution, because torch's own
    ``padding="same"`` copies the input with a warning on every call).
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
