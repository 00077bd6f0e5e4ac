"""The 1D baseline: the ResNet time-series classifier the benchmark runs under the "WRN" label for ECG,
Satellite and DeepSEA (nb360.md 3.1; the original's ``backbone_1d.py``, after Wang et al.'s ResNet
baseline).

Three residual blocks with 64, 128 and 128 channels (times ``width``). A block is three
conv-BN-ReLU layers with kernel sizes 8, 5 and 3, TensorFlow-style "same" padding (kernel 8 pads 3 on the
left and 4 on the right) and biased convolutions; when the channel count changes, a 1x1 conv + BN shortcut
is added to the block's output. Then global average pool over time and a linear head. Parameters keep
torch's default initialisation, as in the original (which did not re-initialise).

As in the original code (and unlike Wang et al.'s Keras reference), the third block, whose channel count does
not change, has no shortcut at all, and no ReLU follows the addition; kept so that the baseline is the network
that produced the paper's numbers (parameter counts: ECG 504,260, Satellite 506,840, DeepSEA 510,116).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.layers import batch_norm, conv, global_avg_pool
from nb360.models.registry import register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

KERNEL_SIZES = (8, 5, 3)
BASE_CHANNELS = 64
DIM = 1


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    # a chosen (DASH) kernel applies only its taps that can reach the input; the benchmark's are as before
    searched = (kernel_size, dilation) not in {(k, 1) for k in KERNEL_SIZES}
    return nn.Sequential(
        conv(
            DIM,
            in_channels,
            out_channels,
            kernel_size,
            padding="same",
            dilation=dilation,
            bias=True,
            reaching=searched,
        ),
        batch_norm(DIM, out_channels),
        nn.ReLU(),
    )


class ResidualBlock1D(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, convs: Sequence[tuple[int, int]] | None = None
    ) -> None:
        super().__init__()
        convs = [(k, 1) for k in KERNEL_SIZES] if convs is None else convs
        widths = (in_channels, *(out_channels,) * len(convs))
        self.layers = nn.Sequential(
            *(_conv_bn_relu(widths[i], widths[i + 1], k, d) for i, (k, d) in enumerate(convs))
        )
        self.shortcut = (
            nn.Sequential(conv(DIM, in_channels, out_channels, 1, bias=True), batch_norm(DIM, out_channels))
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class ResNet1D(nn.Module):
    """``(B, in_channels, L)`` -> ``(B, num_outputs)`` for any length ``L``.

    ``width`` multiplies the channel counts 64/128/128 (rounded, at least 1); 1.0 is the benchmark's model.
    ``convs``: the (kernel size, dilation) of the nine convolutions, in :meth:`searched_convs` order (DASH's
    searched networks; default kernels 8, 5, 3 in every block, dilation 1).
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        *,
        width: float = 1.0,
        convs: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        n = 3 * len(KERNEL_SIZES)
        convs = [(k, 1) for k in KERNEL_SIZES] * 3 if convs is None else [(int(k), int(d)) for k, d in convs]
        if len(convs) != n or any(k < 1 or d < 1 for k, d in convs):
            raise ValueError(f"the 1D ResNet takes {n} (kernel, dilation) pairs, positive, got {convs}")
        mid = max(1, round(BASE_CHANNELS * width))
        per = len(KERNEL_SIZES)
        self.blocks = nn.Sequential(
            ResidualBlock1D(in_channels, mid, convs[:per]),
            ResidualBlock1D(mid, 2 * mid, convs[per : 2 * per]),
            ResidualBlock1D(2 * mid, 2 * mid, convs[2 * per :]),
        )
        self.head = nn.Linear(2 * mid, num_outputs)

    def searched_convs(self) -> list[tuple[nn.Module, str]]:
        """(parent module, attribute) of the nine convolutions, block by block: the ones DASH searches (a
        convolution with an even kernel is a padding and a convolution; the slot holds both)."""
        return [(layer, "0") for block in self.blocks for layer in block.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(global_avg_pool(self.blocks(x)))


@register_model("resnet1d")
def resnet1d(
    spec: TaskSpec, *, width: float = 1.0, convs: Sequence[tuple[int, int]] | None = None
) -> ResNet1D:
    """The 1D ResNet baseline for a 1D point task."""
    if spec.dim != 1:
        raise ValueError(f"resnet1d is a 1D network; task {spec.name!r} is {spec.dim}D")
    if spec.output_kind == "dense":
        raise ValueError(f"resnet1d predicts one vector per sample; task {spec.name!r} is dense")
    return ResNet1D(spec.input_shape[0], spec.num_outputs, width=width, convs=convs)
