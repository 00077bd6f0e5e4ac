"""PSICOV's expert: PDNet's ``deepcon_rdd_distances`` (Adhikari 2020): BN-ReLU and a 1x1 convolution to
``width`` channels, ``depth`` residual blocks [BN-ReLU-3x3 conv, dropout 0.3, ReLU, 3x3 conv with dilation
cycling 1, 2, 4], then BN-ReLU, a 3x3 convolution to one channel and a ReLU (distances are non-negative).
The expert script took depth and width as command-line arguments that were not recorded; the defaults here
are those of the PyTorch port the benchmark's Auto-DeepLab code and DASH use (8 blocks of 16 channels)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nb360.models.layers import batch_norm, conv
from nb360.models.registry import output_shape, register_model

if TYPE_CHECKING:
    from nb360.tasks.base import TaskSpec

DIM = 2
DILATIONS = (1, 2, 4)
DROPOUT = 0.3


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(
            batch_norm(DIM, channels),
            nn.ReLU(),
            conv(DIM, channels, channels, 3, bias=True),
            nn.Dropout(DROPOUT),
            nn.ReLU(),
            conv(DIM, channels, channels, 3, dilation=dilation, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PDNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, depth: int = 8, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            batch_norm(DIM, in_channels),
            nn.ReLU(),
            conv(DIM, in_channels, width, 1, bias=True),
            *[ResidualBlock(width, DILATIONS[i % len(DILATIONS)]) for i in range(depth)],
            batch_norm(DIM, width),
            nn.ReLU(),
            conv(DIM, width, out_channels, 3, bias=True),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("expert_pdnet")
def expert_pdnet(spec: TaskSpec, **kwargs: int) -> PDNet:
    return PDNet(spec.input_shape[0], output_shape(spec)[0], **kwargs)
